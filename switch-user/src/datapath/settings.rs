//! Settings of `switch up` that only some datapaths take: `--redirect` (how the tc program
//! redirects known unicast) and `--busy-poll` (how long a userspace process's lanes poll).
//! Each datapath declares the ones it takes ([`super::Datapath::takes`]); the checks here
//! refuse the others with one wording, so no command has to know which datapath takes what.
use std::fmt::Display;

use super::Datapath;
use crate::{
    error::{Error, Result},
    state::Redirect,
};

/// A setting only some datapaths take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// `--redirect`: `bpf_redirect_peer` or the egress of the target's host end.
    Redirect,
    /// `--busy-poll`: microseconds the lanes poll for frames before they sleep.
    BusyPoll,
}

impl Setting {
    /// The option that asks for it.
    fn option(self) -> &'static str {
        match self {
            Self::Redirect => "--redirect",
            Self::BusyPoll => "--busy-poll",
        }
    }
}

/// Most microseconds of `--busy-poll`: a second of spinning after the last frame is already
/// a CPU kept busy for nothing.
pub const MAX_BUSY_POLL_US: u32 = 1_000_000;

/// The settings `switch up` was asked for (`None`: not given).
#[derive(Clone, Copy, Debug, Default)]
pub struct Settings {
    /// `--redirect`.
    pub redirect: Option<Redirect>,
    /// `--busy-poll`; 0 asks for nothing (no polling), which every datapath takes.
    pub busy_poll_us: Option<u32>,
}

impl Settings {
    /// Checks each value, and each against `datapath` when it is known. `chosen` says whether
    /// the user named the datapath; when the default was taken, the error says how to name
    /// one that has the setting.
    pub fn check(&self, datapath: Option<&(dyn Datapath + 'static)>, chosen: bool) -> Result<()> {
        if let (Some(r), Some(dp)) = (self.redirect, datapath) {
            dp.check_setting(Setting::Redirect, r, chosen)?;
        }
        if let Some(us) = self.busy_poll_us {
            if us > MAX_BUSY_POLL_US {
                return Err(Error::invalid(
                    "busy poll",
                    us.to_string(),
                    format!("must be at most {MAX_BUSY_POLL_US} us"),
                ));
            }
            if let Some(dp) = datapath.filter(|_| us > 0) {
                dp.check_setting(Setting::BusyPoll, us, chosen)?;
            }
        }
        Ok(())
    }
}

impl dyn Datapath {
    /// Refuses `setting`, asked for as `value`, if this datapath does not take it: "option
    /// '--redirect egress': only the tc datapath has it, not xdp".
    fn check_setting(&self, setting: Setting, value: impl Display, chosen: bool) -> Result<()> {
        if self.takes(setting) {
            return Ok(());
        }
        let with = self.kinds_that(|dp| dp.takes(setting));
        let hint = if chosen { String::new() } else { format!(" (add --datapath {with})") };
        Err(Error::invalid(
            "option",
            format!("{} {value}", setting.option()),
            format!("only the {with} datapath has it, not {}{hint}", self.kind()),
        ))
    }
}
