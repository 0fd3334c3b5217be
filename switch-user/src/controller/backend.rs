//! The four datapaths behind one set of calls. Everything datapath-specific the commands do
//! is here; the commands themselves (`switch`, `port`, `fdb`, `stats`) are the same for all.
//!
//! | datapath  | switch object                   | a port is                          |
//! |-----------|---------------------------------|------------------------------------|
//! | tc        | pinned TC program + maps        | a pinned TCX link + map entries    |
//! | xdp       | pinned XDP program + maps       | a pinned XDP link + map entries    |
//! | userspace | a `switch run` process          | an AF_PACKET socket in the process |
//! | bridge    | a Linux bridge                  | the host veth enslaved to it       |
use std::{collections::HashMap, time::Duration};

use switch_common::{CFG_F_REDIRECT_PEER, FDB_F_STATIC, FdbEntry, PORT_F_HOST, PortStats, SwitchConfig};

use super::blocking;
use crate::{
    datapath::ebpf::{
        Pins, Program,
        maps::{SwitchMaps, now_ns},
    },
    error::{Error, Result},
    names::{Mac, bridge_ifname, gateway_ifnames},
    state::{Datapath, PortState, Redirect, SwitchState},
    sys::{netlink::Netlink, sysctl},
    datapath::userspace::{
        control::{Request, Response},
        daemon,
    },
};

/// An FDB entry, whatever datapath it comes from.
pub struct FdbEntryView {
    /// Station MAC.
    pub mac: Mac,
    /// Host-side interface index of its port.
    pub ifindex: u32,
    /// Static (operator-made) entry.
    pub is_static: bool,
    /// Time since the station was last seen (dynamic entries).
    pub age: Option<Duration>,
}

/// Makes the switch object. On failure nothing of it is left.
pub async fn create(name: &str, sw: &SwitchState) -> Result<()> {
    match sw.datapath {
        Datapath::Tc | Datapath::Xdp => {
            let pins = Pins::new(name);
            let program = if sw.datapath == Datapath::Tc { Program::Tc } else { Program::Xdp };
            let cfg = SwitchConfig {
                ageing_ns: sw.ageing_secs.saturating_mul(1_000_000_000),
                flags: if sw.redirect == Redirect::Peer { CFG_F_REDIRECT_PEER } else { 0 },
                slot_limit: 0,
            };
            blocking(move || {
                pins.remove()?;
                pins.create(program)?;
                SwitchMaps::open(&pins)?.set_config(cfg)
            })
            .await
        }
        Datapath::Bridge => {
            let bridge = bridge_ifname(name);
            let nl = Netlink::new()?;
            nl.delete(&bridge).await?;
            nl.add_bridge(&bridge, sw.ageing_secs).await?;
            // A pure layer-2 device, like the eBPF ports: no IPv6 chatter from the host.
            blocking(move || sysctl::disable_ipv6(&bridge)).await
        }
        Datapath::Userspace => daemon::spawn(name, sw.ageing_secs).await,
    }
}

/// Whether the switch object is there and working.
pub async fn healthy(name: &str, sw: &SwitchState) -> Result<bool> {
    Ok(match sw.datapath {
        Datapath::Tc | Datapath::Xdp => Pins::new(name).complete(),
        Datapath::Bridge => Netlink::new()?.ifindex(&bridge_ifname(name)).await?.is_some(),
        Datapath::Userspace => daemon::alive(name).await,
    })
}

/// Removes every kind of switch object `name` may have left, whichever datapath it had (so it
/// also converges after a crash, when the record may be gone).
pub async fn destroy(name: &str) -> Result<()> {
    let pins = Pins::new(name);
    blocking(move || {
        pins.remove()?;
        // The shared root goes once the last switch is gone; busy is fine.
        let _ = std::fs::remove_dir(crate::datapath::ebpf::loader::PIN_ROOT);
        Ok(())
    })
    .await?;
    let nl = Netlink::new()?;
    nl.delete(&bridge_ifname(name)).await?;
    // The gateway pair, found by name (the record may be gone after a crash).
    nl.delete(&gateway_ifnames(name).0).await?;
    daemon::stop(name).await
}

/// Whether `name` has leftovers of any datapath.
pub async fn leftovers(name: &str) -> Result<bool> {
    let nl = Netlink::new()?;
    Ok(Pins::new(name).exists()
        || daemon::pid_path(name).exists()
        || nl.ifindex(&bridge_ifname(name)).await?.is_some()
        || nl.ifindex(&gateway_ifnames(name).0).await?.is_some())
}

