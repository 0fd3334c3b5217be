//! `switch up`, `switch down`, `switch list`.
use anyhow::Result;
use switch::controller::switch as sw;

use crate::cli::{
    args::{DownArgs, UpArgs},
    output::{self, Reply},
};

/// Creates a switch, or says it is already up as asked.
pub async fn do_up(a: UpArgs) -> Result<Reply> {
    let (gateway, gateway6) = switch::names::by_family("--gateway", &a.gateways)?;
    let r = sw::up(sw::UpOptions {
        name: a.switch,
        ageing_secs: a.ageing,
        redirect: a.redirect,
        datapath: a.datapath,
        gateway,
        gateway6,
        uplinks: a.uplinks,
        no_masquerade: a.no_masquerade,
        routable: a.routable,
        max_learned: a.max_learned,
        busy_poll_us: a.busy_poll,
        vxlan: a.vxlan.map(|vni| sw::VxlanOptions {
            vni,
            underlay: a.underlay.unwrap_or_default(),
            port: a.vxlan_port.unwrap_or(sw::VXLAN_PORT),
        }),
    })
    .await?;
    let text = if r.created {
        let detail = match &r.pins {
            Some(p) => format!(", redirect {}, pinned at {p}", r.redirect),
            None => String::new(),
        };
        let gw = r.gateway.map(|g| format!(", gateway {g}")).unwrap_or_default();
        let gw6 = r.gateway6.map(|g| format!(" and {g}")).unwrap_or_default();
        let vx = r
            .vxlan
            .as_ref()
            .map(|t| {
                format!(", vxlan {} over {} from {} port {} mtu {}", t.vni, t.underlay, t.local, t.udp_port, t.mtu)
            })
            .unwrap_or_default();
        format!("switch '{}' is up ({} datapath, ageing {}s{gw}{gw6}{vx}{detail})", r.name, r.datapath, r.ageing_secs)
    } else {
        format!("switch '{}' is already up", r.name)
    };
    Ok(Reply::new(&r, text))
}

/// Removes a switch with its ports and their namespaces.
pub async fn do_down(a: DownArgs) -> Result<Reply> {
    let r = sw::down(&a.switch).await?;
    let text = if r.existed {
        let mut t = format!("switch '{}' removed", r.name);
        if !r.removed_namespaces.is_empty() {
            t.push_str(&format!("\nremoved namespaces: {}", r.removed_namespaces.join(", ")));
        }
        t
    } else {
        format!("switch '{}' is not up; nothing to do", r.name)
    };
    Ok(Reply::new(&r, text))
}

/// Lists the switches.
pub async fn do_list() -> Result<Reply> {
    let rows = sw::list().await?;
    Ok(Reply::new(&rows, output::switches(&rows)))
}
