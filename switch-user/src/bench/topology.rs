//! The contenders: the same two-namespace topology (client and server) built once per way of
//! connecting them.
use std::{
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use super::ovs;
use crate::{
    controller::{link, ns, switch},
    datapath::settings::Setting,
    error::{Context as _, Error, Result},
    kind::DatapathKind,
    state::{Redirect, Store},
    sys::blocking,
};

/// How a contender connects its client and server namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A bare veth pair: the physical limit on this host.
    Veth,
    /// A switch of this project (or the Linux bridge, datapath `bridge`), with port security
    /// on its ports or not.
    Switch(DatapathKind, Redirect, bool),
    /// Open vSwitch's userspace datapath (`datapath_type=netdev`, AF_PACKET ports), with
    /// private daemons of its own (see `ovs`); not measured where it is not installed.
    Ovs,
}

/// One contender.
#[derive(Clone, Copy, Debug)]
pub struct Contender {
    /// Name in reports.
    pub name: &'static str,
    /// Topology.
    pub kind: Kind,
    /// A `switch` command reading the switch's datapath while it is measured (`--switch NAME`
    /// is added): what watching the switch costs, side by side with the same switch unwatched.
    pub reader: Option<&'static [&'static str]>,
    /// `up --busy-poll` of a userspace switch (0: none).
    pub busy_poll_us: u32,
}

impl Contender {
    const fn new(name: &'static str, kind: Kind) -> Self {
        Self { name, kind, reader: None, busy_poll_us: 0 }
    }
}

/// Every contender, in the order they are measured in each round.
pub const ALL: [Contender; 11] = [
    Contender::new("veth", Kind::Veth),
    Contender::new("bridge", Kind::Switch(DatapathKind::Bridge, Redirect::Peer, true)),
    Contender::new("tc", Kind::Switch(DatapathKind::Tc, Redirect::Peer, true)),
    // tc with port security off: what the checks cost, side by side with `tc`.
    Contender::new("tc-open", Kind::Switch(DatapathKind::Tc, Redirect::Peer, false)),
    Contender::new("tc-egress", Kind::Switch(DatapathKind::Tc, Redirect::Egress, true)),
    // tc watched: a monitor of drops (nothing to show: every frame is forwarded), and a full
    // capture of every frame into a pcapng stream that goes nowhere (stdout is /dev/null).
    Contender {
        reader: Some(&["monitor", "--type", "drop"]),
        ..Contender::new("tc-monitor", Kind::Switch(DatapathKind::Tc, Redirect::Peer, true))
    },
    Contender {
        reader: Some(&["capture", "-w", "-"]),
        ..Contender::new("tc-capture", Kind::Switch(DatapathKind::Tc, Redirect::Peer, true))
    },
    Contender::new("xdp", Kind::Switch(DatapathKind::Xdp, Redirect::Peer, true)),
    Contender::new("userspace", Kind::Switch(DatapathKind::Userspace, Redirect::Peer, true)),
    // The userspace switch whose lanes poll for 100 us after a frame: a request's reply comes
    // back within that, so a request-response exchange needs no thread wake-up in the switch.
    Contender {
        busy_poll_us: 100,
        ..Contender::new("userspace-poll", Kind::Switch(DatapathKind::Userspace, Redirect::Peer, true))
    },
    // The peer of the userspace engine.
    Contender::new(OVS, Kind::Ovs),
];

/// The Open vSwitch contender's name.
pub const OVS: &str = "ovs";

/// The baselines, every ratio is against them: the Linux bridge (what this project replaces)
/// and the bare veth pair (the limit on this host). Always measured.
pub const BASELINES: [&str; 2] = ["bridge", "veth"];

/// Peers every ratio is also against when they are measured in the run (a ratio column each):
/// Open vSwitch, the userspace engine's.
pub const PEERS: [&str; 1] = [OVS];

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
    /// The running reader (`Contender::reader`).
    reader: Arc<Mutex<Option<Child>>>,
    /// The running Open vSwitch daemons (`Kind::Ovs`).
    daemons: Arc<Mutex<Vec<Child>>>,
}

impl Topology {
    /// The topology of contender number `index`.
    pub fn new(index: usize, contender: Contender) -> Self {
        // Open vSwitch's names carry its prefix whatever the index, so that a later run finds
        // what a killed one left.
        let base = if contender.kind == Kind::Ovs { ovs::PREFIX.to_owned() } else { format!("bench{index}") };
        Self {
            contender,
            switch: base.clone(),
            client: format!("{base}c"),
            server: format!("{base}s"),
            server_ip: format!("10.200.{index}.2"),
            client_cidr: format!("10.200.{index}.1/24"),
            server_cidr: format!("10.200.{index}.2/24"),
            reader: Arc::default(),
            daemons: Arc::default(),
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
                    redirect: datapath.open(&self.switch).takes(Setting::Redirect).then_some(redirect),
                    datapath: Some(datapath),
                    gateway: None,
                    uplinks: vec![],
                    busy_poll_us: (self.contender.busy_poll_us > 0).then_some(self.contender.busy_poll_us),
                    ..Default::default()
                })
                .await?;
                for (ns, cidr) in [(&self.client, &self.client_cidr), (&self.server, &self.server_cidr)] {
                    ns::add(ns::AddOptions {
                        ns: ns.clone(),
                        ip: cidr.parse()?,
                        ip6: None,
                        switch: self.switch.clone(),
                        mac: None,
                        port_security,
                    })
                    .await?;
                }
                self.start_reader().await
            }
            Kind::Ovs => {
                let daemons = ovs::build(&self.client, &self.server, &self.client_cidr, &self.server_cidr).await?;
                *self.daemons.lock().expect("not poisoned") = daemons;
                Ok(())
            }
        }
    }

    /// Starts the contender's reader, if it has one, and waits until it is recorded (its
    /// stream is on from then on).
    async fn start_reader(&self) -> Result<()> {
        let Some(args) = self.contender.reader else { return Ok(()) };
        let exe = std::env::current_exe().context("finding the switch binary")?;
        let child = Command::new(exe)
            .args(args)
            .args(["--switch", &self.switch])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(format!("starting 'switch {}'", args.join(" ")))?;
        *self.reader.lock().expect("not poisoned") = Some(child);
        let name = self.switch.clone();
        for _ in 0..250 {
            let state = blocking(|| Store::peek(crate::sys::host::state_dir())).await;
            let sw = state.ok().and_then(|s| s.switches.get(&name).cloned());
            if sw.is_some_and(|s| !s.monitors.is_empty() || !s.captures.is_empty()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(Error::Command(format!("'switch {}' did not start on {name} within 5 s", args.join(" "))))
    }

    /// Stops the reader (Ctrl-C, as a user would) and waits for it.
    async fn stop_reader(&self) {
        let Some(mut child) = self.reader.lock().expect("not poisoned").take() else { return };
        // SAFETY: signalling a child process of ours that has not been waited for yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let _ = blocking(move || {
            child.wait().context("waiting for the reader")?;
            Ok(())
        })
        .await;
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
                self.stop_reader().await;
                let _ = switch::down(&self.switch).await;
            }
            Kind::Ovs => {
                let daemons = std::mem::take(&mut *self.daemons.lock().expect("not poisoned"));
                ovs::remove(daemons, &self.client, &self.server).await;
            }
        }
    }
}
