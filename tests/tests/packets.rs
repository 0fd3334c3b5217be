//! Packet-in/packet-out tests of the TC datapath through BPF_PROG_TEST_RUN: the real program,
//! pinned by `switch up`, runs on crafted frames "arriving" on a real port; the verdict, the
//! bytes after the program, the FDB and the counters are checked. A randomised run (a fuzzer
//! in spirit) checks the invariants on thousands of arbitrary frames.
use switch_common::FDB_CAPACITY;
use switch_tests::{
    bpf::{
        SchedClassifier, TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC, frame, mac_pool, pad_for_test_run, random_frame,
        random_ipv6_frame, run_tc, tc_program,
    },
    *,
};

const BCAST: [u8; 6] = [0xff; 6];
const X: [u8; 6] = [0x02, 0, 0, 0x66, 0, 0x01];
const Y: [u8; 6] = [0x02, 0, 0, 0x66, 0, 0x02];

struct Bed {
    sb: Sandbox,
    sw: String,
    ports: Vec<(String, u32)>,
    prog: SchedClassifier,
    /// Each port's counters once the bed was made: the namespaces announced their addresses
    /// (one gratuitous ARP each) when their interfaces came up, so the tests count from here.
    base: Vec<Value>,
    /// The MAC table then: the announcing stations.
    announced: Vec<(String, String, String)>,
    /// MAC table entries added by then.
    base_added: u64,
}

fn ifindex(ifname: &str) -> u32 {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/ifindex")).unwrap().trim().parse().unwrap()
}

/// A tc switch with three ports; the frames injected here come "from" the ports' host ends.
fn bed() -> Bed {
    bed_with(&[], [false; 3])
}

/// A bed whose switch is made with `up` arguments `extra`, and whose ports have port security
/// where `secure` says so.
fn bed_with(extra: &[&str], secure: [bool; 3]) -> Bed {
    let mut sb = Sandbox::new();
    let sw = sb.switch("sw", "tc", extra);
    let ports = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            // Crafted frames come from any station: the open ports carry other MACs.
            let open: &[&str] = if secure[i] { &[] } else { &["--no-port-security"] };
            let ns = sb.port(&sw, n, &format!("10.66.0.{}/24", i + 1), open);
            let host = ns_info(&ns)["host_interface"].as_str().unwrap().to_owned();
            (ns, ifindex(&host))
        })
        .collect();
    let prog = tc_program(&format!("/sys/fs/bpf/switch/{sw}/prog_ingress")).unwrap();
    let ports: Vec<(String, u32)> = ports;
    let announced = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        ports.iter().all(|(ns, _)| port_stats(&sw, ns)["rx_packets"].as_u64() >= Some(1))
    });
    assert!(announced, "a port's namespace never announced its address");
    let base = ports.iter().map(|(ns, _)| port_stats(&sw, ns)).collect();
    let (announced, base_added) = (fdb(&sw), n(&table_stats(&sw, "fdb"), "added"));
    Bed { sb, sw, ports, prog, base, announced, base_added }
}

impl Bed {
    fn send(&self, port: usize, f: &[u8]) -> i32 {
        let out = run_tc(&self.prog, f, self.ports[port].1)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN refused a {}-byte frame ({e}): {f:02x?}", f.len()));
        assert_eq!(out.data, f, "the switch must never change a byte of a frame");
        out.retval
    }

    /// Port `port`'s counters since the bed was made.
    fn stats(&self, port: usize) -> Value {
        let mut now = port_stats(&self.sw, &self.ports[port].0);
        for (field, value) in now.as_object_mut().unwrap() {
            if let (Some(v), Some(b)) = (value.as_u64(), self.base[port][field].as_u64()) {
                *value = (v - b).into();
            }
        }
        now
    }