/// Datapath-specific preparation of the namespace end of a port. Runs on the namespace's
/// thread (inside `netns::run_in`).
pub fn prepare_ns_side(datapath: Datapath, ns_if: &str) -> Result<()> {
    match datapath {
        Datapath::Xdp => crate::sys::ethtool::prepare_for_xdp(ns_if),
        _ => Ok(()),
    }
}

/// Plugs the host end `port.host_if` (index `ifindex`) into switch `name`. Runs before the
/// host end goes up, so no frame is ever handled by the host stack instead.
pub async fn attach_port(name: &str, sw: &SwitchState, port: &PortState, ifindex: u32) -> Result<()> {
    match sw.datapath {
        Datapath::Tc | Datapath::Xdp => {
            let (pins, host_if, slot) = (Pins::new(name), port.host_if.clone(), port.slot);
            let flags = if host_if == gateway_ifnames(name).1 { PORT_F_HOST } else { 0 };
            let cookie = port.netns_cookie;
            blocking(move || {
                SwitchMaps::open(&pins)?.add_port(slot, ifindex, flags)?;
                if cookie != 0 {
                    // Sockets of this namespace may reach forwards on the uplinks directly.
                    crate::datapath::ebpf::nat::NatMaps::open(&pins)?.allow_netns(cookie)?;
                }
                pins.attach(&host_if)
            })
            .await
        }
        Datapath::Bridge => {
            let nl = Netlink::new()?;
            let bridge = bridge_ifname(name);
            let br = nl.ifindex(&bridge).await?.ok_or_else(|| Error::Command(format!("bridge {bridge} is missing")))?;
            nl.set_controller(ifindex, br).await
        }
        Datapath::Userspace => {
            daemon::ask(name, Request::AddPort { slot: port.slot, ifindex, ifname: port.host_if.clone() }).await?;
            Ok(())
        }
    }
}

/// Unplugs a port; tolerant of anything already gone. `datapath` is `None` when the switch
/// record itself is gone (then every kind of attachment is cleaned).
pub async fn detach_port(name: &str, datapath: Option<Datapath>, port: &PortState) -> Result<()> {
    if datapath.is_none_or(Datapath::is_ebpf) {
        let (pins, host_if, slot, cookie) = (Pins::new(name), port.host_if.clone(), port.slot, port.netns_cookie);
        blocking(move || {
            pins.detach(&host_if)?;
            if pins.complete() {
                SwitchMaps::open(&pins)?.remove_port(slot)?;
                crate::datapath::ebpf::nat::NatMaps::open(&pins)?.forget_netns(cookie);
            }
            Ok(())
        })
        .await?;
    }
    if datapath.is_none_or(|d| d == Datapath::Userspace) && daemon::alive(name).await {
        daemon::ask(name, Request::DelPort { slot: port.slot }).await?;
    }
    // Bridge: deleting the veth (the caller does) takes it off the bridge.
    Ok(())
}

/// Every live FDB entry of the switch. `ports` maps the host ifindex of each port to its MAC
/// (the bridge lists the ports' own addresses too; they are left out). For eBPF datapaths,
/// expired entries and entries of vanished ports are deleted on the way.
pub async fn fdb(name: &str, sw: &SwitchState, ports: HashMap<u32, Mac>) -> Result<Vec<FdbEntryView>> {
    match sw.datapath {
        Datapath::Tc | Datapath::Xdp => {
            let pins = Pins::new(name);
            blocking(move || {
                let mut maps = SwitchMaps::open(&pins)?;
                let ageing = maps.ageing()?.as_nanos() as u64;
                let now = now_ns();
                maps.flush_fdb(|e| e.is_expired(now, ageing) || !ports.contains_key(&e.ifindex))?;
                Ok(maps
                    .fdb_entries()?
                    .into_iter()
                    .map(|(k, e)| FdbEntryView {
                        mac: Mac(k.addr),
                        ifindex: e.ifindex,
                        is_static: e.is_static(),
                        age: (!e.is_static()).then(|| Duration::from_nanos(now.saturating_sub(e.last_seen_ns))),
                    })
                    .collect())
            })
            .await
        }
        Datapath::Bridge => {
            let ageing = Duration::from_secs(sw.ageing_secs);
            let list: Vec<(u32, Mac)> = ports.into_iter().collect();
            Ok(Netlink::new()?
                .bridge_fdb(&list)
                .await?
                .into_iter()
                // The bridge ignores expired entries until its next sweep; so do we.
                .filter(|e| e.is_static || e.age <= ageing)
                .map(|e| FdbEntryView {
                    mac: e.mac,
                    ifindex: e.ifindex,
                    is_static: e.is_static,
                    age: (!e.is_static).then_some(e.age),
                })
                .collect())
        }
        Datapath::Userspace => match daemon::ask(name, Request::Fdb).await? {
            Response::Fdb { entries } => Ok(entries
                .into_iter()
                .filter(|e| ports.contains_key(&e.ifindex))
                .map(|e| FdbEntryView {
                    mac: Mac(e.mac),
                    ifindex: e.ifindex,
                    is_static: e.is_static,
                    age: (!e.is_static).then(|| Duration::from_nanos(e.age_ns)),
                })
                .collect()),
            other => Err(Error::Command(format!("unexpected answer from the userspace switch: {other:?}"))),
        },
    }
}

