//! The contenders: the same two-namespace topology (client and server) built once per way of
//! connecting them.
use crate::{
    controller::{link, ns, switch},
    error::Result,
    state::{DatapathKind, Redirect},
};

/// How a contender connects its client and server namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A bare veth pair: the physical limit on this host.
    Veth,
    /// A switch of this project (or the Linux bridge, datapath `bridge`), with port security
    /// on its ports or not.
    Switch(DatapathKind, Redirect, bool),
}

/// One contender.
#[derive(Clone, Copy, Debug)]
pub struct Contender {
    /// Name in reports.
    pub name: &'static str,
    /// Topology.
    pub kind: Kind,
}

/// Every contender, in the order they are measured in each round.
pub const ALL: [Contender; 7] = [
    Contender { name: "veth", kind: Kind::Veth },
    Contender { name: "bridge", kind: Kind::Switch(DatapathKind::Bridge, Redirect::Peer, true) },
    Contender { name: "tc", kind: Kind::Switch(DatapathKind::Tc, Redirect::Peer, true) },
    // tc with port security off: what the checks cost, side by side with `tc`.
    Contender { name: "tc-open", kind: Kind::Switch(DatapathKind::Tc, Redirect::Peer, false) },
    Contender { name: "tc-egress", kind: Kind::Switch(DatapathKind::Tc, Redirect::Egress, true) },
    Contender { name: "xdp", kind: Kind::Switch(DatapathKind::Xdp, Redirect::Peer, true) },
    Contender { name: "userspace", kind: Kind::Switch(DatapathKind::Userspace, Redirect::Peer, true) },
];

/// The baselines, every ratio is against them: the Linux bridge (what this project replaces)
/// and the bare veth pair (the limit on this host). Always measured.
pub const BASELINES: [&str; 2] = ["bridge", "veth"];

/// Names and addresses of a contender's topology.
#[derive(Clone, Debug)]
pub struct Topology {
    /// The contender.
    pub contender: Contender,
    /// Switch name (unused for veth).
    pub switch: String,
    /// Client namespace.
    pub client: String,
    /// Server namespace.
    pub server: String,
    /// Server address.
    pub server_ip: String,
    client_cidr: String,
    server_cidr: String,
}

impl Topology {
    /// The topology of contender number `index`.
    pub fn new(index: usize, contender: Contender) -> Self {
        let base = format!("bench{index}");
        Self {
            contender,
            switch: base.clone(),
            client: format!("{base}c"),
            server: format!("{base}s"),
            server_ip: format!("10.200.{index}.2"),
            client_cidr: format!("10.200.{index}.1/24"),
            server_cidr: format!("10.200.{index}.2/24"),
        }
    }

    /// Builds it (after removing leftovers of an interrupted run).
    pub async fn build(&self) -> Result<()> {
        self.remove().await;
        match self.contender.kind {
            Kind::Veth => {
                link::link(&self.client, &self.server, self.client_cidr.parse()?, self.server_cidr.parse()?).await
            }
            Kind::Switch(datapath, redirect, port_security) => {
                switch::up(switch::UpOptions {
                    name: self.switch.clone(),
                    ageing_secs: None,
                    redirect: (datapath == DatapathKind::Tc).then_some(redirect),
                    datapath: Some(datapath),
                    gateway: None,
                    uplinks: vec![],
                    ..Default::default()
                })
                .await?;
                for (ns, cidr) in [(&self.client, &self.client_cidr), (&self.server, &self.server_cidr)] {
                    ns::add(ns::AddOptions {
                        ns: ns.clone(),
                        ip: cidr.parse()?,
                        switch: self.switch.clone(),
                        mac: None,
                        port_security,
                    })
                    .await?;
                }
                Ok(())
            }
        }
    }

    /// Removes it; nothing there is fine.
    pub async fn remove(&self) {
        match self.contender.kind {
            Kind::Veth => {
                for ns in [&self.client, &self.server] {
                    let _ = ns::del(ns).await;
                }
            }
            Kind::Switch(..) => {
                let _ = switch::down(&self.switch).await;
            }
        }
    }
}