    /// The counters of port row `row` (`switch ports --json`), e.g. the gateway's, absolute.
    fn stats_of(&self, row: &Value) -> Value {
        let v = json(&["stats", "--switch", &self.sw]);
        let ports = v["ports"].as_array().unwrap();
        ports.iter().find(|p| p["interface"] == row["interface"]).cloned().unwrap_or_else(|| panic!("{v}"))
    }

    /// The MAC table without the entries of the ports' own announcements.
    fn learned(&self) -> Vec<(String, String, String)> {
        fdb(&self.sw).into_iter().filter(|e| !self.announced.contains(e)).collect()
    }

    fn fdb_port(&self, mac: &str) -> Option<String> {
        fdb(&self.sw).into_iter().find(|(m, _, _)| m == mac).map(|(_, ns, _)| ns)
    }
}

/// `aa:bb:cc:dd:ee:ff` as bytes.
fn mac_bytes(mac: &str) -> [u8; 6] {
    let v: Vec<u8> = mac.split(':').map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
    v.try_into().unwrap()
}

fn n(v: &Value, f: &str) -> u64 {
    v[f].as_u64().unwrap()
}

#[test]
fn learning_flooding_unicast_and_moves() {
    let bed = bed();
    let (a, b, c) = (0, 1, 2);
    // Broadcast from an unknown station: learned, flooded to b and c.
    let b0 = bed.stats(b);
    assert_eq!(bed.send(a, &frame(BCAST, X, 0x0800, 46)), TC_ACT_REDIRECT);
    assert_eq!(bed.fdb_port("02:00:00:66:00:01").as_deref(), Some(bed.ports[a].0.as_str()));
    assert_eq!(n(&bed.stats(a), "flooded"), 1);
    assert_eq!(n(&bed.stats(b), "tx_packets"), n(&b0, "tx_packets") + 1);
    assert_eq!(n(&bed.stats(c), "tx_packets"), 1);

    // Unknown unicast floods too; then Y answers from b and is learned there.
    assert_eq!(bed.send(a, &frame(Y, X, 0x0800, 46)), TC_ACT_REDIRECT);
    assert_eq!(n(&bed.stats(a), "flooded"), 2);
    assert_eq!(bed.send(b, &frame(X, Y, 0x0800, 46)), TC_ACT_REDIRECT);
    assert_eq!(n(&bed.stats(b), "flooded"), 0, "known unicast is not flooded");

    // Known unicast a -> Y goes to b only.
    let (b1, c1) = (bed.stats(b), bed.stats(c));
    assert_eq!(bed.send(a, &frame(Y, X, 0x0800, 46)), TC_ACT_REDIRECT);
    assert_eq!(n(&bed.stats(b), "tx_packets"), n(&b1, "tx_packets") + 1);
    assert_eq!(n(&bed.stats(c), "tx_packets"), n(&c1, "tx_packets"));

    // X shows up on b (a move), sending to Y, which is behind b itself: the move is learned
    // and the frame dropped, as a bridge without hairpin mode does.
    let dropped = n(&bed.stats(b), "dropped");
    assert_eq!(bed.send(b, &frame(Y, X, 0x0800, 46)), TC_ACT_SHOT);
    assert_eq!(n(&bed.stats(b), "dropped"), dropped + 1);
    assert_eq!(bed.fdb_port("02:00:00:66:00:01").as_deref(), Some(bed.ports[b].0.as_str()));
    // A move back to c is followed at once.
    assert_eq!(bed.send(c, &frame(BCAST, X, 0x0806, 28)), TC_ACT_REDIRECT);
    assert_eq!(bed.fdb_port("02:00:00:66:00:01").as_deref(), Some(bed.ports[c].0.as_str()));
    let _ = &bed.sb;
}

