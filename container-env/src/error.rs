//! The library's errors: what failed, in words a user of `switch bench` or a test reads.
use std::path::PathBuf;

/// Why an environment could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A program could not be started.
    #[error("running {program}{hint}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Where to get it, if it is a package the set-up installs (` (install ...)`).
        hint: &'static str,
        /// Why it did not start.
        #[source]
        source: std::io::Error,
    },
    /// A program exited with an error.
    #[error("{command} failed: {stderr}")]
    Failed {
        /// The program and the arguments that say what it did.
        command: String,
        /// What it printed on stderr, trimmed.
        stderr: String,
    },
    /// A path that cannot be written into a TOML configuration.
    #[error("{0}: not writable into a TOML file")]
    NotToml(String),
    /// A change to the host's tables could not be made, and why.
    #[error("{0}")]
    Host(String),
    /// A CRI call failed (or the CRI API could not be reached).
    #[error("CRI {call}: {status}")]
    Cri {
        /// The call (`RunPodSandbox`, ...).
        call: &'static str,
        /// The gRPC status: code and message.
        status: String,
    },
    /// A daemon did not come up.
    #[error("{daemon} {how} within {secs} s; its log ({log}) ends:\n{tail}")]
    DaemonDown {
        /// Which daemon.
        daemon: &'static str,
        /// "exited (...)" or "did not answer".
        how: String,
        /// How long it was given.
        secs: u64,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },
}

/// The library's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error while doing `what`.
    pub fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io { what: what.to_string(), source }
    }
}
