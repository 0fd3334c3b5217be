//! Golden digests of the datapath: the loaded programs run, through BPF_PROG_TEST_RUN, on a
//! fixed sequence of frames (the crafted inputs of `packets.rs` and `nat_packets.rs` plus their
//! randomised runs with a FIXED seed), and a digest of every (verdict, bytes out) must equal
//! the constant checked in below. A refactor of the datapath that keeps its behaviour keeps
//! these digests; any change of a verdict or of a single output byte changes them.
//!
//! How the constants were made: this test was written before the eBPF refactor (branch
//! `ebpf-refactor`, the commit that adds this file), run on the programs of that commit, and
//! its printed values pasted in. A deliberate change of what the datapath does to packets
//! changes the digests too: check the change with the behavioural tests, then run
//! `cargo test -p switch-tests --test golden_packets -- --include-ignored --nocapture` and
//! paste the printed `Golden { .. }` values here, saying why in the commit.
//!
//! The inputs have their own digest, so a change of the test's inputs (which needs new
//! constants) is told apart from a change of the datapath's outputs. To find WHICH input
//! differs, set `SWITCH_GOLDEN_TRACE=DIR`: every group then writes one line per input (index,
//! program/port, verdict, digest of the bytes out, whether they changed) to `DIR/GROUP.txt`;
//! run it on the old and the new datapath and diff the files.
//!
//! What keeps the run deterministic:
//! - fixed seeds, fixed MACs and addresses, fixed ports; interface indexes differ from run to
//!   run but only select ports, they never appear in the bytes;
//! - the beds fix the MACs that the FIB puts into routed packets (uplink and gateway host
//!   end, and permanent neighbour entries for the client, the target and a masqueraded
//!   segment host), since veths get random MACs;
//! - connection-table timestamps are not in the bytes. Expiry is: entries are aged by hand
//!   with 2 s margins, and every group runs well inside the shortest timeout (5 s, asserted);
//! - masquerading picks its port from a hash of the connection, never of the clock (and the
//!   range it picks from is above the host's ephemeral ports, the same on every run of a
//!   machine); repeated runs gave the same digests.
use std::time::{Duration, Instant};

use switch_common::nat::{CT_CLOSING, CT_UDP, timeout_ns};
use switch_tests::{
    bpf::{self, Outcome, frame},
    ipv4::{ACK, FIN, RST, SYN, TCP, UDP, csum_add, fold, packet, packet_with, with_ip_options, zeroing_payload},
    nat::{NatBed, ct_key, now_ns},
    *,
};

/// What one group of inputs must give.
#[derive(Debug, PartialEq, Eq)]
struct Golden {
    /// Inputs run.
    count: u64,
    /// FNV-1a of every input (with the program and port it went to).
    inputs: u64,
    /// FNV-1a of every outcome: verdict and bytes out.
    outputs: u64,
}

/// The TC switching program (`switch_ingress`) on a plain three-port switch.
const TC_SWITCHING: Golden = Golden { count: 3014, inputs: 0x4c0ec053388dc775, outputs: 0xdad93d06c7ddfd2e };
/// The XDP switching program (`switch_xdp`) on the same inputs.
const XDP_SWITCHING: Golden = Golden { count: 3014, inputs: 0x4c0ec053388dc775, outputs: 0xc33decbc96b89cff };
/// `nat_ingress`, `nat_egress`, `nat_gateway` and the reply shortcut of `switch_ingress`.
/// Changed on purpose once since it was recorded: masquerade takes its ports from above the
/// host's ephemeral range (not the namespace's own port), and a packet whose connection entry
/// expired is masqueraded anew instead of leaving with its private source. And once more: a
/// packet from the segment that `nat_egress` cannot translate (153 of the run's inputs: IP
/// fragments, other protocols, ICMP errors about nothing known) is dropped and counted
/// instead of leaving with its private source; no other verdict or byte changed (checked
/// against a trace of the previous datapath with `SWITCH_GOLDEN_TRACE`). And once more: a
/// source may take masquerade ports only from its share of the range, so masqueraded ports
/// (and the checksums with them) differ, and 2 of the run's inputs (new connections of the
/// segment host to one remote over its share) are dropped as `masquerade-share`; no other
/// verdict changed (traced against the previous datapath). And: the uplink's programs pass
/// on what is not their switch's with TCX's "next" (-1) instead of ending the chain with OK
/// (0), so several switches can share an uplink: 1 499 untouched inputs went from 0 to -1, no
/// other verdict and no byte changed (traced). And: the bed routes REMOTE through its uplink;
/// before, the FIB answered input 59 (the gateway's shortcut for a masqueraded connection to
/// REMOTE) with the machine's default route, redirected when that route's gateway happened
/// to be in the ARP cache and passed on otherwise, so the digest depended on the machine.
/// Now input 59 is redirected out of the uplink with the bed's MACs; no other input changed
/// (traced).
const NAT: Golden = Golden { count: 4560, inputs: 0x9091ad40132e1e02, outputs: 0x51db9d8e2c9de7c1 };

