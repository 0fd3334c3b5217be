//! Loading, pinning and attaching the datapath.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    programs::{
        CgroupAttachMode, CgroupSockAddr, SchedClassifier, TcAttachType, Xdp, XdpMode,
        cgroup_sock_addr::CgroupSockAddrAttachType,
        links::FdLink,
        tc::{NlOptions, TcAttachOptions, TcError, qdisc_add_clsact, qdisc_detach_program},
    },
};
use aya_obj::programs::XdpAttachType;
use switch_common::{maps as names, programs};

use crate::error::{Context as _, Error, Result, bpf};

/// The datapath object, built by build.rs from the switch-ebpf crate.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/switch-datapath"));

/// Root of every switch's pins.
pub use crate::sys::host::PIN_ROOT;

/// Every map the datapath has and the controller pins.
pub const MAPS: [&str; 26] = [
    names::FDB,
    names::LEARNED,
    names::PORTS,
    names::PORT_SLOTS,
    names::STATS,
    names::CONFIG,
    names::PORT_DEVMAP,
    names::FORWARDS,
    names::UPLINK_ADDRS,
    names::CONNTRACK,
    names::CT_UNREPLIED,
    names::FWD_STATS,
    names::NAT_CONFIG,
    names::UPLINK_BY_IFINDEX,
    names::SOCK_ORIG,
    names::NAT_NETNS,
    names::TABLE_STATS,
    names::BOUND,
    names::EVENTS,
    names::EVENT_RATE,
    names::TUNNEL,
    names::PEERS,
    names::PEER_SLOTS,
    names::CAPTURE,
    names::CAPTURE_FILTER,
    names::CAPTURE_SCRATCH,
];

/// Maps added after switches were already pinned by released binaries: pinned with the rest,
/// but a switch an older binary made, whose program does not know them, is complete without
/// them (the controller skips what it cannot find, see `maps::open_optional`).
pub const LATER_MAPS: [&str; 7] = [
    names::BOUND_IP,
    names::PEER_LEARNED,
    names::HOST_FLOWS,
    names::HOST_FLOWS_ON,
    names::PORT_ADDRS6,
    names::IPV6_SCRATCH,
    names::BOUND_IP6,
];

/// The cgroup socket-address programs and where they hook.
const SOCK_HOOKS: [(&str, CgroupSockAddrAttachType); 3] = [
    (programs::SOCK_CONNECT4, CgroupSockAddrAttachType::Connect4),
    (programs::SOCK_SENDMSG4, CgroupSockAddrAttachType::UDPSendMsg4),
    (programs::SOCK_RECVMSG4, CgroupSockAddrAttachType::UDPRecvMsg4),
];

/// Which of the object's two entry programs a switch runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// `switch_ingress`, a filter of each port's clsact ingress.
    Tc,
    /// `switch_xdp`, attached in native (driver) mode to each port.
    Xdp,
}

/// Paths of one switch's pins.
#[derive(Clone, Debug)]
pub struct Pins {
    dir: PathBuf,
}

/// Removes a pin; a pin that is not there is fine.
fn remove_pin(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).context(format!("removing {}", p.display())),
    }
}

/// Attaches the pinned TC program at `prog` to `ifname` with TCX and returns the link.
fn tcx_link(prog: &Path, ifname: &str, attach: TcAttachType, what: &str) -> Result<FdLink> {
    let mut prog = tc_program(prog)?;
    let id = prog.attach(ifname, attach).map_err(bpf(format!("attaching {what} to {ifname} (TCX {attach:?})")))?;
    prog.take_link(id).map_err(bpf("taking the TCX link"))?.try_into().map_err(bpf("TCX link is not an fd link"))
}

/// Attaches the pinned TC program at `prog` to the ingress of `ifname`, a port's own veth end,
/// as a direct-action filter of its clsact qdisc.
///
/// Not TCX, which the uplinks use: attaching and detaching a TCX program each wait out a full
/// RCU grace period under the rtnl lock (about 10 ms here), and so does deleting an interface
/// that still has one, once per interface even when the kernel deletes many in one batch
/// (250 ports took seconds to go). A filter is attached in one netlink request and freed
/// with the qdisc through call_rcu, without waiting. It lives exactly as long as the
/// interface, which the port made and deletes: nothing of it can outlive the switch (the
/// reason pinned TCX links are kept for host interfaces, which stay).
fn clsact_attach(prog: &Path, ifname: &str) -> Result<()> {
    match qdisc_add_clsact(ifname) {
        Ok(()) => {}
        // A qdisc left by an interrupted attach to this same interface.
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(bpf(format!("adding the clsact qdisc to {ifname}"))(e)),
    }
    let mut prog = tc_program(prog)?;
    let options = TcAttachOptions::Netlink(NlOptions { priority: PORT_FILTER_PRIORITY, ..Default::default() });
    let id = prog
        .attach_with_options(ifname, TcAttachType::Ingress, options)
        .map_err(bpf(format!("attaching the datapath to {ifname} (clsact ingress)")))?;
    let link = prog.take_link(id).map_err(bpf("taking the tc link"))?;
    // Dropping aya's handle would delete the filter; the kernel keeps it (and through it the
    // program) until the interface goes.
    std::mem::forget(link);
    Ok(())
}

