//! `switch ports`: every port of every kind.
use anyhow::Result;
use switch::controller::port;

use crate::cli::{
    args::PortsArgs,
    output::{self, Reply},
};

/// Lists ports: namespaces (made or adopted), the gateway, uplinks.
pub async fn do_ports(a: PortsArgs) -> Result<Reply> {
    let rows = port::list(a.switch.as_deref()).await?;
    Ok(Reply::new(&rows, output::ports(&rows)))
}