/// Longest a group may run: an unanswered connection (the shortest timeout, 5 s) made early
/// in the run must still be alive at its end, or a later packet of it would pass untranslated.
const MAX_RUN: Duration = Duration::from_secs(4);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// Collects a group's digests.
struct Recorder {
    name: &'static str,
    got: Golden,
    started: Instant,
    /// One line per input, when `SWITCH_GOLDEN_TRACE` is set.
    trace: Option<String>,
}

impl Recorder {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            got: Golden { count: 0, inputs: FNV_OFFSET, outputs: FNV_OFFSET },
            started: Instant::now(),
            trace: std::env::var_os("SWITCH_GOLDEN_TRACE").map(|_| String::new()),
        }
    }

    /// Records that `input`, sent to program/port `to`, gave `out`.
    fn record(&mut self, to: u8, input: &[u8], out: &Outcome) {
        self.got.count += 1;
        self.got.inputs = fnv(self.got.inputs, &[to]);
        self.got.inputs = fnv(self.got.inputs, &(input.len() as u32).to_le_bytes());
        self.got.inputs = fnv(self.got.inputs, input);
        self.got.outputs = fnv(self.got.outputs, &out.retval.to_le_bytes());
        self.got.outputs = fnv(self.got.outputs, &(out.data.len() as u32).to_le_bytes());
        self.got.outputs = fnv(self.got.outputs, &out.data);
        if let Some(t) = &mut self.trace {
            let changed = if out.data == input { "same" } else { "changed" };
            let line =
                format!("{} {to} {} {:016x} {changed}\n", self.got.count - 1, out.retval, fnv(FNV_OFFSET, &out.data));
            t.push_str(&line);
        }
    }

    /// Compares with the checked-in values.
    fn check(self, want: &Golden) {
        let elapsed = self.started.elapsed();
        if let (Some(dir), Some(t)) = (std::env::var_os("SWITCH_GOLDEN_TRACE"), &self.trace) {
            let path = std::path::Path::new(&dir).join(format!("{}.txt", self.name.replace(' ', "-")));
            std::fs::write(&path, t).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
        let got = &self.got;
        println!(
            "{}: {} inputs in {elapsed:?}\n    Golden {{ count: {}, inputs: {:#018x}, outputs: {:#018x} }}",
            self.name, got.count, got.count, got.inputs, got.outputs
        );
        assert!(elapsed < MAX_RUN, "{}: the run took {elapsed:?}, too long to be deterministic", self.name);
        assert_eq!(
            (got.count, got.inputs),
            (want.count, want.inputs),
            "{}: the test's INPUTS changed; remake the constants from an unchanged datapath (see the file's doc)",
            self.name
        );
        assert_eq!(
            got.outputs, want.outputs,
            "{}: the datapath's OUTPUTS changed (a verdict or a byte out differs from the golden run)",
            self.name
        );
    }
}

