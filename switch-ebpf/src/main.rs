//! The switch's in-kernel datapath: one object, loaded and pinned per switch by the controller.
//!
//! Programs, by entry file (each file's doc draws its packet path):
//! - `tc_ingress.rs`: `switch_ingress` (a filter on the clsact ingress of every port's host
//!   end, the `tc` datapath). The packet path reads top to bottom here.
//! - `xdp_ingress.rs`: `switch_xdp` (XDP on the same interfaces, the `xdp` datapath).
//! - `tunnel_ingress.rs`: `tunnel_ingress` (TC ingress of the switch's VXLAN device, its
//!   tunnel port: frames from the switches of other hosts).
//! - `nat_uplink.rs`: `nat_ingress` and `nat_egress` (TCX on the uplinks: port forwarding,
//!   masquerade, and the segment's isolation from the uplinks' networks).
//! - `gateway.rs`: `nat_gateway` (TCX ingress of the gateway's host end: replies straight
//!   out) and `gateway_egress` (its TCX egress: nothing routed into the segment unasked).
//! - `sock_addr.rs`: `sock_connect4`, `sock_sendmsg4`, `sock_recvmsg4` (cgroup socket-address
//!   hooks: forwarded ports reached from the host itself).
//!
//! Maps (all in `helpers/maps.rs`, pinned under `/sys/fs/bpf/switch/NAME/`; keys and values
//! in `switch_common::maps`):
//! - switching: `FDB`, `BOUND` (MACs reserved for ports: port security), `LEARNED` (the
//!   per-port learning limit), `PORTS`, `PORT_SLOTS`, `STATS`, `CONFIG`, `PORT_DEVMAP` (XDP);
//! - forwarding: `FORWARDS`, `UPLINK_ADDRS`, `CONNTRACK`, `CT_UNREPLIED`, `FWD_STATS`,
//!   `NAT_CONFIG`, `UPLINK_BY_IFINDEX`, `NAT_NETNS`, `SOCK_ORIG`; both: `TABLE_STATS`;
//! - `switch monitor`: `EVENTS`, `EVENT_RATE`; `switch capture`: `CAPTURE`, `CAPTURE_FILTER`,
//!   `CAPTURE_SCRATCH`;
//! - the tunnel port: `TUNNEL`, `PEERS`, `PEER_SLOTS`, `BOUND_IP` (addresses no peer may
//!   claim), `PEER_LEARNED` (each peer's learning limit).
//!
//! aya-log adds its ring buffer `AYA_LOGS` (`switch logs`).
//!
//! Helpers shared by the programs are in `helpers/` (listed in `helpers/mod.rs`).
//!
//! `lane_steer.rs` is a second object (its own `[[bin]]`), not part of this one: the userspace
//! engine's lane steering, loaded by the engine's process rather than per switch.
#![no_std]
#![no_main]
// Map keys and values go by reference: aya-ebpf's map methods take `impl Borrow<K>`, and a
// key passed by value is copied to a new stack slot on every call (about 80 more instructions
// in nat_egress alone, whose masquerade loop is unrolled).
#![allow(clippy::needless_borrows_for_generic_args)]

mod gateway;
mod helpers;
mod nat_uplink;
mod object;
mod sock_addr;
mod tc_ingress;
mod tunnel_ingress;
mod xdp_ingress;