/// Removes the filter running `program` from the clsact ingress of `ifname`. No such
/// interface, no clsact qdisc or no such filter: nothing to do.
fn detach_filter(ifname: &str, program: &str) -> Result<()> {
    match qdisc_detach_program(ifname, TcAttachType::Ingress, program) {
        Ok(()) => Ok(()),
        Err(TcError::IoError(e))
            if matches!(e.kind(), io::ErrorKind::NotFound) || e.raw_os_error() == Some(libc::ENODEV) =>
        {
            Ok(())
        }
        Err(TcError::NetlinkError(e))
            if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT | libc::ENODEV)) =>
        {
            Ok(())
        }
        Err(e) => Err(bpf(format!("detaching the datapath from {ifname}"))(e)),
    }
}

/// Priority of the port's filter in its clsact ingress: the first.
const PORT_FILTER_PRIORITY: u16 = 1;

/// Makes the link with `make` and pins it at `pin`, unless something is pinned there already.
fn pin_once(pin: &Path, make: impl FnOnce() -> Result<FdLink>) -> Result<()> {
    if pin.exists() {
        return Ok(());
    }
    make()?.pin(pin).map_err(bpf(format!("pinning {}", pin.display())))?;
    Ok(())
}

fn tc_program(path: &Path) -> Result<SchedClassifier> {
    SchedClassifier::from_pin(path).map_err(bpf("opening the pinned TC program"))
}

fn xdp_program(path: &Path) -> Result<Xdp> {
    Xdp::from_pin(path, XdpAttachType::Interface).map_err(bpf("opening the pinned XDP program"))
}

impl Pins {
    /// Pins of switch `name`.
    pub fn new(name: &str) -> Self {
        Self { dir: crate::sys::host::pin_root().join(name) }
    }

    /// `/sys/fs/bpf/switch/NAME` (`/sys/fs/bpf/switch/@HOST/NAME` for a host namespace).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pinned TC program.
    pub fn prog(&self) -> PathBuf {
        self.dir.join("prog_ingress")
    }

    /// The pinned XDP program.
    pub fn prog_xdp(&self) -> PathBuf {
        self.dir.join("prog_xdp")
    }

    /// The pinned program of the tunnel port's ingress.
    pub fn prog_tunnel(&self) -> PathBuf {
        self.dir.join("prog_tunnel")
    }

    /// Attaches the tunnel program to the VXLAN device `ifname` (its clsact ingress, as a
    /// port's: the device is the switch's and goes with it). An existing attachment is
    /// replaced.
    pub fn attach_tunnel(&self, ifname: &str) -> Result<()> {
        self.detach_tunnel(ifname)?;
        clsact_attach(&self.prog_tunnel(), ifname)
    }

    /// Takes the tunnel program off `ifname` (nothing attached, or no such interface: fine).
    pub fn detach_tunnel(&self, ifname: &str) -> Result<()> {
        detach_filter(ifname, programs::TUNNEL_INGRESS)
    }

    /// The pinned NAT program of the uplinks' ingress (`true`) or egress.
    pub fn prog_nat(&self, ingress: bool) -> PathBuf {
        self.dir.join(if ingress { "prog_nat_in" } else { "prog_nat_out" })
    }

    /// Attaches the port-forwarding programs to uplink `ifname` (TCX ingress and egress) and
    /// pins both links. A direction already pinned is left as it is (re-attaching the same
    /// program is refused by TCX, and dropping the old link first would open a gap).
    pub fn attach_uplink(&self, ifname: &str) -> Result<()> {
        for (ingress, attach) in [(true, TcAttachType::Ingress), (false, TcAttachType::Egress)] {
            pin_once(&self.uplink_link(ifname, ingress), || {
                tcx_link(&self.prog_nat(ingress), ifname, attach, "port forwarding on an uplink")
            })?;
        }
        Ok(())
    }

