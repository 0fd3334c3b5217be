//! `switch link NS1 NS2`: a plain veth pair, no switch.
use anyhow::Result;
use serde_json::json;
use switch::controller::link;

use crate::cli::{args::LinkArgs, output::Reply};

/// Links two namespaces.
pub async fn do_link(a: LinkArgs) -> Result<Reply> {
    link::link(&a.ns1, &a.ns2, a.ip1, a.ip2).await?;
    let value = json!({ "ns1": a.ns1, "ip1": a.ip1.to_string(), "ns2": a.ns2, "ip2": a.ip2.to_string() });
    Ok(Reply::new(&value, format!("linked '{}' ({}) <-> '{}' ({})", a.ns1, a.ip1, a.ns2, a.ip2)))
}
