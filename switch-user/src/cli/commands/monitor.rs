//! `switch monitor`.
use std::io::Write as _;

use anyhow::Result;
use switch::controller::monitor::{self, Filter, MonitorEvent};

use crate::cli::{args::MonitorArgs, output, output::Reply, signal};

/// Prints the switch's events, one line each, until Ctrl-C or SIGTERM.
pub async fn do_monitor(a: MonitorArgs, json: bool) -> Result<Reply> {
    let name = a.switch.clone();
    let started = move || eprintln!("monitoring switch '{name}'; Ctrl-C to stop");
    let show = move |e: &MonitorEvent| {
        let line = if json { serde_json::to_string(e).expect("events serialise") } else { output::monitor_line(e) };
        // A reader that went away (a closed pipe) ends nothing here: Ctrl-C does.
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    };
    let filter = Filter { kinds: a.kinds, namespace: a.namespace };
    monitor::follow(&a.switch, filter, show, started, signal::shutdown()).await?;
    Ok(Reply::done())
}
