//! The "outside world" of forwarding tests: a namespace behind a test veth whose host end
//! (172.31.N.1/24) serves as a switch's uplink; the namespace (172.31.N.2) has its default
//! route via the host, so it also has a route to every segment behind the host.
use std::process::{Command, Stdio};

use crate::{Run, Sandbox, host, spawn_until};

/// A server for the outside namespace (`Outside::spawn_python(PEER_SERVER, &[PORT])`): answers
/// one connection on PORT with "peer ADDR:PORT", the address it came from (masqueraded or not).
pub const PEER_SERVER: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); s.settimeout(10); print("ready", flush=True)
c, a = s.accept(); c.sendall(f"peer {a[0]}:{a[1]}".encode()); c.close()
"#;

/// An outside namespace and its uplink; both removed on drop.
pub struct Outside {
    /// The namespace.
    pub ns: String,
    /// The host end of the veth (the uplink).
    pub uplink: String,
}

impl Outside {
    /// The outside of network N of sandbox `sb`.
    pub fn new(sb: &Sandbox, net: u8) -> Self {
        Self::new_named(sb, net, "out")
    }

    /// A second outside of the same test needs other names.
    pub fn new_named(sb: &Sandbox, net: u8, name: &str) -> Self {
        Self::at(sb.name(name), format!("u{}{name}", sb.prefix), &format!("172.31.{net}"))
    }

    /// An outside namespace `ns` behind uplink `uplink` on `SUBNET.0/24` (`SUBNET` is the
    /// first three octets): the uplink is `SUBNET.1`, the namespace `SUBNET.2`.
    pub fn at(ns: String, uplink: String, subnet: &str) -> Self {
        let run = |args: &[&str]| host("ip", args);
        run(&["netns", "add", &ns]);
        // Owned from here: a failure below still removes what was made.
        let out = Self { ns, uplink };
        run(&["link", "add", &out.uplink, "type", "veth", "peer", "name", "eth0", "netns", &out.ns]);
        run(&["addr", "add", &format!("{subnet}.1/24"), "dev", &out.uplink]);
        run(&["link", "set", &out.uplink, "up"]);
        run(&["-n", &out.ns, "addr", "add", &format!("{subnet}.2/24"), "dev", "eth0"]);
        run(&["-n", &out.ns, "link", "set", "eth0", "up"]);
        run(&["-n", &out.ns, "link", "set", "lo", "up"]);
        run(&["-n", &out.ns, "route", "add", "default", "via", &format!("{subnet}.1")]);
        out
    }

    /// Runs python `script` with `args` in the outside namespace.
    pub fn python(&self, script: &str, args: &[&str]) -> Run {
        Command::new("ip").args(self.python_args(script, args)).output().unwrap().into()
    }

    /// Starts python `script` in the outside namespace and waits for its "ready" line.
    pub fn spawn_python(&self, script: &str, args: &[&str]) -> crate::Reaped {
        spawn_until(Command::new("ip").args(self.python_args(script, args)).stderr(Stdio::null()), "ready")
    }

    fn python_args<'a>(&'a self, script: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec!["netns", "exec", &self.ns, "python3", "-c", script];
        a.extend_from_slice(args);
        a
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.uplink]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}