#[test]
fn an_entry_ages_out_exactly_at_its_boundary() {
    use aya::maps::{HashMap, Map, MapData};
    use switch_common::{FdbEntry, MacKey};
    let bed = bed();
    let ageing_ns = switch_common::DEFAULT_AGEING_SECS * 1_000_000_000;
    let data = MapData::from_pin(format!("/sys/fs/bpf/switch/{}/FDB", bed.sw)).unwrap();
    let mut fdb: HashMap<_, MacKey, FdbEntry> = HashMap::try_from(Map::from_map_data(data).unwrap()).unwrap();
    let mut last_seen = |age_ns: u64| {
        let mut e = fdb.get(&MacKey::new(X), 0).expect("X is learned");
        e.last_seen_ns = switch_tests::nat::now_ns() - age_ns;
        fdb.insert(MacKey::new(X), e, 0).unwrap();
    };
    assert_eq!(bed.send(0, &frame(BCAST, X, 0x88b5, 46)), TC_ACT_REDIRECT);
    let flooded = |bed: &Bed| n(&bed.stats(1), "flooded");
    // Just inside the ageing time: still known, unicast to a.
    last_seen(ageing_ns - 2_000_000_000);
    let before = flooded(&bed);
    assert_eq!(bed.send(1, &frame(X, Y, 0x88b5, 46)), TC_ACT_REDIRECT);
    assert_eq!(flooded(&bed), before, "an entry inside its ageing time was treated as unknown");
    // Just past it: unknown, flooded, and the entry is gone (counted as removed, not evicted).
    let removed = table_stats(&bed.sw, "fdb")["removed"].as_u64().unwrap();
    last_seen(ageing_ns + 2_000_000_000);
    assert_eq!(bed.send(1, &frame(X, Y, 0x88b5, 46)), TC_ACT_REDIRECT);
    assert_eq!(flooded(&bed), before + 1, "an expired entry was still used");
    assert_eq!(bed.fdb_port("02:00:00:66:00:01"), None);
    let t = table_stats(&bed.sw, "fdb");
    assert_eq!((t["removed"].as_u64().unwrap(), t["evicted"].as_u64().unwrap()), (removed + 1, 0), "{t}");
}

#[test]
fn invalid_frames_are_dropped_and_counted_other_protocols_switched_unchanged() {
    let bed = bed();
    let a0 = bed.stats(0);
    // Group source, zero source: dropped, not learned.
    assert_eq!(bed.send(0, &frame(BCAST, [0x01, 0, 0x5e, 0, 0, 1], 0x0800, 46)), TC_ACT_SHOT);
    assert_eq!(bed.send(0, &frame(BCAST, [0; 6], 0x0800, 46)), TC_ACT_SHOT);
    let a1 = bed.stats(0);
    assert_eq!(n(&a1, "dropped") - n(&a0, "dropped"), 2);
    assert_eq!(n(&a1, "rx_packets") - n(&a0, "rx_packets"), 2);
    assert!(bed.learned().is_empty());
    // IPv6, 802.1Q-tagged, ARP, a 17-byte runt of an unknown EtherType and a frame over the
    // 1500-byte MTU are all layer 2 to the switch: forwarded (flooded here) with every byte
    // as it was. (BPF_PROG_TEST_RUN itself refuses frames under 14 bytes, IPv4 frames without
    // a whole IP header, and frames over about a page, so those cases cannot be made here.)
    let mut vlan = frame(BCAST, X, 0x8100, 50);
    vlan[14..18].copy_from_slice(&[0x00, 0x64, 0x08, 0x00]);
    for f in [
        frame(BCAST, X, 0x86dd, 60),
        vlan,
        frame(BCAST, X, 0x0806, 28),
        frame(BCAST, X, 0x88b5, 3),
        frame(BCAST, X, 0x0800, 3000),
    ] {
        assert_eq!(bed.send(0, &f), TC_ACT_REDIRECT, "{:02x?}", &f[12..14]);
    }
    assert_eq!(n(&bed.stats(0), "malformed"), 0);
}

