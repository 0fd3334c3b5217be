//! Helpers shared by the datapath's entry programs, one concern per module. Everything is
//! `#[inline(always)]` unless said otherwise: the verifier then sees each program as one
//! function, with the bounds checks next to the accesses they guard.
//!
//! - `capture`: copies of frames with their verdict for `switch capture` into the `CAPTURE`
//!   ring buffer (`#[inline(never)]` subprograms).
//! - `config`: the switch-wide settings (`CONFIG`) with safe fallbacks.
//! - `ctx`: safe accessors for context fields (ifindex, socket address), the socket cookies
//!   and the clock: the programs read them only through these.
//! - `decide`: the switching decision shared by TC and XDP (port, validity, learning, where
//!   to).
//! - `eth`: Ethernet header access.
//! - `events`: events for `switch monitor` (drops, learned stations, moves, connections NAT
//!   creates) into the `EVENTS` ring buffer, rate-limited per CPU.
//! - `fdb`: the forwarding database (`FDB`): learning, lookup, lazy ageing.
//! - `forward`, `forward_xdp`: carrying a decision out from TC (clone-and-redirect flood) and
//!   from XDP (devmap redirect and broadcast).
//! - `host_flows`: flows the host translated into the segment (a Service's DNAT to a station
//!   of the switch), whose answers are sent back through the host to be translated back.
//! - `icmp`: ICMP errors quoting a translated connection's packet, translated back.
//! - `ipv4`: IPv4 + TCP/UDP header parsing for NAT (`Flow`).
//! - `ipv6`: the IPv6 header chain and neighbour discovery, as port security reads them.
//! - `log`: aya-log records of decisions (`#[inline(never)]` subprograms).
//! - `maps`: every map of a switch.
//! - `nat`: the connection table (`ct_key`, `ct_reverse_key`, `ct_lookup`, the translation
//!   step `ct_translate`, `ct_put`), address/port rewriting with checksum updates, per-rule
//!   counters.
//! - `observe`: what the readers see of a decision (log, events, capture), in one order for
//!   every entry program.
//! - `redirect`: redirecting a frame to one port from TC (known unicast, the last port of a
//!   flood, a frame for the VXLAN device); `forward` and `tunnel` both use it.
//! - `reply`: replies leaving the switch straight for the uplink (`switch_ingress`'s shortcut
//!   and `nat_gateway`).
//! - `route`: FIB lookups and the router's part (TTL, MACs) for translated packets.
//! - `stats`: per-port and per-table counters.
//! - `tunnel`: the tunnel port (VXLAN): admission of frames from peers, unicast to a peer,
//!   head-end replication.
//! - `verdict`: `TC_NEXT`, what a program returns for a packet that is not its own on an
//!   attach point it shares.
pub mod capture;
pub mod config;
pub mod ctx;
pub mod decide;
pub mod eth;
pub mod events;
pub mod fdb;
pub mod forward;
pub mod forward_xdp;
pub mod host_flows;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod log;
pub mod maps;
pub mod nat;
pub mod observe;
pub mod redirect;
pub mod reply;
pub mod route;
pub mod stats;
pub mod tunnel;
pub mod verdict;