fn ifindex(ifname: &str) -> u32 {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/ifindex")).unwrap().trim().parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Switching: the inputs of packets.rs.

const BCAST: [u8; 6] = [0xff; 6];
const X: [u8; 6] = [0x02, 0, 0, 0x66, 0, 0x01];
const Y: [u8; 6] = [0x02, 0, 0, 0x66, 0, 0x02];

/// Every switching input, in order: (port index, frame). Port index 3 is the host's `lo`,
/// which is not a port.
fn switching_inputs() -> Vec<(usize, Vec<u8>)> {
    let mut v: Vec<(usize, Vec<u8>)> = vec![
        // learning_flooding_unicast_and_moves
        (0, frame(BCAST, X, 0x0800, 46)),
        (0, frame(Y, X, 0x0800, 46)),
        (1, frame(X, Y, 0x0800, 46)),
        (0, frame(Y, X, 0x0800, 46)),
        (1, frame(Y, X, 0x0800, 46)),
        (2, frame(BCAST, X, 0x0806, 28)),
        // invalid_frames_are_dropped_and_counted_other_protocols_switched_unchanged
        (0, frame(BCAST, [0x01, 0, 0x5e, 0, 0, 1], 0x0800, 46)),
        (0, frame(BCAST, [0; 6], 0x0800, 46)),
    ];
    let mut vlan = frame(BCAST, X, 0x8100, 50);
    vlan[14..18].copy_from_slice(&[0x00, 0x64, 0x08, 0x00]);
    for f in [
        frame(BCAST, X, 0x86dd, 60),
        vlan,
        frame(BCAST, X, 0x0806, 28),
        frame(BCAST, X, 0x88b5, 3),
        frame(BCAST, X, 0x0800, 3000),
    ] {
        v.push((0, f));
    }
    // interfaces_that_are_not_ports_are_left_alone
    v.push((3, frame(BCAST, X, 0x0800, 46)));
    // random_frames_keep_every_invariant, with its seed not mixed with the process id.
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let pool = bpf::mac_pool();
    for _ in 0..3000 {
        let f = bpf::random_frame(&mut rng, &pool);
        v.push(((rng.next_u64() % 3) as usize, f));
    }
    v
}

/// A three-port switch on `datapath`: its pinned program's path and the ports' host-end
/// interface indexes (and `lo`'s, 1, as a fourth "port").
fn switching_bed(sb: &mut Sandbox, datapath: &str, net: u8) -> (String, Vec<u32>) {
    let sw = sb.switch("sw", datapath, &[]);
    let mut ports: Vec<u32> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            // Crafted frames come from any station: the ports carry other MACs.
            let ns = sb.port(&sw, n, &format!("10.{net}.0.{}/24", i + 1), &["--no-port-security"]);
            ifindex(ns_info(&ns)["host_interface"].as_str().unwrap())
        })
        .collect();
    ports.push(1);
    (sw, ports)
}

#[test]
fn golden_packets_tc_switching() {
    switching_run("tc", 68, false, "tc switching", &TC_SWITCHING);
}

#[test]
fn golden_packets_xdp_switching() {
    switching_run("xdp", 69, false, "xdp switching", &XDP_SWITCHING);
}

/// Events (`switch monitor`) change no verdict and no byte: the same inputs with events on
/// give the same digests.
#[test]
fn golden_packets_tc_switching_with_events_on() {
    switching_run("tc", 70, true, "tc switching, events on", &TC_SWITCHING);
}

/// The same for XDP.
#[test]
fn golden_packets_xdp_switching_with_events_on() {
    switching_run("xdp", 71, true, "xdp switching, events on", &XDP_SWITCHING);
}

/// Runs every switching input through the switching program of `datapath` ("tc" or "xdp") on
/// a fresh bed on network `net`, with the datapath's events on or off, and checks the group
/// `name`'s digests against `want` (and, with events on, that the event path ran).
fn switching_run(datapath: &str, net: u8, events: bool, name: &'static str, want: &Golden) {
    let mut sb = Sandbox::new();
    let (sw, ports) = switching_bed(&mut sb, datapath, net);
    if events {
        events_on(&sw);
    }
    let prog = Switching::open(datapath, &sw);
    let mut rec = Recorder::new(name);
    for (port, f) in switching_inputs() {
        let out = prog.run(&f, ports[port]);
        rec.record(port as u8, &f, &out);
    }
    rec.check(want);
    if events {
        assert!(events_emitted(&sw), "no event in the ring: the event path did not run");
    }
}

