//! `switch link NS1 NS2`: the plain veth pair between two namespaces, no switch at all (the
//! physical limit that benchmarks compare against).
use std::os::fd::AsRawFd as _;

use super::{intent, lock, port::delete_namespace};
use crate::{
    error::{Error, Result},
    names::{Cidr, link_ifname, validate_name},
    state::{LinkState, NsState},
    sys::{netlink::Netlink, netns, sysctl},
};

/// Links `ns1` and `ns2` with a veth pair, creating the namespaces that do not exist yet.
/// Namespaces that are switch ports or were not made by this tool are refused.
pub async fn link(ns1: &str, ns2: &str, ip1: Cidr, ip2: Cidr) -> Result<()> {
    validate_name("namespace name", ns1)?;
    validate_name("namespace name", ns2)?;
    if ns1 == ns2 {
        return Err(Error::invalid("namespace pair", format!("{ns1} {ns2}"), "a namespace cannot be linked to itself"));
    }
    if ip1.addr == ip2.addr {
        return Err(Error::invalid("address pair", format!("{ip1} {ip2}"), "both ends have the same address"));
    }
    let store = lock().await?;
    let mut state = store.load()?;
    let mut created = vec![];
    for ns in [ns1, ns2] {
        if state.ns_port(ns).is_some() {
            return Err(Error::NamespaceExists { name: ns.into(), detail: " (it is a switch port)".into() });
        }
        match state.namespaces.get(ns) {
            Some(s) if s.links.iter().any(|l| l.peer == ns1 || l.peer == ns2) => {
                return Err(Error::invalid("namespace pair", format!("{ns1} {ns2}"), "already linked"));
            }
            Some(_) => {}
            None if netns::exists(ns) => {
                return Err(Error::NamespaceExists { name: ns.into(), detail: " (not made by switch)".into() });
            }
            None => created.push(ns.to_owned()),
        }
    }
    let (if1, if2) = (link_ifname(ns2), link_ifname(ns1));
    for ns in &created {
        state.namespaces.insert(ns.clone(), NsState::default());
    }
    for (ns, peer, ifname, ip) in [(ns1, ns2, &if1, ip1), (ns2, ns1, &if2, ip2)] {
        let e = state.namespaces.get_mut(ns).expect("present");
        e.ready = false;
        e.links.push(LinkState { peer: peer.into(), ifname: ifname.clone(), ip });
    }
    store.save(&state)?;

    let made = build(ns1, ns2, &if1, &if2, ip1, ip2, &created).await;
    match made {
        Ok(()) => intent::finish(&store, &mut state, [ns1, ns2].map(intent::Record::Namespace)),
        Err(e) => {
            for (ns, peer) in [(ns1, ns2), (ns2, ns1)] {
                let entry = state.namespaces.get_mut(ns).expect("present");
                entry.links.retain(|l| l.peer != peer);
                entry.ready = true;
                if created.iter().any(|c| c == ns) {
                    let entry = state.namespaces.remove(ns).expect("present");
                    let _ = delete_namespace(ns, entry.links.iter().map(|l| l.ifname.clone()).collect()).await;
                }
            }
            store.save(&state)?;
            Err(e)
        }
    }
}

async fn build(ns1: &str, ns2: &str, if1: &str, if2: &str, ip1: Cidr, ip2: Cidr, created: &[String]) -> Result<()> {
    for ns in created {
        netns::create(ns).await?;
    }
    let (f1, f2) = (netns::open(ns1)?, netns::open(ns2)?);
    Netlink::new()?.add_veth_between(if1, f1.as_raw_fd(), if2, f2.as_raw_fd()).await?;
    for (ns, ifname, ip) in [(ns1, if1, ip1), (ns2, if2, ip2)] {
        let ifname = ifname.to_owned();
        netns::run_in(ns, move |h| async move {
            let nl = Netlink::from_handle(h);
            sysctl::disable_ipv6(&ifname)?;
            let idx = nl.ifindex(&ifname).await?.ok_or_else(|| Error::Command(format!("{ifname} missing")))?;
            nl.add_address(idx, ip).await?;
            nl.set_up(idx).await?;
            nl.set_up_by_name("lo").await
        })
        .await?;
    }
    Ok(())
}