#[test]
fn interfaces_that_are_not_ports_are_left_alone() {
    let bed = bed();
    // lo of the host is not a port of this switch: the program steps aside.
    let before = bed.stats(0);
    let out = run_tc(&bed.prog, &frame(BCAST, X, 0x0800, 46), 1).unwrap();
    assert_eq!(out.retval, TC_ACT_UNSPEC);
    assert_eq!(bed.stats(0), before);
    assert!(bed.learned().is_empty());
}

#[test]
fn random_frames_keep_every_invariant() {
    // SWITCH_FUZZ_ITERATIONS makes the run longer (docs/tests.md).
    let iterations: usize = std::env::var("SWITCH_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    // Ports a and b carry other stations, at most LIMIT new ones each per ageing period; port
    // c has port security (bound to its MAC and 10.66.0.3).
    let bed = bed_with(&["--max-learned", &LIMIT.to_string()], [false, false, true]);
    let c_mac: [u8; 6] = mac_bytes(ns_info(&bed.ports[2].0)["mac"].as_str().unwrap());
    let mut rng = Rng(0x5eed_1234_abcd_0001 ^ std::process::id() as u64);
    // A small pool of MACs (unicast, group, zero, c's bound one) so that learning, moves,
    // known unicast, port security and drops all happen often; the rest of each frame is
    // arbitrary bytes.
    let mut pool = mac_pool();
    pool.push(c_mac);
    // IPv6 sources: c's link-local address (its only IPv6 address: the bed's ports have none
    // of their own), `::`, another station's link-local, a global address.
    let c_ll = switch_common::ipv6::link_local(c_mac);
    let sources =
        [c_ll, [0; 16], switch_common::ipv6::link_local(pool[0]), [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]];
    let mut seen = Verdicts { c_ll, ..Verdicts::default() };
    for i in 0..iterations {
        // One frame in four is IPv6 as port security parses it; the rest arbitrary bytes.
        let port = (rng.next_u64() % 3) as usize;
        let mut f =
            if i % 4 == 0 { random_ipv6_frame(&mut rng, &pool, &sources) } else { random_frame(&mut rng, &pool) };
        // From c, IPv6 mostly with c's own MAC, so that its IPv6 checks are what decides.
        if i % 4 == 0 && port == 2 && !rng.next_u64().is_multiple_of(4) {
            f[6..12].copy_from_slice(&c_mac);
        }
        pad_for_test_run(&mut f);
        seen.judge(port, &f, bed.send(port, &f), c_mac);
    }
    let Verdicts { shot, redirected, invalid_src, ipv6_from_c, ipv6_from_c_passed, .. } = seen;
    println!(
        "random frames tried: {iterations} ({redirected} forwarded, {shot} dropped; from c: {ipv6_from_c} IPv6 as \
         itself, {ipv6_from_c_passed} passed)"
    );
    the_fdb_holds_valid_stations_within_their_limit(&bed);
    // Counters add up: every frame was received once; drops cover at least the invalid ones.
    let stats: Vec<Value> = (0..3).map(|p| bed.stats(p)).collect();
    let rx: u64 = stats.iter().map(|s| n(s, "rx_packets")).sum();
    let dropped: u64 = stats.iter().map(|s| n(s, "dropped")).sum();
    assert_eq!(rx, iterations as u64);
    assert_eq!(dropped, shot, "every SHOT verdict is counted as a drop");
    assert!(dropped >= invalid_src);
    // Malformed: only IPv6 from the secured port whose upper layer could not be found.
    assert_eq!(n(&stats[0], "malformed") + n(&stats[1], "malformed"), 0);
    assert!(n(&stats[2], "malformed") <= ipv6_from_c);
    let reasons: u64 = stats
        .iter()
        .map(|s| {
            ["malformed", "spoofed_mac", "spoofed_ip", "spoofed_arp", "spoofed_nd", "router_guard", "mac_limit"]
                .iter()
                .map(|r| n(s, r))
                .sum::<u64>()
        })
        .sum();
    assert!(reasons + invalid_src <= dropped, "more drops by reason than drops");
    assert!(n(&stats[2], "spoofed_mac") > 0 && n(&stats[0], "mac_limit") > 0, "a path never taken: {stats:?}");
    if iterations >= 3000 {
        let c = &stats[2];
        let ipv6_paths = ["spoofed_ip", "spoofed_nd", "router_guard", "malformed"].map(|r| n(c, r));
        assert!(ipv6_paths.iter().all(|&v| v > 0) && ipv6_from_c_passed > 0, "an IPv6 path never taken: {c}");
    }
    the_fdb_accounts_for_every_entry(&bed);
}

/// The learning limit of the open ports of `random_frames_keep_every_invariant`.
const LIMIT: usize = 64;

/// The verdicts of a random run.
#[derive(Default)]
struct Verdicts {
    shot: u64,
    redirected: u64,
    /// Frames with a source no station may have (group or zero).
    invalid_src: u64,
    /// Port c's link-local address: its only IPv6 address.
    c_ll: [u8; 16],
    /// IPv6 frames from c with c's own MAC, and how many of them were forwarded.
    ipv6_from_c: u64,
    ipv6_from_c_passed: u64,
}

impl Verdicts {
    /// Checks and counts `verdict` for frame `f` from `port`: forwarded only from a valid
    /// source, and from port c (2, bound to `c_mac` and 10.66.0.3) only as itself.
    fn judge(&mut self, port: usize, f: &[u8], verdict: i32, c_mac: [u8; 6]) {
        let src_valid = f[6] & 1 == 0 && f[6..12].iter().any(|&b| b != 0);
        match verdict {
            TC_ACT_REDIRECT => {
                assert!(src_valid, "forwarded a frame with source {:02x?}", &f[6..12]);
                // Port security: c sends only as itself (IPv4 from its address or 0.0.0.0),
                // and nobody else may use its MAC.
                assert_eq!(port == 2, f[6..12] == c_mac, "port {port} forwarded source {:02x?}", &f[6..12]);
                if port == 2 && f[12..14] == [0x08, 0x00] {
                    assert!(
                        f[26..30] == [10, 66, 0, 3] || f[26..30] == [0; 4],
                        "c forwarded IPv4 from {:?}",
                        &f[26..30]
                    );
                }
                if port == 2 && f[12..14] == [0x86, 0xdd] && f.len() >= 54 {
                    self.ipv6_from_c_passed += 1;
                    self.c_sends_ipv6_only_as_itself(f);
                }
                self.redirected += 1;
            }
            TC_ACT_SHOT => self.shot += 1,
            v => panic!("unexpected verdict {v} for {:02x?}", &f[..14]),
        }
        self.invalid_src += u64::from(!src_valid);
        self.ipv6_from_c += u64::from(port == 2 && f[6..12] == c_mac && f[12..14] == [0x86, 0xdd]);
    }

    /// What c forwarded of IPv6 (a whole fixed header): from its link-local address, or from
    /// `::` only as ICMPv6; never a router advertisement or redirect right after the fixed
    /// header, never an advertisement for another target there.
    fn c_sends_ipv6_only_as_itself(&self, f: &[u8]) {
        let src = &f[22..38];
        assert!(src == self.c_ll || src == [0; 16], "c forwarded IPv6 from {src:02x?}: {f:02x?}");
        if f[20] != 58 || f.len() < 58 {
            assert!(src != [0; 16] || f[20] != 17 && f[20] != 6, "c forwarded UDP/TCP from ::: {f:02x?}");
            return;
        }
        let kind = f[54];
        assert!(kind != 134 && kind != 137, "c forwarded ICMPv6 type {kind}: {f:02x?}");
        if kind == 136 && f.len() >= 78 {
            assert_eq!(&f[62..78], self.c_ll, "c advertised another target: {f:02x?}");
        }
    }
}

/// The FDB only holds valid unicast stations, on ports of this switch; and within one ageing
/// period no open port holds more than its share, and c holds only its own MAC.
fn the_fdb_holds_valid_stations_within_their_limit(bed: &Bed) {
    let ports: Vec<&str> = bed.ports.iter().map(|(ns, _)| ns.as_str()).collect();
    for (mac, ns, kind) in fdb(&bed.sw) {
        let first = u8::from_str_radix(&mac[..2], 16).unwrap();
        assert!(first & 1 == 0 && mac != "00:00:00:00:00:00", "learned {mac}");
        assert!(ports.contains(&ns.as_str()) && kind == "dynamic");
    }
    for (p, (ns, _)) in bed.ports.iter().enumerate() {
        let learned = fdb(&bed.sw).iter().filter(|(_, owner, _)| owner == ns).count();
        assert!(learned <= if p == 2 { 1 } else { LIMIT }, "port {p} learned {learned} stations");
    }
}

/// The table's counters account for every entry: nothing is evicted while fewer stations
/// than the table holds were learned (with the learning limit here, any run shorter than an
/// ageing period; `a_full_fdb_evicts_and_keeps_forwarding` fills the table), and when more
/// were, the evictions are exactly what is missing.
fn the_fdb_accounts_for_every_entry(bed: &Bed) {
    let t = table_stats(&bed.sw, "fdb");
    let present = n(&t, "entries") + n(&t, "expired");
    if n(&t, "added") <= u64::from(FDB_CAPACITY) {
        assert_eq!(n(&t, "evicted"), 0, "{t}");
    } else {
        assert!(present > u64::from(FDB_CAPACITY) * 9 / 10, "a full table kept its room: {t}");
    }
    assert_eq!(present + n(&t, "evicted"), n(&t, "added") - n(&t, "removed"), "{t}");
    assert_eq!(n(&t, "entries") as usize, fdb(&bed.sw).len(), "{t}");
}

#[test]
fn a_full_fdb_evicts_and_keeps_forwarding() {
    // One port learns them all: no learning limit (it is what keeps a port from doing this).
    let bed = bed_with(&["--max-learned", "0"], [false; 3]);
    // More stations than the table holds (16 384): the least recently used are evicted,
    // learning and forwarding go on, nothing fails.
    let stations = 17_000u32;
    for i in 0..stations {
        let [_, b1, b2, b3] = i.to_be_bytes();
        let src = [0x02, 0x01, 0, b1, b2, b3];
        assert_eq!(bed.send(0, &frame(BCAST, src, 0x88b5, 46)), TC_ACT_REDIRECT, "station {i}");
    }
    let table = fdb(&bed.sw);
    assert!(table.len() <= 16_384 && table.len() > 15_000, "{} entries", table.len());
    // The most recent station is known: a frame to it from b is unicast, not flooded.
    let [_, b1, b2, b3] = (stations - 1).to_be_bytes();
    let flooded = n(&bed.stats(1), "flooded");
    assert_eq!(bed.send(1, &frame([0x02, 0x01, 0, b1, b2, b3], Y, 0x88b5, 46)), TC_ACT_REDIRECT);
    assert_eq!(n(&bed.stats(1), "flooded"), flooded, "a recent station was forgotten");
    assert_eq!(n(&bed.stats(0), "rx_packets"), u64::from(stations));
    // The counters say the table filled up and evicted: every station (and Y) was added,
    // none deleted, and what is missing was evicted.
    let t = table_stats(&bed.sw, "fdb");
    let (entries, added, removed, evicted) = (n(&t, "entries"), n(&t, "added"), n(&t, "removed"), n(&t, "evicted"));
    assert_eq!((added - bed.base_added, removed, n(&t, "capacity")), (u64::from(stations) + 1, 0, 16_384), "{t}");
    assert!(entries <= 16_384 && evicted >= added - 16_384, "{t}");
    assert_eq!(entries + evicted, added, "{t}");
}

/// A Service's flow (`helpers/host_flows.rs`): a packet the host sends into the segment from
/// a station (a's address, translated to b by the host) teaches the switch that b's answers
/// to a go back through the host: they leave for the gateway port with the gateway's MAC.
/// Packets from the gateway's own address or from outside the segment teach nothing; a's own
/// packet straight to b for the same ports ends the flow.
#[test]
fn answers_of_flows_the_host_translated_go_back_through_it() {
    use switch_tests::ipv4::{TCP, UDP, packet};
    let bed = bed_with(&["--gateway", "10.66.0.254/24"], [false; 3]);
    let rows = json(&["ports", "--switch", &bed.sw]);
    let gw = rows.as_array().unwrap().iter().find(|r| r["kind"] == "gateway").unwrap().clone();
    let (gw_if, gw_mac) = (ifindex(gw["interface"].as_str().unwrap()), mac_bytes(gw["mac"].as_str().unwrap()));
    let (mac_a, mac_b) = (mac_bytes(&ns_mac(&bed.ports[0].0)), mac_bytes(&ns_mac(&bed.ports[1].0)));
    let (a, b) = ([10, 66, 0, 1], [10, 66, 0, 2]);
    let with_macs = |mut f: Vec<u8>, dst: [u8; 6], src: [u8; 6]| {
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f
    };
    let run = |ifindex: u32, f: &[u8]| run_tc(&bed.prog, f, ifindex).unwrap();
    let host_flows = || n(&table_stats(&bed.sw, "host_flows"), "entries");
    for proto in [TCP, UDP] {
        // The host's packet a -> b (translated from a's packet to a Service): noted.
        let from_host = with_macs(packet(proto, a, b, 40_000, 8080, 0x02, false), mac_b, gw_mac);
        assert_eq!(run(gw_if, &from_host).retval, TC_ACT_REDIRECT);
        assert_eq!(host_flows(), 1);
        // b's answer to a: to the gateway, its destination MAC the gateway's, nothing else
        // changed; counted as sent to the gateway, not to a.
        let answer = with_macs(packet(proto, b, a, 8080, 40_000, 0x12, false), mac_a, mac_b);
        let (gw_tx, a_tx) = (n(&bed.stats_of(&gw), "tx_packets"), n(&bed.stats(0), "tx_packets"));
        let out = run(bed.ports[1].1, &answer);
        assert_eq!(out.retval, TC_ACT_REDIRECT);
        assert_eq!(out.data[..6], gw_mac, "not addressed to the gateway");
        assert_eq!(out.data[6..], answer[6..], "more than the destination MAC changed");
        assert_eq!(n(&bed.stats_of(&gw), "tx_packets"), gw_tx + 1);
        assert_eq!(n(&bed.stats(0), "tx_packets"), a_tx);
        // Another flow between the same two (other ports) is switched as always.
        let other = with_macs(packet(proto, b, a, 8081, 40_000, 0x12, false), mac_a, mac_b);
        assert_eq!(run(bed.ports[1].1, &other).data, other);
        // a's own packet straight to b on those ports: the flow is over.
        let direct = with_macs(packet(proto, a, b, 40_000, 8080, 0x02, false), mac_b, mac_a);
        assert_eq!(run(bed.ports[0].1, &direct).data, direct);
        assert_eq!(host_flows(), 0);
        assert_eq!(run(bed.ports[1].1, &answer).data, answer, "a stale flow still diverts");
    }
    // From the gateway's own address (the host's connections) or from outside the segment (a
    // forwarded connection routed in): nothing to note.
    for src in [[10, 66, 0, 254], [198, 51, 100, 7]] {
        let f = with_macs(packet(TCP, src, b, 40_000, 8080, 0x02, false), mac_b, gw_mac);
        assert_eq!(run(gw_if, &f).retval, TC_ACT_REDIRECT);
        assert_eq!(host_flows(), 0, "noted a packet from {src:?}");
    }
}