/// Adds a static entry: `mac` is behind the port whose host end is `ifindex`.
pub async fn fdb_add(name: &str, sw: &SwitchState, mac: Mac, ifindex: u32) -> Result<()> {
    match sw.datapath {
        Datapath::Tc | Datapath::Xdp => {
            let pins = Pins::new(name);
            blocking(move || {
                let entry = FdbEntry { ifindex, flags: FDB_F_STATIC, last_seen_ns: now_ns() };
                SwitchMaps::open(&pins)?.fdb_insert(mac.0, entry)
            })
            .await
        }
        Datapath::Bridge => Netlink::new()?.bridge_fdb_add(ifindex, mac).await,
        Datapath::Userspace => daemon::ask(name, Request::FdbAdd { mac: mac.0, ifindex }).await.map(|_| ()),
    }
}

/// Deletes the entry of `mac`; returns whether there was one. `ports` are the host ifindexes.
pub async fn fdb_del(name: &str, sw: &SwitchState, mac: Mac, ports: Vec<u32>) -> Result<bool> {
    match sw.datapath {
        Datapath::Tc | Datapath::Xdp => {
            let pins = Pins::new(name);
            blocking(move || SwitchMaps::open(&pins)?.fdb_remove(mac.0)).await
        }
        Datapath::Bridge => {
            let nl = Netlink::new()?;
            let mut existed = false;
            for p in ports {
                existed |= nl.bridge_fdb_del(p, mac).await?;
            }
            Ok(existed)
        }
        Datapath::Userspace => match daemon::ask(name, Request::FdbDel { mac: mac.0 }).await? {
            Response::Deleted { existed } => Ok(existed),
            other => Err(Error::Command(format!("unexpected answer from the userspace switch: {other:?}"))),
        },
    }
}

/// Counters of a port. `None` fields are counters the datapath does not keep (the bridge's
/// come from the host veth's interface counters, which know no flooding).
pub struct PortCounters {
    /// The counters that exist.
    pub stats: PortStats,
    /// Whether flooded/dropped/malformed/tx_errors are real.
    pub detailed: bool,
}

/// Counters of `port`.
pub async fn stats(name: &str, sw: &SwitchState, port: &PortState) -> Result<PortCounters> {
    match sw.datapath {
        Datapath::Tc | Datapath::Xdp => {
            let (pins, slot) = (Pins::new(name), port.slot);
            let stats = blocking(move || SwitchMaps::open(&pins)?.port_stats(slot)).await?;
            Ok(PortCounters { stats, detailed: true })
        }
        Datapath::Bridge => {
            let s = Netlink::new()?.link_stats(&port.host_if).await?.unwrap_or_default();
            // The host end receives what the namespace sends, and transmits what it gets.
            let stats = PortStats {
                rx_packets: s.rx_packets,
                rx_bytes: s.rx_bytes,
                tx_packets: s.tx_packets,
                tx_bytes: s.tx_bytes,
                ..Default::default()
            };
            Ok(PortCounters { stats, detailed: false })
        }
        Datapath::Userspace => match daemon::ask(name, Request::Stats { slot: port.slot }).await? {
            Response::Stats { stats } => Ok(PortCounters { stats, detailed: true }),
            other => Err(Error::Command(format!("unexpected answer from the userspace switch: {other:?}"))),
        },
    }
}