    /// Takes the port-forwarding programs off uplink `ifname` (pins not there are fine).
    pub fn detach_uplink(&self, ifname: &str) -> Result<()> {
        for ingress in [true, false] {
            remove_pin(&self.uplink_link(ifname, ingress))?;
        }
        Ok(())
    }

    /// Attaches the gateway's reply fast path to the TCX ingress of the gateway's host end.
    pub fn attach_gateway_nat(&self, ifname: &str) -> Result<()> {
        pin_once(&self.dir.join("links").join(format!("gateway-nat-{ifname}")), || {
            tcx_link(&self.dir.join("prog_nat_gateway"), ifname, TcAttachType::Ingress, "the gateway fast path")
        })
    }

    /// Attaches the segment's guard to the TCX egress of the gateway's host end `ifname`
    /// (what the host routes into the segment). Already pinned: left alone.
    pub fn attach_gateway_guard(&self, ifname: &str) -> Result<()> {
        pin_once(&self.gateway_guard_link(ifname), || {
            tcx_link(&self.dir.join("prog_gateway_egress"), ifname, TcAttachType::Egress, "the segment's guard")
        })
    }

    /// Takes the guard off `ifname` (a pin not there is fine).
    pub fn detach_gateway_guard(&self, ifname: &str) -> Result<()> {
        remove_pin(&self.gateway_guard_link(ifname))
    }

    fn gateway_guard_link(&self, ifname: &str) -> PathBuf {
        self.dir.join("links").join(format!("gateway-guard-{ifname}"))
    }

    fn prog_sock(&self, name: &str) -> PathBuf {
        self.dir.join(format!("prog_{name}"))
    }

    /// Attaches the socket-address programs to the cgroup v2 root at `cgroup` (every process
    /// of the host and of the namespaces is below it) and pins the links. Several switches
    /// attach side by side (each only knows its own forwards). Already pinned: left alone.
    pub fn attach_sock_hooks(&self, cgroup: &Path) -> Result<()> {
        for (name, attach_type) in SOCK_HOOKS {
            pin_once(&self.dir.join("links").join(format!("cgroup-{name}")), || {
                let dir = fs::File::open(cgroup).context(format!("opening cgroup {}", cgroup.display()))?;
                let mut prog = CgroupSockAddr::from_pin(self.prog_sock(name), attach_type)
                    .map_err(bpf("opening a pinned socket program"))?;
                let id = prog
                    // With bpf_link (kernel >= 5.7) cgroup programs always stack; the kernel
                    // refuses the ALLOW_MULTI flag there, so "Single" (no flag) it is.
                    .attach(dir, CgroupAttachMode::Single)
                    .map_err(bpf(format!("attaching {name} to cgroup {}", cgroup.display())))?;
                prog.take_link(id)
                    .map_err(bpf("taking the cgroup link"))?
                    .try_into()
                    .map_err(bpf("cgroup link is not an fd link"))
            })?;
        }
        Ok(())
    }

    fn uplink_link(&self, ifname: &str, ingress: bool) -> PathBuf {
        self.dir.join("links").join(format!("uplink-{}-{ifname}", if ingress { "in" } else { "out" }))
    }

    fn program(&self) -> Option<Program> {
        if self.prog().exists() {
            Some(Program::Tc)
        } else if self.prog_xdp().exists() {
            Some(Program::Xdp)
        } else {
            None
        }
    }

    /// A pinned map.
    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The pinned TCX link of port `ifname`.
    pub fn link(&self, ifname: &str) -> PathBuf {
        self.dir.join("links").join(ifname)
    }

    /// Whether anything of this switch is pinned.
    pub fn exists(&self) -> bool {
        self.dir.exists()
    }

    /// Whether the program and every map are pinned.
    pub fn complete(&self) -> bool {
        self.program().is_some() && MAPS.iter().all(|m| self.map(m).exists())
    }

    /// Loads a fresh copy of the datapath and pins its program and maps. On failure nothing
    /// stays pinned.
    pub fn create(&self, program: Program) -> Result<()> {
        let made = self.try_create(program);
        if made.is_err() {
            let _ = self.remove();
        }
        made
    }