/// The switching program of a bed, of either kind.
enum Switching {
    Tc(bpf::SchedClassifier),
    Xdp(bpf::Xdp),
}

impl Switching {
    /// The program `switch up` pinned for switch `sw` of `datapath` ("tc" or "xdp").
    fn open(datapath: &str, sw: &str) -> Self {
        if datapath == "tc" {
            Self::Tc(bpf::tc_program(&format!("/sys/fs/bpf/switch/{sw}/prog_ingress")).unwrap())
        } else {
            Self::Xdp(bpf::xdp_program(&format!("/sys/fs/bpf/switch/{sw}/prog_xdp")).unwrap())
        }
    }

    /// Runs frame `f` arriving on `ifindex`.
    fn run(&self, f: &[u8], ifindex: u32) -> Outcome {
        match self {
            Self::Tc(prog) => bpf::run_tc(prog, f, ifindex).unwrap(),
            Self::Xdp(prog) => bpf::run_xdp(prog, f, ifindex).unwrap(),
        }
    }
}

/// Turns the datapath's events on (`switch monitor`'s CONFIG flag) for the bed of `sw`.
fn events_on(sw: &str) {
    use aya::maps::{Array, Map, MapData};
    let data = MapData::from_pin(format!("/sys/fs/bpf/switch/{sw}/CONFIG")).unwrap();
    let mut config: Array<MapData, switch_common::SwitchConfig> = Map::Array(data).try_into().unwrap();
    let mut c = config.get(&0, 0).unwrap();
    c.flags |= switch_common::CFG_F_EVENTS;
    config.set(0, c, 0).unwrap();
}

/// Whether the bed's EVENTS ring buffer holds an event.
fn events_emitted(sw: &str) -> bool {
    use aya::maps::{Map, MapData, RingBuf};
    let data = MapData::from_pin(format!("/sys/fs/bpf/switch/{sw}/EVENTS")).unwrap();
    let mut ring: RingBuf<MapData> = Map::RingBuf(data).try_into().unwrap();
    ring.next().is_some()
}

// ---------------------------------------------------------------------------------------------
// Port forwarding, masquerade and the reply shortcut: the inputs of nat_packets.rs.

/// The programs (and ports) a NAT input goes to.
const NAT_IN: u8 = 0;
const NAT_OUT: u8 = 1;
const NAT_GATEWAY: u8 = 2;
/// `switch_ingress` on the target's port, and on the gateway port.
const SWITCH_FROM_WEB: u8 = 3;
const SWITCH_FROM_GW: u8 = 4;

const UPLINK_MAC: &str = "02:00:00:00:76:01";
const CLIENT_MAC: &str = "02:00:00:00:76:02";
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x76, 0xfe];
const TARGET_MAC: &str = "02:00:00:00:76:0a";
const WEB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x76, 0x10];
const SEGMENT_HOST_MAC: &str = "02:00:00:00:76:07";

/// The NAT bed and what runs its programs.
struct NatRun {
    bed: NatBed,
    ingress: bpf::SchedClassifier,
    gateway: bpf::SchedClassifier,
    gw_host: u32,
    web_port: u32,
    gw_port: u32,
    rec: Recorder,
}

