//! `switch peer add|del|list`.
use anyhow::Result;
use switch::controller::peer;

use crate::cli::{
    args::PeerCommand,
    output::{self, Reply},
};

/// Adds, removes or lists the peers of a switch's tunnel.
pub async fn do_peer(c: PeerCommand) -> Result<Reply> {
    match c {
        PeerCommand::Add { addr, switch } => {
            let r = peer::add(&switch, addr).await?;
            let text = if r.changed {
                format!("peer {addr} added to switch '{switch}'")
            } else {
                format!("{addr} is a peer of switch '{switch}' already")
            };
            Ok(Reply::new(&r, text))
        }
        PeerCommand::Del { addr, switch } => {
            let r = peer::del(&switch, addr).await?;
            let text = if r.changed {
                format!("peer {addr} removed from switch '{switch}' ({} stations forgotten)", r.flushed)
            } else {
                format!("{addr} is not a peer of switch '{switch}'; nothing to do")
            };
            Ok(Reply::new(&r, text))
        }
        PeerCommand::List { switch } => {
            let rows = peer::list(switch.as_deref()).await?;
            Ok(Reply::new(&rows, output::peers(&rows)))
        }
    }
}
