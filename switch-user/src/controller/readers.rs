//! Readers of a datapath stream: `switch logs` (the log), `switch monitor` (events) and
//! `switch capture` (captured frames).
//!
//! Each stream costs the datapath on every frame, so it is on only while someone reads it.
//! A reader records itself (pid and start time) in the switch record under the state lock
//! and turns its stream on (`Reader::join`); on the way out it takes itself off (`leave`) and turns the stream
//! off if it was the last. A reader killed on the way is noticed by the next mutating command
//! of the switch (`intent::converge` calls `forget_killed`), which turns the stream off once no
//! recorded reader of it lives.
use std::{future::Future, time::Duration};

use super::{datapath_of, intent, lock};
use crate::{
    datapath::Datapath,
    error::{Error, Result},
    state::{State, Store, SwitchState},
    sys::{blocking, process::ProcessId},
};

/// How often a reader looks whether its switch still exists.
const REMOVED_POLL: Duration = Duration::from_millis(500);

/// A stream of the datapath that readers turn on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    /// The datapath log (`switch logs`).
    Log,
    /// The datapath's events (`switch monitor`).
    Events,
    /// Captured frames (`switch capture`).
    Capture,
}

impl Stream {
    const ALL: [Self; 3] = [Self::Log, Self::Events, Self::Capture];

    /// The recorded readers of this stream.
    pub(crate) fn readers(self, sw: &mut SwitchState) -> &mut Vec<ProcessId> {
        match self {
            Self::Log => &mut sw.log_followers,
            Self::Events => &mut sw.monitors,
            Self::Capture => &mut sw.captures,
        }
    }

    /// The command that reads it.
    fn command(self) -> &'static str {
        match self {
            Self::Log => "switch logs",
            Self::Events => "switch monitor",
            Self::Capture => "switch capture",
        }
    }

    /// The datapath has the stream, or the error every command gives for one without it.
    fn require(self, dp: &(dyn Datapath + 'static)) -> Result<()> {
        match self {
            Self::Log => dp.require_log().map(drop),
            Self::Events => dp.require_events().map(drop),
            Self::Capture => dp.require_capture().map(drop),
        }
    }

    /// Turns the stream off in `dp` (nothing to do for a datapath without it).
    async fn turn_off(self, dp: &dyn Datapath) -> Result<()> {
        match self {
            Self::Log => match dp.log() {
                Some(log) => log.set_logging(false).await,
                None => Ok(()),
            },
            Self::Events => match dp.events() {
                Some(events) => events.set_events(false).await,
                None => Ok(()),
            },
            Self::Capture => match dp.capture() {
                Some(capture) => capture.set_capture(None).await,
                None => Ok(()),
            },
        }
    }
}

/// This process as a reader of a stream of a switch: recorded in the switch's record, the
/// stream on.
pub(crate) struct Reader {
    switch: String,
    stream: Stream,
    me: ProcessId,
    /// The switch's datapath.
    pub dp: Box<dyn Datapath>,
}

impl Reader {
    /// Records this process as a reader of `stream` of switch `switch`, then turns the stream
    /// on with `turn_on`, given what `check` found in the state (which it may refuse: what
    /// the reader asks for is not there). Returns the reader and the state as it saved it.
    /// The lock is held only meanwhile: reading must not hold back other commands.
    pub(crate) async fn join<T>(
        switch: &str,
        stream: Stream,
        check: impl FnOnce(&State) -> Result<T>,
        turn_on: impl AsyncFnOnce(&(dyn Datapath + 'static), T) -> Result<()>,
    ) -> Result<(Self, State)> {
        let me = ProcessId::current();
        let store = lock().await?;
        let mut state = store.load()?;
        let dp = datapath_of(&state, switch)?;
        stream.require(dp.as_ref())?;
        let asked = check(&state)?;
        intent::converge(&store, &mut state, switch).await?;
        let readers = stream.readers(state.switches.get_mut(switch).expect("looked up above"));
        if let (Stream::Capture, Some(other)) = (stream, readers.first()) {
            return Err(Error::Command(format!(
                "switch '{switch}' already has a capture running (pid {}); the datapath has one capture filter, \
                 so one capture at a time",
                other.pid
            )));
        }
        readers.push(me);
        store.save(&state)?;
        let reader = Self { switch: switch.to_owned(), stream, me, dp };
        if let Err(e) = turn_on(reader.dp.as_ref(), asked).await {
            drop(store);
            reader.leave().await?;
            return Err(e);
        }
        Ok((reader, state))
    }

    /// Takes the reader off its switch's record (see `leave`).
    pub(crate) async fn leave(&self) -> Result<()> {
        leave(&self.switch, self.stream, self.dp.as_ref(), self.me).await
    }
}

/// Takes reader `me` of `stream` off switch `switch`'s record and turns the stream off if no
/// live reader is left.
async fn leave(switch: &str, stream: Stream, dp: &dyn Datapath, me: ProcessId) -> Result<()> {
    let store = lock().await?;
    let mut state = store.load()?;
    if let Some(sw) = state.switches.get_mut(switch) {
        let readers = stream.readers(sw);
        readers.retain(|p| *p != me);
        if !readers.iter().any(|p| p.is_alive()) {
            stream.turn_off(dp).await?;
        }
        store.save(&state)?;
    }
    Ok(())
}

/// Forgets the killed readers of every stream of `sw` and turns off each stream that has
/// none left alive. True if the record changed.
pub(crate) async fn forget_killed(sw: &mut SwitchState, dp: &dyn Datapath, switch: &str) -> Result<bool> {
    let mut changed = false;
    for stream in Stream::ALL {
        let readers = stream.readers(sw);
        if readers.is_empty() {
            continue;
        }
        changed = true;
        readers.retain(|p| p.is_alive());
        if readers.is_empty() {
            tracing::info!(switch, "turning off what a killed '{}' left on", stream.command());
            stream.turn_off(dp).await?;
        }
    }
    Ok(changed)
}

/// `stop`, or the removal of switch `switch` (`switch down`), whichever comes first: the
/// reader of a removed switch would otherwise wait forever on a ring buffer nothing writes.
pub(crate) fn or_removed(
    switch: &str,
    stop: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let name = switch.to_owned();
    let removed = async move {
        let mut tick = tokio::time::interval(REMOVED_POLL);
        loop {
            tick.tick().await;
            // A state being rewritten is read again at the next tick.
            if let Ok(state) = blocking(|| Store::peek(crate::sys::host::state_dir())).await
                && !state.switches.contains_key(&name)
            {
                tracing::info!(switch = name, "the switch was removed: stopping");
                return;
            }
        }
    };
    async move {
        tokio::select! {
            () = stop => {}
            () = removed => {}
        }
    }
}