    fn try_create(&self, program: Program) -> Result<()> {
        fs::create_dir_all(self.dir.join("links")).context(format!("creating {}", self.dir.display()))?;
        let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT).map_err(bpf("loading the datapath object"))?;
        let (name, pin) = match program {
            Program::Tc => (programs::TC_INGRESS, self.prog()),
            Program::Xdp => (programs::XDP_INGRESS, self.prog_xdp()),
        };
        let prog =
            ebpf.program_mut(name).ok_or_else(|| Error::Command(format!("datapath object has no program {name}")))?;
        match program {
            Program::Tc => {
                let p: &mut SchedClassifier = prog.try_into().map_err(bpf("datapath program has the wrong type"))?;
                p.load().map_err(bpf("loading the TC datapath into the kernel (verifier)"))?;
                p.pin(&pin).map_err(bpf(format!("pinning {}", pin.display())))?;
            }
            Program::Xdp => {
                let p: &mut Xdp = prog.try_into().map_err(bpf("datapath program has the wrong type"))?;
                p.load().map_err(bpf("loading the XDP datapath into the kernel (verifier)"))?;
                p.pin(&pin).map_err(bpf(format!("pinning {}", pin.display())))?;
            }
        }
        // The port-forwarding programs for the uplinks, whichever switching program runs.
        for (name, pin) in [
            (programs::NAT_INGRESS, self.prog_nat(true)),
            (programs::NAT_EGRESS, self.prog_nat(false)),
            (programs::NAT_GATEWAY, self.dir.join("prog_nat_gateway")),
            (programs::GATEWAY_EGRESS, self.dir.join("prog_gateway_egress")),
            // The tunnel port's (used by the tc datapath only; loaded with the rest so the
            // pins are the same whatever the switch has).
            (programs::TUNNEL_INGRESS, self.prog_tunnel()),
        ] {
            let p: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| Error::Command(format!("datapath object has no program {name}")))?
                .try_into()
                .map_err(bpf("NAT program has the wrong type"))?;
            p.load().map_err(bpf(format!("loading {name} into the kernel (verifier)")))?;
            p.pin(&pin).map_err(bpf(format!("pinning {}", pin.display())))?;
        }
        // The socket-address programs for host-local and hairpin access to forwarded ports.
        for (name, _) in SOCK_HOOKS {
            let pin = self.prog_sock(name);
            let p: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or_else(|| Error::Command(format!("datapath object has no program {name}")))?
                .try_into()
                .map_err(bpf("socket program has the wrong type"))?;
            p.load().map_err(bpf(format!("loading {name} into the kernel (verifier)")))?;
            p.pin(&pin).map_err(bpf(format!("pinning {}", pin.display())))?;
        }
        for name in MAPS.into_iter().chain(LATER_MAPS) {
            let map = ebpf.map(name).ok_or_else(|| Error::Command(format!("datapath object has no map {name}")))?;
            map.pin(self.map(name)).map_err(bpf(format!("pinning {}", self.map(name).display())))?;
        }
        Ok(())
    }

    /// Attaches the switch's program to port `ifname` (clsact ingress, or native XDP with a
    /// pinned link). An existing attachment (from an interrupted run) is replaced.
    pub fn attach(&self, ifname: &str) -> Result<()> {
        self.detach(ifname)?;
        let link: FdLink = match self.program() {
            Some(Program::Tc) => return clsact_attach(&self.prog(), ifname),
            Some(Program::Xdp) => {
                let mut prog = xdp_program(&self.prog_xdp())?;
                let id = prog
                    .attach(ifname, XdpMode::Driver)
                    .map_err(bpf(format!("attaching the datapath to {ifname} (native XDP)")))?;
                prog.take_link(id)
                    .map_err(bpf("taking the XDP link"))?
                    .try_into()
                    .map_err(bpf("XDP link is not an fd link"))?
            }
            None => return Err(Error::Command(format!("no datapath program pinned in {}", self.dir.display()))),
        };
        link.pin(self.link(ifname)).map_err(bpf(format!("pinning the link of {ifname}")))?;
        Ok(())
    }

    /// Detaches the datapath from port `ifname`: removes the XDP link's pin (the kernel
    /// destroys the link when its last reference goes) and the tc filter, if the interface is
    /// still there (the usual order deletes it first, which takes the filter with it). Nothing
    /// attached is not an error.
    pub fn detach(&self, ifname: &str) -> Result<()> {
        remove_pin(&self.link(ifname))?;
        detach_filter(ifname, programs::TC_INGRESS)
    }

    /// Removes every pin of the switch: the program and maps are freed once no link uses them.
    pub fn remove(&self) -> Result<()> {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).context(format!("removing {}", self.dir.display())),
        }
    }

    /// Kernel id of the pinned program (for attaching the log reader).
    pub fn prog_id(&self) -> Result<u32> {
        let info = match self.program() {
            Some(Program::Tc) => tc_program(&self.prog())?.info(),
            Some(Program::Xdp) => xdp_program(&self.prog_xdp())?.info(),
            None => return Err(Error::Command(format!("no datapath program pinned in {}", self.dir.display()))),
        };
        Ok(info.map_err(bpf("reading program info"))?.id())
    }
}
