//! Containers under a real containerd (Debian's 1.6) started with `ctr run --cni` on a
//! switch-cni network (issue #12): two containers get their addresses from the plugin, ping
//! each other and the gateway, and `switch ns list` shows their ports under their container
//! IDs; the DEL after `ctr task kill` leaves no port, veth, IPAM reservation, cached result or
//! state record, and the same container ID runs again.
//!
//! ctr 1.6 sends the DEL only from a `ctr run` that waits for its task (it sends it when the
//! task ends): `ctr task kill`, `task rm` and `container rm` send none, so a task started with
//! `-d` keeps its port and lease (ctr 1.7 and later send the DEL at `ctr task kill`). The
//! first test runs the containers the 1.6 way that gets a DEL, a waiting `ctr run` in the
//! background; the second runs them with `-d` and checks what happens on the installed
//! version.
//!
//! Traffic goes only to the containers and the switch's gateway address; ctr has no published
//! ports, so no uplink is involved.
use container_env::containerd::ctr_version;
use switch_tests::containerd::Containerd;

/// A container that only idles.
const IDLE: &[&str] = &["sleep", "3600"];

/// Pings `ip` from container `from` (twice); returns whether both replies came.
fn ping(env: &Containerd, from: &str, ip: &str) -> bool {
    let r = env.exec(from, &["ping", "-c", "2", "-i", "0.2", "-W", "2", "-q", ip]);
    r.code == 0 && r.stdout.contains("2 packets received")
}

/// Container `id`'s address, checked against what the plugin recorded: the address eth0 has
/// inside is on the network's subnet, is the address of its port in `switch ns list` (listed
/// under its CNI container ID, on the task's own network namespace, with a host-side veth that
/// `switch ports` shows as adopted) and is reserved in host-local. Returns it without prefix length.
fn plugged(env: &mut Containerd, id: &str) -> String {
    let cidr = env.address(id);
    let (ip, len) = cidr.split_once('/').unwrap();
    let net = env.subnet.rsplit_once('.').unwrap().0.to_owned();
    let host: u8 = ip.strip_prefix(&format!("{net}.")).and_then(|h| h.parse().ok()).unwrap_or(0);
    assert!(len == "24" && (2..255).contains(&host), "{id} has {cidr}, not a container address of {}", env.subnet);
    let cni_id = env.cni_id(id);
    let ports = env.ports();
    let port = ports.get(&cni_id).unwrap_or_else(|| panic!("no port for {cni_id} on {}: {ports:?}", env.switch));
    assert_eq!(port.kind, "attached", "{port:?}");
    assert_eq!(port.ip, cidr, "the port's address is not the one eth0 has in {id}");
    assert_eq!(port.netns, format!("/proc/{}/ns/net", env.task_pid(id)), "{id}'s port is on another namespace");
    assert!(
        std::path::Path::new("/sys/class/net").join(&port.host_interface).exists(),
        "{id}'s host interface {} does not exist",
        port.host_interface
    );
    let adopted = env.adopted_interfaces();
    assert!(adopted.contains(&port.host_interface), "{port:?} is not an adopted port: {adopted:?}");
    assert!(env.reservations().contains(&ip.to_owned()), "{ip} is not reserved: {:?}", env.reservations());
    ip.to_owned()
}

/// Nothing of container `id` (which had `ip`) is left: no port or state record, no host
/// interface, no reservation, no cached result.
fn unplugged(env: &mut Containerd, id: &str, ip: &str) {
    let cni_id = env.cni_id(id);
    let ports = env.ports();
    assert!(!ports.contains_key(&cni_id), "{cni_id} still has a port: {ports:?}");
    let live: Vec<&String> = ports.values().map(|p| &p.host_interface).collect();
    let stray: Vec<String> = env.host_interfaces_left().into_iter().filter(|i| !live.contains(&i)).collect();
    assert!(stray.is_empty(), "host interfaces without a port: {stray:?}");
    assert!(!env.reservations().contains(&ip.to_owned()), "{ip} is still reserved: {:?}", env.reservations());
    let cached: Vec<_> = env.cached_results().into_iter().filter(|f| f.to_string_lossy().contains(&cni_id)).collect();
    assert!(cached.is_empty(), "libcni still caches {cached:?}");
}

#[test]
fn attached_run_adds_and_kill_deletes() {
    let mut env = Containerd::new(1);
    env.run_attached("a", IDLE);
    env.run_attached("b", IDLE);
    let a = plugged(&mut env, "a");
    let b = plugged(&mut env, "b");
    assert_ne!(a, b);
    assert!(ping(&env, "a", &b), "a cannot ping b");
    assert!(ping(&env, "b", &a), "b cannot ping a");
    assert!(ping(&env, "a", &env.gateway), "a cannot ping the gateway");
    assert!(ping(&env, "b", &env.gateway), "b cannot ping the gateway");

    // The task ends, ctr sends the DEL and deletes the task.
    env.kill("a");
    unplugged(&mut env, "a", &a);
    assert_eq!(env.task_status("a"), None, "ctr run did not delete a's task");
    assert!(ping(&env, "b", &env.gateway), "b lost the gateway when a went");
    env.rm("a");

    // The same container ID again.
    env.run_attached("a", IDLE);
    let again = plugged(&mut env, "a");
    assert!(ping(&env, "a", &b), "a (again) cannot ping b");
    assert!(ping(&env, "b", &again), "b cannot ping a (again)");
    for (id, ip) in [("a", again), ("b", b)] {
        env.kill(id);
        unplugged(&mut env, id, &ip);
        env.rm(id);
    }
    assert!(env.containers().is_empty());
    assert!(env.ports().is_empty() && env.reservations().is_empty());
}

#[test]
fn detached_run_adds_and_gets_a_del_only_from_ctr_1_7() {
    let mut env = Containerd::new(2);
    env.run_detached("a", IDLE);
    env.run_detached("b", IDLE);
    let a = plugged(&mut env, "a");
    let b = plugged(&mut env, "b");
    assert_ne!(a, b);
    assert!(ping(&env, "a", &b) && ping(&env, "b", &a), "a and b cannot ping each other");
    assert!(ping(&env, "a", &env.gateway), "a cannot ping the gateway");

    let del_on_kill = ctr_version() >= (1, 7);
    let stop = |env: &mut Containerd, id: &str, ip: &str| {
        env.kill(id);
        env.rm(id);
        if !del_on_kill {
            // ctr 1.6: no DEL from kill, task rm or container rm. The veth went with the
            // namespace; the port record, the lease and libcni's cache stay until a DEL comes.
            let cni_id = env.cni_id(id);
            assert!(env.ports().contains_key(&cni_id), "ctr {:?} sent a DEL for a detached task", ctr_version());
            assert!(env.reservations().contains(&ip.to_owned()));
            let r = env.cni_del(id);
            assert_eq!(r.code, 0, "DEL of {cni_id}: {}{}", r.stdout, r.stderr);
        }
        unplugged(env, id, ip);
    };
    stop(&mut env, "a", &a);

    // The same container ID again, after its DEL.
    env.run_detached("a", IDLE);
    let again = plugged(&mut env, "a");
    assert!(ping(&env, "a", &b), "a (again) cannot ping b");
    stop(&mut env, "a", &again);
    stop(&mut env, "b", &b);
    assert!(env.containers().is_empty());
    assert!(env.ports().is_empty() && env.reservations().is_empty());
}