impl NatRun {
    fn new() -> Self {
        let bed = NatBed::new(118, 11880);
        let uplink = format!("u{}", bed.sb.prefix);
        let gw_host = host("ip", &["-o", "-4", "addr", "show", "to", "10.118.0.254"]);
        let gw_host = gw_host.split_whitespace().nth(1).expect("gateway interface").to_owned();
        // Fixed MACs wherever the FIB takes them from: veths are made with random ones.
        let gw_mac = GATEWAY_MAC.map(|b| format!("{b:02x}")).join(":");
        host("ip", &["link", "set", "dev", &uplink, "address", UPLINK_MAC]);
        host("ip", &["link", "set", "dev", &gw_host, "address", &gw_mac]);
        host("ip", &["neigh", "replace", "172.31.118.2", "lladdr", CLIENT_MAC, "dev", &uplink, "nud", "permanent"]);
        // REMOTE is reached through the uplink (via the client), so the FIB's answer for a
        // masqueraded connection's packets is the bed's own: without this route it is the
        // machine's default route, redirected or not by whether its gateway's ARP entry
        // happens to be cached. The route goes with the uplink.
        host("ip", &["route", "replace", "198.51.100.1/32", "via", "172.31.118.2", "dev", &uplink]);
        for (ip, mac) in [("10.118.0.10", TARGET_MAC), ("10.118.0.7", SEGMENT_HOST_MAC)] {
            host("ip", &["neigh", "replace", ip, "lladdr", mac, "dev", &gw_host, "nud", "permanent"]);
        }
        let gw_port = ifindex(port_stats(&bed.sw, "host")["interface"].as_str().unwrap());
        let web_port = ifindex(ns_info(&bed.sb.name("web"))["host_interface"].as_str().unwrap());
        let ingress = bpf::tc_program(&format!("/sys/fs/bpf/switch/{}/prog_ingress", bed.sw)).unwrap();
        let gateway = bpf::tc_program(&format!("/sys/fs/bpf/switch/{}/prog_nat_gateway", bed.sw)).unwrap();
        let gw_host = ifindex(&gw_host);
        Self { bed, ingress, gateway, gw_host, web_port, gw_port, rec: Recorder::new("nat") }
    }

    fn send(&mut self, to: u8, f: &[u8]) {
        let (prog, ifindex) = match to {
            NAT_IN => (&self.bed.nat_in, self.bed.ifindex),
            NAT_OUT => (&self.bed.nat_out, self.bed.ifindex),
            NAT_GATEWAY => (&self.gateway, self.gw_host),
            SWITCH_FROM_WEB => (&self.ingress, self.web_port),
            _ => (&self.ingress, self.gw_port),
        };
        let out = bpf::run_tc(prog, f, ifindex).unwrap();
        self.rec.record(to, f, &out);
    }

    /// Moves the last-seen time of `keys` `age_ns` into the past, in whichever connection
    /// table holds them.
    fn age(&self, keys: &[switch_common::CtKey], age_ns: u64) {
        for mut ct in [self.bed.conntrack(), self.bed.unreplied()] {
            for k in keys {
                if let Ok(mut e) = ct.get(k, 0) {
                    e.last_seen_ns = now_ns() - age_ns;
                    ct.insert(*k, e, 0).unwrap();
                }
            }
        }
    }
}

/// `f` as a frame from the target to the gateway's MAC (a reply the switch sees).
fn to_gateway(mut f: Vec<u8>) -> Vec<u8> {
    f[..6].copy_from_slice(&GATEWAY_MAC);
    f[6..12].copy_from_slice(&WEB_MAC);
    f
}

