//! `switch-cni`: the CNI plugin (see `switch::cni`). The runtime passes the command in the
//! environment and the network configuration on stdin; the result, or the spec's error JSON,
//! goes to stdout, with exit status 1 on error.
use std::io::{Read as _, Write as _};

use switch::cni::{self, CniError, Env};

fn main() -> std::process::ExitCode {
    let env = Env::from_process();
    let mut stdin = vec![];
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Err(e) => Err(CniError::new(cni::spec::Code::Decode, format!("reading stdin: {e}"))),
        Ok(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CniError::new(cni::spec::Code::TryAgain, format!("starting a runtime: {e}")))
            .and_then(|rt| rt.block_on(cni::run(&env, &stdin))),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(result)) => {
            let _ = writeln!(out, "{result}");
            std::process::ExitCode::SUCCESS
        }
        Ok(None) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json());
            std::process::ExitCode::FAILURE
        }
    }
}