/// `f` with TTL 1 (header checksum fixed).
fn ttl_one(mut f: Vec<u8>) -> Vec<u8> {
    f[22] = 1;
    f[24..26].copy_from_slice(&[0, 0]);
    let c = fold(csum_add(0, &f[14..34]));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

#[test]
fn golden_packets_nat() {
    // Events (`switch monitor`) change no verdict and no byte: compared with the run without
    // them rather than with the constants, so that this holds even where those do not. The
    // run without them is the later one, so its own timing is what `check` judges.
    let on = nat_outputs(true);
    let off = nat_outputs(false);
    assert_eq!((on.got.count, on.got.inputs, on.got.outputs), (off.got.count, off.got.inputs, off.got.outputs));
    assert!(on.events, "no event in the ring: the event path did not run");
    off.rec.check(&NAT);
}

/// What the NAT group's run gave, and whether it left events in the ring.
struct NatOutputs {
    rec: Recorder,
    got: Golden,
    events: bool,
}

/// Runs the NAT group's inputs on a fresh bed, with the datapath's events on or off: the
/// inputs of each test of nat_packets.rs in turn, then its randomised run. The order of the
/// steps is the order of the recorded inputs: do not change it.
fn nat_outputs(events: bool) -> NatOutputs {
    let mut r = NatRun::new();
    if events {
        events_on(&r.bed.sw);
    }
    send_translations(&mut r);
    send_malformed(&mut r);
    send_checksum_edges(&mut r);
    send_tcp_states_and_timeouts(&mut r);
    send_masquerade(&mut r);
    send_reply_shortcut(&mut r);
    // random_packets_keep_the_nat_invariants, with its seed not mixed with the process id.
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    let conns = send_random_packets(&mut r, &mut rng);
    send_random_replies(&mut r, &mut rng, &conns);
    let got = Golden { ..r.rec.got };
    let emitted = events_emitted(&r.bed.sw);
    NatOutputs { rec: r.rec, got, events: emitted }
}

/// A namespace of the segment that masquerades, and the remote it talks to.
const SEGMENT_HOST: [u8; 4] = [10, 118, 0, 7];
const REMOTE: [u8; 4] = [198, 51, 100, 1];

/// The inputs of dnat_and_reverse_translation_byte_for_byte.
fn send_translations(r: &mut NatRun) {
    let (client, uplink_ip, target) = (r.bed.client, r.bed.uplink_ip, r.bed.target);
    let (port, udp_port) = (r.bed.tcp_port, r.bed.udp_port);
    r.send(NAT_IN, &r.bed.syn(40000));
    r.send(NAT_OUT, &r.bed.from_server(40000, SYN | ACK));
    r.send(NAT_IN, &r.bed.from_client(40000, ACK));
    let mut fragment = r.bed.syn(40003);
    fragment[20] |= 0x20;
    for f in [
        r.bed.from_client(40001, ACK),
        packet(TCP, client, uplink_ip, 40002, port + 2, SYN, false),
        fragment,
        packet(TCP, client, [172, 31, 118, 9], 40004, port, SYN, false),
    ] {
        r.send(NAT_IN, &f);
    }
    for zero in [false, true] {
        let sport = if zero { 50001 } else { 50000 };
        r.send(NAT_IN, &packet(UDP, client, uplink_ip, sport, udp_port, 0, zero));
        r.send(NAT_OUT, &packet(UDP, target, client, 53, sport, 0, zero));
    }
}

/// The inputs of every_malformed_class_is_left_alone_and_options_are_handled.
fn send_malformed(r: &mut NatRun) {
    let (client, uplink_ip, port) = (r.bed.client, r.bed.uplink_ip, r.bed.tcp_port);
    let mut cases: Vec<Vec<u8>> = r.bed.malformed_syns().into_iter().map(|(_, f)| f).collect();
    cases.push(with_ip_options(&r.bed.syn(41010)));
    cases.push(packet_with(TCP, client, uplink_ip, 41011, port, SYN, false, &[7; 3000]));
    for f in &cases {
        r.send(NAT_IN, f);
    }
}

/// The inputs of checksum_edges_zero_and_ffff.
fn send_checksum_edges(r: &mut NatRun) {
    let (client, uplink_ip, target) = (r.bed.client, r.bed.uplink_ip, r.bed.target);
    let (port, udp_port) = (r.bed.tcp_port, r.bed.udp_port);
    let payload = zeroing_payload(UDP, client, target, 50010, 53, 0);
    r.send(NAT_IN, &packet_with(UDP, client, uplink_ip, 50010, udp_port, 0, false, &payload));
    let payload = zeroing_payload(UDP, uplink_ip, client, udp_port, 50010, 0);
    r.send(NAT_OUT, &packet_with(UDP, target, client, 53, 50010, 0, false, &payload));
    let payload = zeroing_payload(UDP, client, uplink_ip, 50011, udp_port, 0);
    r.send(NAT_IN, &packet_with(UDP, client, uplink_ip, 50011, udp_port, 0, false, &payload));
    let payload = zeroing_payload(TCP, client, target, 40010, 80, SYN);
    r.send(NAT_IN, &packet_with(TCP, client, uplink_ip, 40010, port, SYN, false, &payload));
    let payload = zeroing_payload(TCP, client, uplink_ip, 40011, port, SYN);
    r.send(NAT_IN, &packet_with(TCP, client, uplink_ip, 40011, port, SYN, false, &payload));
}

/// The inputs of connection_table_follows_tcp_states_and_times_out.
fn send_tcp_states_and_timeouts(r: &mut NatRun) {
    let (client, uplink_ip, target, udp_port) = (r.bed.client, r.bed.uplink_ip, r.bed.target, r.bed.udp_port);
    r.send(NAT_IN, &r.bed.syn(40100));
    r.send(NAT_IN, &r.bed.syn(40100));
    r.send(NAT_OUT, &r.bed.from_server(40100, SYN | ACK));
    r.send(NAT_IN, &r.bed.from_client(40100, ACK));
    r.send(NAT_IN, &r.bed.from_client(40100, FIN | ACK));
    r.age(&r.bed.keys(40100), timeout_ns(CT_CLOSING) + 2_000_000_000);
    r.send(NAT_IN, &r.bed.from_client(40100, ACK));
    r.send(NAT_OUT, &r.bed.from_server(40100, ACK));
    r.send(NAT_IN, &r.bed.syn(40100));
    r.send(NAT_IN, &r.bed.syn(40101));
    r.send(NAT_OUT, &r.bed.from_server(40101, SYN | ACK));
    r.send(NAT_OUT, &r.bed.from_server(40101, RST));
    r.send(NAT_IN, &packet(UDP, client, uplink_ip, 50100, udp_port, 0, false));
    let udp_keys = [ct_key(UDP, client, uplink_ip, 50100, udp_port), ct_key(UDP, target, client, 53, 50100)];
    r.age(&udp_keys, timeout_ns(CT_UDP) - 2_000_000_000);
    r.send(NAT_OUT, &packet(UDP, target, client, 53, 50100, 0, false));
    r.age(&udp_keys, timeout_ns(CT_UDP) + 2_000_000_000);
    r.send(NAT_OUT, &packet(UDP, target, client, 53, 50100, 0, false));
}

/// Masquerade: new outbound connections keep their own source port (free here), their
/// answers come back; then more packets of them both ways.
fn send_masquerade(r: &mut NatRun) {
    let uplink_ip = r.bed.uplink_ip;
    for proto in [TCP, UDP] {
        let flags = if proto == TCP { SYN } else { 0 };
        r.send(NAT_OUT, &packet(proto, SEGMENT_HOST, REMOTE, 5000, 443, flags, false));
        r.send(NAT_IN, &packet(proto, REMOTE, uplink_ip, 443, 5000, flags | ACK, false));
        r.send(NAT_OUT, &packet(proto, SEGMENT_HOST, REMOTE, 5000, 443, ACK, false));
        r.send(NAT_IN, &packet(proto, REMOTE, uplink_ip, 443, 5000, FIN | ACK, false));
    }
}

/// The inputs of replies_leave_for_the_uplink_straight_from_the_switch, and nat_gateway.
fn send_reply_shortcut(r: &mut NatRun) {
    let (client, target) = (r.bed.client, r.bed.target);
    r.send(NAT_IN, &r.bed.syn(40200));
    let mut hello = frame([0xff; 6], GATEWAY_MAC, 0x88b5, 46);
    hello[6..12].copy_from_slice(&GATEWAY_MAC);
    r.send(SWITCH_FROM_GW, &hello);
    r.send(SWITCH_FROM_WEB, &to_gateway(r.bed.from_server(40200, SYN | ACK)));
    r.send(SWITCH_FROM_WEB, &to_gateway(r.bed.from_server(40999, SYN | ACK)));
    r.send(SWITCH_FROM_WEB, &to_gateway(ttl_one(r.bed.from_server(40200, ACK))));
    r.send(SWITCH_FROM_WEB, &to_gateway(packet(UDP, target, client, 53, 50000, 0, false)));
    r.send(NAT_GATEWAY, &to_gateway(r.bed.from_server(40200, ACK)));
    r.send(NAT_GATEWAY, &to_gateway(ttl_one(r.bed.from_server(40200, ACK))));
    r.send(NAT_GATEWAY, &to_gateway(r.bed.from_server(40998, ACK)));
    r.send(NAT_GATEWAY, &to_gateway(packet(TCP, SEGMENT_HOST, REMOTE, 5000, 443, ACK, false)));
}

/// The randomised run's packets: arbitrary bytes, or TCP/UDP to a forwarded port (inbound) or
/// from the segment (outbound), a few bytes overwritten. Returns the inbound connections
/// made, (protocol, client port).
fn send_random_packets(r: &mut NatRun, rng: &mut Rng) -> Vec<(u8, u16)> {
    let (client, uplink_ip) = (r.bed.client, r.bed.uplink_ip);
    let (port, udp_port) = (r.bed.tcp_port, r.bed.udp_port);
    let mut conns: Vec<(u8, u16)> = vec![];
    for _ in 0..3000 {
        let inbound = rng.next_u64().is_multiple_of(2);
        let mut f: Vec<u8> = if rng.next_u64().is_multiple_of(4) {
            (0..14 + rng.next_u64() % 600).map(|_| rng.next_u64() as u8).collect()
        } else {
            let proto = if rng.next_u64().is_multiple_of(2) { TCP } else { UDP };
            let dport = if proto == TCP { port } else { udp_port };
            let payload: Vec<u8> = (0..rng.next_u64() % 64).map(|_| rng.next_u64() as u8).collect();
            let sport = 1024 + (rng.next_u64() % 60_000) as u16;
            let flags = rng.next_u64() as u8;
            let mut f = if inbound {
                conns.push((proto, sport));
                packet_with(proto, client, uplink_ip, sport, dport, flags, false, &payload)
            } else {
                packet_with(proto, SEGMENT_HOST, client, sport, 443, flags, false, &payload)
            };
            for _ in 0..rng.next_u64() % 4 {
                let at = (rng.next_u64() % f.len() as u64) as usize;
                f[at] = rng.next_u64() as u8;
            }
            f
        };
        if f.len() < 34 {
            f.resize(34, 0);
        }
        r.send(if inbound { NAT_IN } else { NAT_OUT }, &f);
    }
    conns
}

/// Replies of the random run's connections (most made an entry), a few bytes overwritten,
/// through each of the three places that translate replies: nat_egress on the uplink, the
/// shortcut in switch_ingress, nat_gateway on the gateway's host end. Addresses, ports and the
/// IHL stay as they are: a reply that no entry matches is masqueraded by nat_egress, and two
/// such flows wanting the same port would make the second one's port depend on the clock.
fn send_random_replies(r: &mut NatRun, rng: &mut Rng, conns: &[(u8, u16)]) {
    let (client, target) = (r.bed.client, r.bed.target);
    for _ in 0..1500 {
        let (proto, sport) = conns[(rng.next_u64() % conns.len() as u64) as usize];
        let from = if proto == TCP { 80 } else { 53 };
        let payload: Vec<u8> = (0..rng.next_u64() % 64).map(|_| rng.next_u64() as u8).collect();
        let flags = rng.next_u64() as u8;
        let mut f = to_gateway(packet_with(proto, target, client, from, sport, flags, false, &payload));
        for _ in 0..rng.next_u64() % 3 {
            let at = (rng.next_u64() % f.len() as u64) as usize;
            let b = rng.next_u64() as u8;
            if at != 14 && !(26..38).contains(&at) {
                f[at] = b;
            }
        }
        r.send([NAT_OUT, SWITCH_FROM_WEB, NAT_GATEWAY][(rng.next_u64() % 3) as usize], &f);
    }
}
