//! Packet-in/packet-out tests of the port-forwarding programs through BPF_PROG_TEST_RUN: the
//! pinned `nat_ingress`/`nat_egress` run on crafted IPv4 frames "arriving" on a real uplink;
//! addresses, ports and checksums of the output are checked independently here, and the
//! connection table is read (and aged by hand) through its pin.
use aya::maps::HashMap;
use switch_common::{
    CtEntry, CtKey,
    nat::{
        CT_CAPACITY, CT_CLOSING, CT_DNAT, CT_ESTABLISHED, CT_F_ANSWER, CT_F_UNREPLIED, CT_HALF_OPEN, CT_SNAT,
        CT_TIMEOUT_UNREPLIED_NS, CT_UDP, CT_UNREPLIED_CAPACITY, timeout_ns,
    },
};
use switch_tests::{
    bpf::{SchedClassifier, pad_for_test_run, run_tc, run_tc_routed},
    ipv4::{
        ACK, ECHO_REPLY, ECHO_REQUEST, FIN, ICMP, RST, SEQ, SYN, Seen, TCP, UDP, acking, csum_add, fold, icmp_echo,
        icmp_error, inspect, inspect_error, inspect_icmp, l4_checksum_valid, packet, packet_with, with_ip_options,
        zeroing_payload,
    },
    nat::{NatBed, ct_key, now_ns},
    *,
};

/// A frame from outside through `nat_ingress`: what came out.
fn inbound(bed: &NatBed, f: &[u8]) -> Seen {
    inspect(&run_tc(&bed.nat_in, f, bed.ifindex).unwrap().data)
}

/// A frame leaving through the uplink, through `nat_egress`.
fn outbound(bed: &NatBed, f: &[u8]) -> Seen {
    inspect(&run_tc(&bed.nat_out, f, bed.ifindex).unwrap().data)
}

/// The first port masquerade uses: just above the host's ephemeral range.
fn masquerade_first_port() -> u16 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    range.split_whitespace().nth(1).unwrap().parse::<u16>().unwrap() + 1
}

/// TCX's "next" verdict (TC_ACT_UNSPEC): what the uplink's programs return for a packet that
/// is not their switch's, so that the next switch's program on the uplink still sees it.
const TC_NEXT: i32 = -1;

/// Asserts that `f` comes out of `prog` exactly as it went in, passed on to the next program.
fn untouched(bed: &NatBed, prog: &SchedClassifier, f: &[u8], why: &str) {
    let out = run_tc(prog, f, bed.ifindex).unwrap();
    assert_eq!(out.data, f, "{why}: the packet was changed");
    assert_eq!(out.retval, TC_NEXT, "{why}: passed on (TCX next) expected");
}

#[test]
fn dnat_and_reverse_translation_byte_for_byte() {
    let bed = NatBed::new(110, 11080);
    let (client, uplink_ip, target, port) = (bed.client, bed.uplink_ip, bed.target, bed.tcp_port);

    // A SYN from outside to the forwarded port: destination rewritten, checksums right.
    let s = inbound(&bed, &packet(TCP, client, uplink_ip, 40000, port, SYN, false));
    assert_eq!((s.src, s.dst, s.sport, s.dport), (client, target, 40000, 80), "SYN not translated");
    // The reply leaving through the uplink gets the uplink address and port back.
    let s = outbound(&bed, &packet(TCP, target, client, 80, 40000, SYN | ACK, false));
    assert_eq!((s.src, s.dst, s.sport, s.dport), (uplink_ip, client, port, 40000), "reply not translated back");
    // The connection is in the table, and later packets of it follow the table.
    let rows = json(&["forward", "list", "--switch", &bed.sw]);
    let tcp = rows.as_array().unwrap().iter().find(|r| r["proto"] == "tcp").unwrap().clone();
    assert_eq!((tcp["connections"].as_u64(), tcp["active"].as_u64()), (Some(1), Some(1)), "{tcp}");
    assert_eq!(inbound(&bed, &packet(TCP, client, uplink_ip, 40000, port, ACK, false)).dst, target);

    // Not a new connection (an ACK without a table entry), another port, a fragment, or a
    // packet to an address that is not the uplink's: left exactly as they were.
    let stray_ack = packet(TCP, client, uplink_ip, 40001, port, ACK, false);
    let other_port = packet(TCP, client, uplink_ip, 40002, port + 2, SYN, false);
    let mut fragment = packet(TCP, client, uplink_ip, 40003, port, SYN, false);
    fragment[20] |= 0x20; // more fragments
    let other_addr = packet(TCP, client, [172, 31, 110, 9], 40004, port, SYN, false);
    for (f, why) in
        [(stray_ack, "stray ACK"), (other_port, "other port"), (fragment, "fragment"), (other_addr, "other address")]
    {
        untouched(&bed, &bed.nat_in, &f, why);
    }

    // UDP: with a checksum (updated) and with none (zero stays zero).
    for zero in [false, true] {
        let sport = if zero { 50001 } else { 50000 };
        let s = inbound(&bed, &packet(UDP, client, uplink_ip, sport, bed.udp_port, 0, zero));
        assert_eq!((s.dst, s.dport), (target, 53));
        assert_eq!(s.l4_csum == 0, zero, "UDP checksum zero-ness changed");
        let s = outbound(&bed, &packet(UDP, target, client, 53, sport, 0, zero));
        assert_eq!((s.src, s.sport), (uplink_ip, bed.udp_port));
        assert_eq!(s.l4_csum == 0, zero);
    }
}

#[test]
fn every_malformed_class_is_left_alone_and_options_are_handled() {
    let bed = NatBed::new(116, 11680);
    let (client, uplink_ip, target, port) = (bed.client, bed.uplink_ip, bed.target, bed.tcp_port);
    let cases = bed.malformed_syns();
    for (why, f) in &cases {
        untouched(&bed, &bed.nat_in, f, why);
    }
    assert_eq!(table_stats(&bed.sw, "conntrack")["added"], 0, "a malformed packet made a table entry");

    // IPv4 options: the ports are found after them and the translation is right.
    let s = inbound(&bed, &with_ip_options(&bed.syn(41010)));
    assert_eq!((s.src, s.dst, s.sport, s.dport), (client, target, 41010, 80));
    // A jumbo frame (bigger than the MTU, as GRO makes them) translates like any other.
    let big = packet_with(TCP, client, uplink_ip, 41011, port, SYN, false, &[7; 3000]);
    assert_eq!(inbound(&bed, &big).dst, target);
}

#[test]
fn checksum_edges_zero_and_ffff() {
    let bed = NatBed::new(113, 11380);
    let (client, uplink_ip, target) = (bed.client, bed.uplink_ip, bed.target);
    let udp_port = bed.udp_port;

    // UDP whose checksum computes to zero after translation: it must go out as 0xffff, as
    // zero would tell the receiver "no checksum".
    let payload = zeroing_payload(UDP, client, target, 50010, 53, 0);
    let s = inbound(&bed, &packet_with(UDP, client, uplink_ip, 50010, udp_port, 0, false, &payload));
    assert_eq!((s.dst, s.dport, s.l4_csum), (target, 53, 0xffff), "a computed zero must be sent as 0xffff");
    // The same on the way back (source translation).
    let payload = zeroing_payload(UDP, uplink_ip, client, udp_port, 50010, 0);
    let s = outbound(&bed, &packet_with(UDP, target, client, 53, 50010, 0, false, &payload));
    assert_eq!((s.src, s.sport, s.l4_csum), (uplink_ip, udp_port, 0xffff));

    // UDP arriving with 0xffff (its checksum computed to zero): translated and still valid,
    // and not turned into "no checksum".
    let payload = zeroing_payload(UDP, client, uplink_ip, 50011, udp_port, 0);
    let f = packet_with(UDP, client, uplink_ip, 50011, udp_port, 0, false, &payload);
    assert_eq!(&f[40..42], &[0xff, 0xff], "test frame should carry 0xffff");
    let s = inbound(&bed, &f);
    assert_eq!((s.dst, s.dport), (target, 53));
    assert_ne!(s.l4_csum, 0);

    // TCP with a checksum of zero before or after translation: valid either way (`inspect`
    // sums the whole segment; 0x0000 and 0xffff are both accepted by a receiver).
    let payload = zeroing_payload(TCP, client, target, 40010, 80, SYN);
    let s = inbound(&bed, &packet_with(TCP, client, uplink_ip, 40010, bed.tcp_port, SYN, false, &payload));
    assert_eq!((s.dst, s.dport), (target, 80));
    let payload = zeroing_payload(TCP, client, uplink_ip, 40011, bed.tcp_port, SYN);
    let f = packet_with(TCP, client, uplink_ip, 40011, bed.tcp_port, SYN, false, &payload);
    assert_eq!(&f[50..52], &[0, 0], "test frame should carry a zero TCP checksum");
    assert_eq!(inbound(&bed, &f).dst, target);
}

/// Both connection tables of a bed: answered connections and those waiting for an answer.
struct Tables {
    answered: HashMap<aya::maps::MapData, CtKey, CtEntry>,
    unreplied: HashMap<aya::maps::MapData, CtKey, CtEntry>,
}

impl Tables {
    fn of(bed: &NatBed) -> Self {
        Self { answered: bed.conntrack(), unreplied: bed.unreplied() }
    }

    /// The entry the datapath finds for `k` (as `ct_lookup`: a live answered one, else one
    /// waiting for an answer, else an expired answered one) and whether it is answered.
    fn get(&self, k: &CtKey) -> (CtEntry, bool) {
        let answered = self.answered.get(k, 0).ok();
        if let Some(e) = answered.filter(|e| !e.is_expired(now_ns())) {
            return (e, true);
        }
        match (self.unreplied.get(k, 0).ok(), answered) {
            (Some(e), _) => (e, false),
            (None, Some(e)) => (e, true),
            (None, None) => panic!("no table entry {k:?}"),
        }
    }

    fn pair(&self, [a, b]: [CtKey; 2]) -> (CtEntry, CtEntry) {
        (self.get(&a).0, self.get(&b).0)
    }

    fn states(&self, keys: [CtKey; 2]) -> (u32, u32) {
        let (a, b) = self.pair(keys);
        (a.state, b.state)
    }

    /// Moves the last-seen time of both entries `age_ns` into the past, in whichever table.
    fn age(&mut self, keys: [CtKey; 2], age_ns: u64) {
        for k in keys {
            for map in [&mut self.answered, &mut self.unreplied] {
                if let Ok(mut e) = map.get(&k, 0) {
                    e.last_seen_ns = now_ns() - age_ns;
                    map.insert(k, e, 0).unwrap();
                }
            }
        }
    }
}

/// `switch tables` counter `field` of `table`.
fn counter(bed: &NatBed, table: &str, field: &str) -> u64 {
    table_stats(&bed.sw, table)[field].as_u64().unwrap()
}

/// Every entry of both tables is accounted for: added = live + expired + removed + evicted,
/// and nothing was evicted.
fn accounted(bed: &NatBed) {
    for table in ["conntrack", "unreplied"] {
        let t = table_stats(&bed.sw, table);
        let n = |f: &str| t[f].as_u64().unwrap();
        assert_eq!((n("evicted"), n("added")), (0, n("entries") + n("expired") + n("removed")), "{table}: {t}");
    }
}

#[test]
fn connection_table_follows_tcp_states_and_times_out() {
    let bed = NatBed::new(111, 11180);
    let mut ct = Tables::of(&bed);
    a_handshake_is_answered_by_its_last_step(&bed, &ct);
    a_fin_closes_and_the_dead_entries_are_replaced(&bed, &mut ct);
    // RST from the server: closing.
    let (target, uplink_ip) = (bed.target, bed.uplink_ip);
    assert_eq!(inbound(&bed, &bed.syn(40001)).dst, target);
    assert_eq!(outbound(&bed, &bed.from_server(40001, SYN | ACK)).src, uplink_ip);
    assert_eq!(outbound(&bed, &bed.from_server(40001, RST)).src, uplink_ip);
    assert_eq!(ct.states(bed.keys(40001)), (CT_CLOSING, CT_CLOSING));
    tcp_timeouts_hold_to_their_boundary(&bed, &mut ct);
    udp_has_its_own_state_and_timeout(&bed, &mut ct);

    // Reading changes nothing: the dead entries stay (shown as expired) until a packet reuses
    // them or the table needs their room; the counters account for every entry.
    json(&["forward", "list", "--switch", &bed.sw]);
    let t = table_stats(&bed.sw, "conntrack");
    assert!(t["expired"].as_u64().unwrap() >= 2, "{t}");
    assert_eq!(table_stats(&bed.sw, "conntrack"), t, "reading the table changed it");
    accounted(&bed);
}

/// SYN, SYN-ACK, ACK of the client's port 40000: waiting for an answer until the handshake's
/// last step, then answered and established.
fn a_handshake_is_answered_by_its_last_step(bed: &NatBed, ct: &Tables) {
    let (uplink_ip, target, port) = (bed.uplink_ip, bed.target, bed.tcp_port);
    // SYN: both directions recorded as waiting for an answer, half-open, translating to the
    // target and back; the server's direction is the answering one.
    let before = now_ns();
    assert_eq!(inbound(bed, &bed.syn(40000)).dst, target);
    let [o, r] = bed.keys(40000);
    let ((oe, answered), (re, _)) = (ct.get(&o), ct.get(&r));
    assert!(!answered, "a SYN is not an answered connection");
    assert_eq!(
        (oe.state, oe.nat, oe.flags, oe.addr, oe.port),
        (CT_HALF_OPEN, CT_DNAT, CT_F_UNREPLIED, u32::from_ne_bytes(target), 80)
    );
    assert_eq!(
        (re.state, re.nat, re.flags, re.addr, re.port),
        (CT_HALF_OPEN, CT_SNAT, CT_F_ANSWER | CT_F_UNREPLIED, u32::from_ne_bytes(uplink_ip), port)
    );
    // The coarse clock may lag CLOCK_MONOTONIC by a tick.
    assert!(oe.last_seen_ns + 20_000_000 >= before, "last seen {} before {before}", oe.last_seen_ns);
    // A retransmitted SYN follows the entry: nothing new is added, nothing is answered.
    assert_eq!(inbound(bed, &bed.syn(40000)).dst, target);
    assert_eq!((counter(bed, "unreplied", "added"), counter(bed, "conntrack", "added")), (2, 0));
    assert_eq!(ct.states(bed.keys(40000)), (CT_HALF_OPEN, CT_HALF_OPEN));
    // SYN-ACK from the server: established, but not answered yet: the client may be a
    // spoofed address that never sees it. An ACK that does not acknowledge it changes nothing.
    assert_eq!(outbound(bed, &bed.from_server(40000, SYN | ACK)).src, uplink_ip);
    assert!(!ct.get(&o).1 && !ct.get(&r).1, "a SYN-ACK alone moved the connection");
    assert_eq!(ct.states(bed.keys(40000)), (CT_ESTABLISHED, CT_ESTABLISHED));
    assert_eq!(inbound(bed, &acking(bed.from_client(40000, ACK), SEQ + 5_000_000)).dst, target);
    assert!(!ct.get(&o).1, "an ACK of something else completed the handshake");
    // The client's ACK of the SYN-ACK: answered, both entries move to CONNTRACK.
    assert_eq!(inbound(bed, &acking(bed.from_client(40000, ACK), SEQ + 1)).dst, target);
    assert!(ct.get(&o).1 && ct.get(&r).1, "the handshake's last step did not move the connection");
    assert_eq!((counter(bed, "conntrack", "added"), counter(bed, "unreplied", "removed")), (2, 2));
    assert_eq!(ct.states(bed.keys(40000)), (CT_ESTABLISHED, CT_ESTABLISHED));
    assert_eq!(ct.pair(bed.keys(40000)).0.flags & CT_F_UNREPLIED, 0);
}

/// The established connection of port 40000 closes with a FIN, dies past the closing timeout,
/// and starts over with a new SYN.
fn a_fin_closes_and_the_dead_entries_are_replaced(bed: &NatBed, ct: &mut Tables) {
    let (uplink_ip, target) = (bed.uplink_ip, bed.target);
    // FIN from the client: closing, both directions.
    assert_eq!(inbound(bed, &bed.from_client(40000, FIN | ACK)).dst, target);
    assert_eq!(ct.states(bed.keys(40000)), (CT_CLOSING, CT_CLOSING));
    // Past the closing timeout the entries are dead: a later segment from outside passes
    // untranslated, and one from the server never leaves with its private address: it is
    // masqueraded as a new connection, from a port the host's own sockets never use...
    ct.age(bed.keys(40000), timeout_ns(CT_CLOSING) + 2_000_000_000);
    untouched(bed, &bed.nat_in, &bed.from_client(40000, ACK), "segment of an expired connection");
    let out = outbound(bed, &bed.from_server(40000, ACK));
    assert_eq!(out.src, uplink_ip, "the reply of an expired connection left with its private source");
    assert!(out.sport >= masquerade_first_port(), "masqueraded from port {}", out.sport);
    // ...and a new SYN on the same addresses and ports starts over.
    assert_eq!(inbound(bed, &bed.syn(40000)).dst, target);
    assert_eq!(ct.states(bed.keys(40000)), (CT_HALF_OPEN, CT_HALF_OPEN));
}

/// Timeouts at their boundary: just inside, the connection still translates; just past it, it
/// does not. The clock must have run longer than the timeout to age an entry.
fn tcp_timeouts_hold_to_their_boundary(bed: &NatBed, ct: &mut Tables) {
    let (uplink_ip, target) = (bed.uplink_ip, bed.target);
    let established = |sport: u16| {
        assert_eq!(inbound(bed, &bed.syn(sport)).dst, target);
        assert_eq!(outbound(bed, &bed.from_server(sport, SYN | ACK)).src, uplink_ip);
        assert_eq!(inbound(bed, &acking(bed.from_client(sport, ACK), SEQ + 1)).dst, target);
    };
    // A handshake the client never completes lives the unanswered timeout, not the state's.
    for (sport, state, open) in [(40002, CT_HALF_OPEN, false), (40003, CT_ESTABLISHED, true)] {
        let timeout = if open { timeout_ns(state) } else { CT_TIMEOUT_UNREPLIED_NS };
        if now_ns() < timeout + 10_000_000_000 {
            eprintln!("skipping the {state} timeout: the machine has been up less than {} s", timeout / 1_000_000_000);
            continue;
        }
        if open {
            established(sport)
        } else {
            assert_eq!(inbound(bed, &bed.syn(sport)).dst, target)
        }
        assert_eq!(ct.states(bed.keys(sport)), (state, state));
        ct.age(bed.keys(sport), timeout - 2_000_000_000);
        assert_eq!(inbound(bed, &bed.from_client(sport, ACK)).dst, target, "state {state} expired early");
        ct.age(bed.keys(sport), timeout + 2_000_000_000);
        untouched(bed, &bed.nat_in, &bed.from_client(sport, ACK), "segment after the timeout");
    }
}

/// UDP: its own state and timeout; the first answer moves it to the answered table.
/// Unanswered, it lives the unanswered timeout.
fn udp_has_its_own_state_and_timeout(bed: &NatBed, ct: &mut Tables) {
    let (client, uplink_ip, target) = (bed.client, bed.uplink_ip, bed.target);
    let query = packet(UDP, client, uplink_ip, 50000, bed.udp_port, 0, false);
    assert_eq!(inbound(bed, &query).dst, target);
    let udp_keys = [ct_key(UDP, client, uplink_ip, 50000, bed.udp_port), ct_key(UDP, target, client, 53, 50000)];
    assert_eq!(ct.states(udp_keys), (CT_UDP, CT_UDP));
    ct.age(udp_keys, CT_TIMEOUT_UNREPLIED_NS - 2_000_000_000);
    assert_eq!(outbound(bed, &packet(UDP, target, client, 53, 50000, 0, false)).src, uplink_ip);
    assert!(ct.get(&udp_keys[0]).1, "the answer did not move the UDP flow");
    ct.age(udp_keys, timeout_ns(CT_UDP) + 2_000_000_000);
    let out = outbound(bed, &packet(UDP, target, client, 53, 50000, 0, false));
    assert_eq!(out.src, uplink_ip, "a reply after the UDP timeout left with its private source");
    assert!(out.sport >= masquerade_first_port(), "masqueraded from port {}", out.sport);
}

/// The two directions of a connection live and die together: a refresh of one refreshes
/// the other, and one the LRU took is made again from the other.
#[test]
fn a_lost_half_of_a_connection_is_made_again() {
    let bed = NatBed::new(123, 12380);
    let mut ct = Tables::of(&bed);
    let (client, uplink_ip, target, port) = (bed.client, bed.uplink_ip, bed.target, bed.tcp_port);
    assert_eq!(inbound(&bed, &packet(TCP, client, uplink_ip, 41000, port, SYN, false)).dst, target);
    assert_eq!(outbound(&bed, &packet(TCP, target, client, 80, 41000, SYN | ACK, false)).src, uplink_ip);
    let ack = acking(packet(TCP, client, uplink_ip, 41000, port, ACK, false), SEQ + 1);
    assert_eq!(inbound(&bed, &ack).dst, target);
    let [o, r] = [ct_key(TCP, client, uplink_ip, 41000, port), ct_key(TCP, target, client, 80, 41000)];
    // The reply direction is lost (as an eviction would), the client's is due for a refresh.
    ct.answered.remove(&r).unwrap();
    ct.age([o, o], 5_000_000_000);
    assert_eq!(inbound(&bed, &packet(TCP, client, uplink_ip, 41000, port, ACK, false)).dst, target);
    let (re, answered) = ct.get(&r);
    assert!(answered, "the lost half was not made again");
    assert_eq!((re.nat, re.addr, re.port, re.state), (CT_SNAT, u32::from_ne_bytes(uplink_ip), port, CT_ESTABLISHED));
    assert_eq!(outbound(&bed, &packet(TCP, target, client, 80, 41000, ACK, false)).src, uplink_ip);
    // A refresh of one direction refreshes the other: a one-way stream keeps both alive.
    ct.age([o, r], 30_000_000_000);
    assert_eq!(inbound(&bed, &packet(TCP, client, uplink_ip, 41000, port, ACK, false)).dst, target);
    let ((oe, _), (re, _)) = (ct.get(&o), ct.get(&r));
    assert!(re.last_seen_ns + 1_000_000_000 >= oe.last_seen_ns, "the other half was not refreshed");
}

/// A flood of new connections (SYNs from many spoofed clients) fills only the budget of
/// connections waiting for an answer: an established connection stays, idle as it is.
#[test]
fn a_flood_of_new_connections_never_evicts_an_answered_one() {
    let bed = NatBed::new(112, 11280);
    let (uplink_ip, target, port) = (bed.uplink_ip, bed.target, bed.tcp_port);
    let (client, old) = (bed.client, 39000);
    assert_eq!(inbound(&bed, &packet(TCP, client, uplink_ip, old, port, SYN, false)).dst, target);
    assert_eq!(outbound(&bed, &packet(TCP, target, client, 80, old, SYN | ACK, false)).src, uplink_ip);
    assert_eq!(inbound(&bed, &acking(packet(TCP, client, uplink_ip, old, port, ACK, false), SEQ + 1)).dst, target);
    // Two entries per connection: this many would overfill even the answered connections'
    // table (which a single table for both kinds would have evicted the idle one from).
    let connections = CT_CAPACITY / 2 + 500;
    let spoofed = |i: u32| [100, 64 + (i >> 16) as u8, (i >> 8) as u8, i as u8];
    for i in 0..connections {
        let s = inbound(&bed, &packet(TCP, spoofed(i), uplink_ip, 40000, port, SYN, false));
        assert_eq!((s.dst, s.dport), (target, 80), "connection {i} not translated");
    }
    // The established connection still translates both ways.
    assert_eq!(inbound(&bed, &packet(TCP, client, uplink_ip, old, port, ACK, false)).dst, target);
    let s = outbound(&bed, &packet(TCP, target, client, 80, old, ACK, false));
    assert_eq!((s.src, s.sport), (uplink_ip, port), "the established connection lost its entry");
    // The newest new connections are all there: their answers translate back (and, with
    // nobody to acknowledge them, leave them unanswered).
    for i in connections - 100..connections {
        let s = outbound(&bed, &packet(TCP, target, spoofed(i), 80, 40000, SYN | ACK, false));
        assert_eq!((s.src, s.sport), (uplink_ip, port), "reply of connection {i}");
    }
    // The counters say the unreplied budget filled and evicted, and nothing else did.
    let t = table_stats(&bed.sw, "unreplied");
    let n = |f: &str| t[f].as_u64().unwrap();
    assert_eq!((n("added"), n("capacity")), (u64::from(connections + 1) * 2, u64::from(CT_UNREPLIED_CAPACITY)), "{t}");
    assert!(n("evicted") >= u64::from(connections * 2 - CT_UNREPLIED_CAPACITY), "{t}");
    assert_eq!(n("entries") + n("expired") + n("evicted") + n("removed"), n("added"), "{t}");
    assert_eq!(switch_drops(&bed.sw)["unreplied_evicted"].as_u64().unwrap(), n("evicted"));
    let c = table_stats(&bed.sw, "conntrack");
    assert_eq!((c["added"].as_u64(), c["evicted"].as_u64()), (Some(2), Some(0)), "{c}");
}

/// What a translation may touch: MACs and TTL (the fast path routes), the IPv4 checksum, one
/// address (destination inbound, source outbound), its port and the L4 checksum.
fn may_change(f: &[u8], inbound: bool) -> Vec<usize> {
    let l4 = 14 + usize::from(f[14] & 0x0f) * 4;
    let csum = match f[23] {
        TCP => l4 + 16,
        ICMP => l4 + 2,
        _ => l4 + 6,
    };
    // An ICMP echo's identifier stands for the port of either end.
    let (addr, port) = match (inbound, f[23] == ICMP) {
        (_, true) => (if inbound { 30 } else { 26 }, l4 + 4),
        (true, false) => (30, l4 + 2),
        (false, false) => (26, l4),
    };
    let mut ok: Vec<usize> = (0..12).chain([22, 24, 25]).chain(addr..addr + 4).collect();
    ok.extend([port, port + 1, csum, csum + 1]);
    ok
}

/// What a translation of ICMP error `f` may touch: MACs and TTL (the stack routes it), the
/// outer address on the translated side and the outer checksum, and in the quoted packet its
/// address on that side, its header checksum and its port (an echo's identifier), plus the
/// ICMP checksum.
fn may_change_error(f: &[u8], inbound: bool) -> Vec<usize> {
    let icmp = 14 + usize::from(f[14] & 0x0f) * 4;
    let inner = icmp + 8;
    let l4 = inner + usize::from(f[inner] & 0x0f) * 4;
    // Inbound, the quoted packet's source is translated; outbound, its destination.
    let (outer, quoted, port) = if inbound { (30, inner + 12, l4) } else { (26, inner + 16, l4 + 2) };
    let port = if f[inner + 9] == ICMP { l4 + 4 } else { port };
    let mut ok: Vec<usize> = (0..12).chain([22, 24, 25]).chain(outer..outer + 4).chain(quoted..quoted + 4).collect();
    ok.extend([icmp + 2, icmp + 3, inner + 10, inner + 11, port, port + 1]);
    ok
}

/// A connection an ICMP error may quote: protocol and two ports.
type Conn = (u8, u16, u16);

/// Whether `f` is an IPv4 ICMP error (destination unreachable, time exceeded).
fn is_icmp_error(f: &[u8]) -> bool {
    let icmp = 14 + usize::from(f[14] & 0x0f) * 4;
    f.len() > icmp && f[12..14] == [0x08, 0x00] && f[23] == ICMP && (f[icmp] == 3 || f[icmp] == 11)
}

#[test]
fn random_packets_keep_the_nat_invariants() {
    // SWITCH_FUZZ_ITERATIONS makes the run longer, as for the switching program.
    let iterations: usize = std::env::var("SWITCH_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let mut fuzz = Fuzz {
        bed: NatBed::new(115, 11580),
        rng: Rng(0x0dd_ba11_cafe_f00d ^ u64::from(std::process::id())),
        masqueraded: vec![],
        forwarded: vec![],
        seen: Outcomes::default(),
    };
    for _ in 0..iterations {
        let inbound = fuzz.rng.next_u64().is_multiple_of(2);
        let kind = fuzz.rng.next_u64() % 8;
        let mut f = fuzz.frame(inbound, kind);
        // Then a few bytes anywhere overwritten (not always: the exact packets must pass too).
        if kind >= 2 {
            for _ in 0..fuzz.rng.next_u64() % 4 {
                let at = (fuzz.rng.next_u64() % f.len() as u64) as usize;
                f[at] = fuzz.rng.next_u64() as u8;
            }
        }
        pad_for_test_run(&mut f);
        fuzz.check(&f, inbound);
    }
    let Outcomes { translated, passed, refused, unsolicited, errors, errors_dropped } = fuzz.seen;
    println!(
        "random NAT packets tried: {iterations} ({translated} translated, {errors} of them ICMP errors, {passed} left \
         alone, {refused} refused, {unsolicited} unsolicited, {errors_dropped} ICMP errors dropped)"
    );
    assert!(translated > 0 && passed > 0 && errors > 0, "the run never exercised every outcome");
    assert!(refused > 0 && unsolicited > 0, "the run never dropped");
    let ct_refused = table_stats(&fuzz.bed.sw, "conntrack")["refused"].as_u64().unwrap();
    let drops = switch_drops(&fuzz.bed.sw);
    let counted = |name: &str| drops[name].as_u64().unwrap();
    // Refused for want of a port (none free at all, or none in the source's share), routed in
    // unasked, or an ICMP error that is not its connection's: every drop counted once.
    let (share, routed, icmp) = (counted("masquerade_share"), counted("unsolicited_routed"), counted("icmp_refused"));
    assert!(ct_refused + share >= refused && routed >= unsolicited, "a drop was not counted");
    assert_eq!(ct_refused + share + routed + icmp, refused + unsolicited + errors_dropped, "a drop was not counted");
}

/// The namespace of the randomised run's segment that masquerades, and a router outside.
const FUZZ_SEGMENT_HOST: [u8; 4] = [10, 115, 0, 7];
const FUZZ_ROUTER: [u8; 4] = [172, 31, 115, 9];

/// Whether address `a` is on the randomised run's segment.
fn in_segment(a: &[u8]) -> bool {
    a[..3] == FUZZ_SEGMENT_HOST[..3]
}

/// What the randomised run saw, by outcome.
#[derive(Default)]
struct Outcomes {
    translated: u64,
    passed: u64,
    refused: u64,
    unsolicited: u64,
    errors: u64,
    errors_dropped: u64,
}

/// The randomised run: its bed and generator, the connections it made and what it saw.
struct Fuzz {
    bed: NatBed,
    rng: Rng,
    /// Connections the run made, for ICMP errors to quote: masqueraded ones as they left
    /// (proto, masquerade port, remote port) and forwarded ones as they arrived (proto, client
    /// port, target port).
    masqueraded: Vec<Conn>,
    forwarded: Vec<Conn>,
    seen: Outcomes,
}

impl Fuzz {
    /// A frame of `kind` (0 to 7) to run `inbound` (through `nat_ingress`) or not: arbitrary
    /// bytes (0, 1), an ICMP error (2), one the NAT programs must drop (3), or a valid packet.
    fn frame(&mut self, inbound: bool, kind: u64) -> Vec<u8> {
        match kind {
            0 | 1 => (0..14 + self.rng.next_u64() % 600).map(|_| self.rng.next_u64() as u8).collect(),
            2 => self.icmp_error(inbound),
            3 => self.undeliverable(inbound),
            _ => self.valid(inbound),
        }
    }

    /// An ICMP error quoting one of the run's connections (or a made-up one): from a router
    /// about a masqueraded packet (inbound), or from the forward's target about a forwarded
    /// one (outbound); a random type among unreachable/time exceeded.
    fn icmp_error(&mut self, inbound: bool) -> Vec<u8> {
        let bed = &self.bed;
        let pick = |v: &Vec<Conn>, r: u64| v.get((r % (v.len() as u64 + 1)) as usize).copied();
        let (code, kind) = if self.rng.next_u64().is_multiple_of(2) { (4, 3) } else { (0, 11) };
        let quoted = if inbound {
            let (proto, mport, rport) = pick(&self.masqueraded, self.rng.next_u64()).unwrap_or((UDP, 61001, 443));
            packet(proto, bed.uplink_ip, bed.client, mport, rport, SYN, false)
        } else {
            let (proto, cport, tport) = pick(&self.forwarded, self.rng.next_u64()).unwrap_or((TCP, 41234, 80));
            packet(proto, bed.client, bed.target, cport, tport, SYN, false)
        };
        let (from, to) = if inbound { (FUZZ_ROUTER, bed.uplink_ip) } else { (bed.target, bed.client) };
        icmp_error(kind, code, 1400, from, to, &quoted[14..14 + 28])
    }

    /// Routed straight to a namespace from outside (unsolicited), or a fragment or another
    /// protocol from the segment (untranslatable under masquerade).
    fn undeliverable(&mut self, inbound: bool) -> Vec<u8> {
        let proto = if self.rng.next_u64().is_multiple_of(2) { TCP } else { UDP };
        let mut f = if inbound {
            packet(proto, self.bed.client, FUZZ_SEGMENT_HOST, 40000, 80, SYN, false)
        } else {
            packet(proto, FUZZ_SEGMENT_HOST, self.bed.client, 40000, 80, SYN, false)
        };
        if !inbound {
            if self.rng.next_u64().is_multiple_of(2) {
                f[20] |= 0x20; // more fragments
            } else {
                f[23] = 47; // GRE
            }
        }
        f
    }

    /// A valid TCP/UDP packet to a forwarded port (inbound) or from the segment to outside
    /// (outbound, masquerade).
    fn valid(&mut self, inbound: bool) -> Vec<u8> {
        let bed = &self.bed;
        let rng = &mut self.rng;
        let proto = if rng.next_u64().is_multiple_of(2) { TCP } else { UDP };
        let dport = if proto == TCP { bed.tcp_port } else { bed.udp_port };
        let payload: Vec<u8> = (0..rng.next_u64() % 64).map(|_| rng.next_u64() as u8).collect();
        let sport = 1024 + (rng.next_u64() % 60_000) as u16;
        let flags = rng.next_u64() as u8;
        if inbound {
            packet_with(proto, bed.client, bed.uplink_ip, sport, dport, flags, false, &payload)
        } else {
            packet_with(proto, FUZZ_SEGMENT_HOST, bed.client, sport, 443, flags, false, &payload)
        }
    }

    /// Runs `f` through `nat_ingress` (`inbound`) or `nat_egress` and checks what came out.
    fn check(&mut self, f: &[u8], inbound: bool) {
        let prog = if inbound { &self.bed.nat_in } else { &self.bed.nat_out };
        let out = run_tc(prog, f, self.bed.ifindex).unwrap();
        if out.retval == 2 {
            self.dropped(f, inbound);
            return;
        }
        // OK (translated, or its switch's own), redirect, or TCX next (not its switch's).
        assert!([0, 7, TC_NEXT].contains(&out.retval), "verdict {} for {f:02x?}", out.retval);
        assert_eq!(out.data.len(), f.len(), "length changed");
        if out.data == f {
            self.seen.passed += 1;
            return;
        }
        assert_ne!(out.retval, TC_NEXT, "a translated packet passed on to another switch's program: {f:02x?}");
        self.seen.translated += 1;
        if is_icmp_error(f) {
            self.seen.errors += 1;
            self.translated_error(f, &out.data, inbound);
        } else {
            self.translated(f, &out.data, inbound);
        }
    }

    /// Dropped, never silently (counted at the end of the run), and only: inbound, a packet
    /// routed to the segment that nothing asked for; outbound, a packet from the segment that
    /// could not be masqueraded (no port left towards the one remote a long run talks to, or
    /// nothing to translate it by).
    fn dropped(&mut self, f: &[u8], inbound: bool) {
        let ipv4 = f[12..14] == [0x08, 0x00] && f.len() >= 34;
        assert!(ipv4, "dropped a frame that is not IPv4: {f:02x?}");
        if is_icmp_error(f) {
            // An error may also be refused for quoting a connection that is not its own
            // (counted apart, the sum is checked at the end): inbound, one quoting a packet
            // from the uplink's address but sent elsewhere; outbound, one with a segment
            // address outside or in its quote.
            let uplink_ip = self.bed.uplink_ip;
            let inner = 14 + usize::from(f[14] & 0x0f) * 4 + 8;
            let quoted = |at: usize| f.get(inner + at..inner + at + 4);
            let ok = if inbound {
                in_segment(&f[30..34]) || (quoted(12) == Some(&uplink_ip) && f[30..34] != uplink_ip)
            } else {
                in_segment(&f[26..30]) || [12, 16].iter().any(|&at| quoted(at).is_some_and(in_segment))
            };
            assert!(ok, "dropped error {f:02x?}");
            self.seen.errors_dropped += 1;
        } else if inbound {
            assert!(in_segment(&f[30..34]), "dropped inbound {f:02x?}");
            self.seen.unsolicited += 1;
        } else {
            assert!(in_segment(&f[26..30]) && !in_segment(&f[30..34]), "dropped outbound {f:02x?}");
            self.seen.refused += 1;
        }
    }

    /// ICMP error `f` came out as `out`: only the fields a translation owns changed,
    /// checksums that were right stay right, and it goes to the namespace it is about.
    fn translated_error(&self, f: &[u8], out: &[u8], inbound: bool) {
        let allowed = may_change_error(f, inbound);
        for (i, (a, b)) in f.iter().zip(out).enumerate() {
            assert!(a == b || allowed.contains(&i), "byte {i} changed ({a:#04x} -> {b:#04x}) in error {f:02x?}");
        }
        // Checksums that were right stay right.
        let icmp = 14 + usize::from(f[14] & 0x0f) * 4;
        let inner = icmp + 8;
        let inner_end = inner + usize::from(f[inner] & 0x0f) * 4;
        let right = |g: &[u8]| {
            fold(csum_add(0, &g[14..icmp])) == 0
                && fold(csum_add(0, &g[icmp..])) == 0
                && g.len() >= inner_end
                && fold(csum_add(0, &g[inner..inner_end])) == 0
        };
        if right(f) {
            inspect_error(out);
        }
        let (outer, quoted) = if inbound {
            (&out[30..34], &out[inner + 12..inner + 16])
        } else {
            (&out[26..30], &out[inner + 16..inner + 20])
        };
        // Back to a namespace (a random byte may have changed which one a masqueraded
        // connection came from), or to the uplink's address; inbound, always to the
        // namespace it is about.
        let ok = if inbound { in_segment(quoted) } else { quoted == self.bed.uplink_ip };
        assert!(ok, "an error translated to a stranger {quoted:?}: {f:02x?}");
        assert!(outer == quoted || (!inbound && outer == &f[26..30]), "outer address: {f:02x?}");
    }

    /// TCP/UDP packet or echo `f` came out as `out`: it could be translated, only the fields
    /// a translation owns changed, checksums that were right stay right, and it goes to the
    /// forward's target or comes from the uplink. Its connection is kept for errors to quote.
    fn translated(&mut self, f: &[u8], out: &[u8], inbound: bool) {
        assert!(translatable(f), "translated an unparseable frame {f:02x?}");
        let allowed = may_change(f, inbound);
        for (i, (a, b)) in f.iter().zip(out).enumerate() {
            assert!(a == b || allowed.contains(&i), "byte {i} changed ({a:#04x} -> {b:#04x}) in {f:02x?}");
        }
        // Checksums that were right stay right (incremental updates keep a wrong one wrong).
        let ihl = usize::from(f[14] & 0x0f);
        let l4 = 14 + ihl * 4;
        let ip_ok = fold(csum_add(0, &f[14..l4])) == 0;
        if f[23] == ICMP {
            // No pseudo header: the checksum covers the ICMP message alone.
            if ip_ok && ihl == 5 && fold(csum_add(0, &f[l4..])) == 0 {
                inspect_icmp(out);
            }
        } else {
            let l4_ok = (f[23] == UDP && f[l4 + 6..l4 + 8] == [0, 0])
                || l4_checksum_valid(&f[26..30], &f[30..34], f[23], &f[l4..]);
            if ip_ok && l4_ok && ihl == 5 {
                inspect(out);
            }
        }
        let port = |g: &[u8], at: usize| u16::from_be_bytes([g[l4 + at], g[l4 + at + 1]]);
        if inbound {
            // To the forward's target, or back to the segment host whose masqueraded
            // connection the packet happens to answer (a long run makes such pairs).
            let to = &out[30..34];
            assert!(to == self.bed.target || to == FUZZ_SEGMENT_HOST, "translated inbound to a stranger: {to:?}");
            assert_eq!(&f[30..34], &self.bed.uplink_ip, "translated a packet not sent to the uplink");
            if to == self.bed.target && f[23] != ICMP && self.forwarded.len() < 64 {
                self.forwarded.push((f[23], port(f, 0), port(out, 2)));
            }
        } else {
            assert_eq!(&out[26..30], &self.bed.uplink_ip, "masqueraded behind a stranger");
            if f[23] != ICMP && self.masqueraded.len() < 64 {
                self.masqueraded.push((f[23], port(out, 0), port(f, 2)));
            }
        }
    }
}

/// Whether a translation may touch `f`: a parseable, unfragmented IPv4 TCP/UDP packet (or an
/// echo) with a 20-60 byte header.
fn translatable(f: &[u8]) -> bool {
    let ihl = usize::from(f[14] & 0x0f);
    let echo = |f: &[u8]| {
        let l4 = 14 + ihl * 4;
        f[23] == ICMP && f.len() >= l4 + 8 && (f[l4] == ECHO_REQUEST || f[l4] == ECHO_REPLY) && f[l4 + 1] == 0
    };
    f[12..14] == [0x08, 0x00]
        && f[14] >> 4 == 4
        && ihl >= 5
        && f.len() >= 14 + ihl * 4 + if f[23] == TCP { 20 } else { 8 }
        && (f[23] == TCP || f[23] == UDP || echo(f))
        && u16::from_be_bytes([f[20], f[21]]) & 0x3fff == 0
        && {
            let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
            total == 0 || (total >= ihl * 4 + if f[23] == TCP { 20 } else { 8 } && 14 + total <= f.len())
        }
}

#[test]
fn icmp_echo_is_masqueraded_both_ways_and_never_leaks() {
    let bed = NatBed::new(119, 11980);
    let (client, uplink_ip) = (bed.client, bed.uplink_ip);
    let host = [10, 119, 0, 7];
    // A ping from the segment leaves from the uplink address, its identifier from the
    // masquerade range; checksums stay right.
    let request = icmp_echo(ECHO_REQUEST, host, client, 0x1234, 1);
    let out = run_tc(&bed.nat_out, &request, bed.ifindex).unwrap();
    let (src, dst, id) = inspect_icmp(&out.data);
    assert_eq!((src, dst), (uplink_ip, client), "echo request not masqueraded");
    assert!(id >= masquerade_first_port(), "identifier {id} not from the masquerade range");
    // The answer comes back to the namespace, with its own identifier.
    let reply = icmp_echo(ECHO_REPLY, client, uplink_ip, id, 1);
    let back = run_tc(&bed.nat_in, &reply, bed.ifindex).unwrap();
    let (src, dst, back_id) = inspect_icmp(&back.data);
    assert_eq!((src, dst, back_id), (client, host, 0x1234), "echo reply not translated back");
    // The next request of the same ping takes the same entry.
    let again = run_tc(&bed.nat_out, &icmp_echo(ECHO_REQUEST, host, client, 0x1234, 2), bed.ifindex).unwrap();
    assert_eq!(inspect_icmp(&again.data), (uplink_ip, client, id));
    // An echo reply from the segment that answers nothing it sent (a ping routed in from
    // outside) has no identifier to translate: dropped and counted, never sent privately.
    let refused = table_stats(&bed.sw, "conntrack")["refused"].as_u64().unwrap();
    let stray = icmp_echo(ECHO_REPLY, host, client, 0x4321, 1);
    assert_eq!(run_tc(&bed.nat_out, &stray, bed.ifindex).unwrap().retval, 2, "TC_ACT_SHOT expected");
    assert_eq!(table_stats(&bed.sw, "conntrack")["refused"].as_u64().unwrap(), refused + 1);
    // A ping from outside to the uplink address is the host's to answer: untouched.
    untouched(&bed, &bed.nat_in, &icmp_echo(ECHO_REQUEST, client, uplink_ip, 7, 1), "ping to the host");
}

#[test]
fn replies_leave_for_the_uplink_straight_from_the_switch() {
    let bed = NatBed::new(117, 11780);
    let (client, uplink_ip, target, port) = (bed.client, bed.uplink_ip, bed.target, bed.tcp_port);
    let ifindex = |name: &str| -> u32 {
        std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex")).unwrap().trim().parse().unwrap()
    };
    let mac = |name: &str| -> [u8; 6] {
        let text = std::fs::read_to_string(format!("/sys/class/net/{name}/address")).unwrap();
        let b: Vec<u8> = text.trim().split(':').map(|x| u8::from_str_radix(x, 16).unwrap()).collect();
        b.try_into().unwrap()
    };
    // The client's MAC is known on the uplink, so the FIB can route without the stack.
    let client_mac = [0x02, 0, 0, 0, 0x71, 0x17];
    let uplink = format!("u{}", bed.sb.prefix);
    host(
        "ip",
        &["neigh", "replace", "172.31.117.2", "lladdr", "02:00:00:00:71:17", "dev", &uplink, "nud", "permanent"],
    );
    // The gateway: its host end has the address, its other end is a port of the switch.
    let gw_host = host("ip", &["-o", "-4", "addr", "show", "to", "10.117.0.254"]);
    let gw_host = gw_host.split_whitespace().nth(1).expect("gateway interface").to_owned();
    let gw_port = port_stats(&bed.sw, "host")["interface"].as_str().unwrap().to_owned();
    let web = bed.sb.name("web");
    let web_port = ns_info(&web)["host_interface"].as_str().unwrap().to_owned();
    let prog = switch_tests::bpf::tc_program(&format!("/sys/fs/bpf/switch/{}/prog_ingress", bed.sw)).unwrap();
    let gw_mac = mac(&gw_host);
    // What the gateway's port had sent before (the target's announcement, flooded to it).
    let gw_sent = port_stats(&bed.sw, "host")["tx_packets"].as_u64().unwrap();

    // A connection comes in; the switch learns where the gateway's MAC is.
    assert_eq!(inbound(&bed, &packet(TCP, client, uplink_ip, 40000, port, SYN, false)).dst, target);
    let mut hello = switch_tests::bpf::frame([0xff; 6], gw_mac, 0x88b5, 46);
    hello[6..12].copy_from_slice(&gw_mac);
    run_tc(&prog, &hello, ifindex(&gw_port)).unwrap();

    // The server's SYN-ACK, sent to the gateway's MAC: translated back and redirected to the
    // uplink by the switch program itself, with the router's part done (TTL, MACs).
    let mut reply = packet(TCP, target, client, 80, 40000, SYN | ACK, false);
    reply[..6].copy_from_slice(&gw_mac);
    reply[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0x71, 0x10]);
    let out = run_tc(&prog, &reply, ifindex(&web_port)).unwrap();
    assert_eq!(out.retval, switch_tests::bpf::TC_ACT_REDIRECT);
    let s = inspect(&out.data);
    assert_eq!((s.src, s.dst, s.sport, s.dport), (uplink_ip, client, port, 40000), "reply not translated");
    assert_eq!((&out.data[..6], &out.data[6..12]), (&client_mac[..], &mac(&uplink)[..]), "MACs not the next hop's");
    assert_eq!(out.data[22], 63, "TTL not decremented");
    assert_eq!(
        port_stats(&bed.sw, "host")["tx_packets"].as_u64(),
        Some(gw_sent + 1),
        "the shortcut counts as sent to the gateway"
    );

    // Anything else for the gateway is switched to it unchanged.
    let mut other = packet(TCP, target, client, 80, 40999, SYN | ACK, false);
    other[..6].copy_from_slice(&gw_mac);
    other[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0x71, 0x10]);
    let out = run_tc(&prog, &other, ifindex(&web_port)).unwrap();
    assert_eq!((out.retval, out.data == other), (switch_tests::bpf::TC_ACT_REDIRECT, true));
}

#[test]
fn icmp_errors_about_translated_connections_are_translated_back() {
    let bed = NatBed::new(120, 12080);
    let (client, uplink_ip, target) = (bed.client, bed.uplink_ip, bed.target);
    let (host, router) = ([10, 120, 0, 7], [172, 31, 120, 9]);
    let udp = bed.udp_port;
    let run = |prog: &SchedClassifier, f: &[u8]| run_tc(prog, f, bed.ifindex).unwrap();

    // A forwarded UDP flow: the target says "port unreachable" about the datagram as it got
    // it; the client must see it about the uplink's address and port, from the uplink.
    let s = inbound(&bed, &packet(UDP, client, uplink_ip, 41000, udp, 0, false));
    assert_eq!((s.dst, s.dport), (target, 53));
    let delivered = packet(UDP, client, target, 41000, 53, 0, false);
    let out = run(&bed.nat_out, &icmp_error(3, 3, 0, target, client, &delivered[14..]));
    assert_eq!(out.retval, 0);
    assert_eq!(inspect_error(&out.data), ((uplink_ip, client), (client, uplink_ip, 41000, udp)));
    // The host's own "fragmentation needed" about it (sent from the uplink address) keeps its
    // source; the quoted packet is translated all the same.
    let out = run(&bed.nat_out, &icmp_error(3, 4, 1400, uplink_ip, client, &delivered[14..]));
    assert_eq!(inspect_error(&out.data), ((uplink_ip, client), (client, uplink_ip, 41000, udp)));

    // A masqueraded flow: a router outside says "fragmentation needed" about the datagram as
    // it left; the namespace must get it, about its own address and port.
    let left = outbound(&bed, &packet(UDP, host, client, 5000, 7000, 0, false));
    assert_eq!(left.src, uplink_ip);
    let quoted = packet(UDP, uplink_ip, client, left.sport, 7000, 0, false);
    let back = run(&bed.nat_in, &icmp_error(3, 4, 1300, router, uplink_ip, &quoted[14..]));
    assert_eq!(back.retval, 0);
    assert_eq!(inspect_error(&back.data), ((router, host), (host, client, 5000, 7000)));
    // Time exceeded about a masqueraded ping (traceroute): the same, by the echo identifier.
    let ping = run(&bed.nat_out, &icmp_echo(ECHO_REQUEST, host, client, 0x0abc, 1));
    let (_, _, id) = inspect_icmp(&ping.data);
    let quoted = icmp_echo(ECHO_REQUEST, uplink_ip, client, id, 1);
    let back = run(&bed.nat_in, &icmp_error(11, 0, 0, router, uplink_ip, &quoted[14..]));
    assert_eq!(inspect_error(&back.data), ((router, host), (host, client, 0x0abc, 0x0abc)));

    // About nothing the switch knows: from outside to the host, the host's business
    // (untouched); from outside straight to the segment, unsolicited (dropped); from the
    // segment, it cannot be masqueraded and must not leave with a private source (dropped).
    let unknown = packet(UDP, uplink_ip, client, 1, 2, 0, false);
    untouched(&bed, &bed.nat_in, &icmp_error(3, 3, 0, router, uplink_ip, &unknown[14..]), "error to the host");
    let into_segment = packet(UDP, host, client, 3, 4, 0, false);
    let refused = switch_drops(&bed.sw)["unsolicited_routed"].as_u64().unwrap();
    assert_eq!(run(&bed.nat_in, &icmp_error(3, 3, 0, router, host, &into_segment[14..])).retval, 2);
    assert_eq!(switch_drops(&bed.sw)["unsolicited_routed"].as_u64().unwrap(), refused + 1);
    let nat_refused = switch_drops(&bed.sw)["nat_refused"].as_u64().unwrap();
    let from_segment = packet(UDP, client, host, 5, 6, 0, false);
    assert_eq!(run(&bed.nat_out, &icmp_error(3, 3, 0, host, client, &from_segment[14..])).retval, 2);
    assert_eq!(switch_drops(&bed.sw)["nat_refused"].as_u64().unwrap(), nat_refused + 1);
}

/// ICMP errors that quote a live connection but are not that connection's own are dropped and
/// counted (`icmp_refused`), never translated for someone else: from outside, one sent to
/// another address than the quoted packet's source (the uplink's); from the segment, one
/// about a packet its sender never received, and the host's own from a private address; and
/// none leaves quoting a private address untranslated.
#[test]
fn icmp_errors_that_are_not_their_connections_own_are_refused() {
    let bed = NatBed::new(148, 14880);
    let (client, uplink_ip, target) = (bed.client, bed.uplink_ip, bed.target);
    let (host, other, router, gateway) = ([10, 148, 0, 7], [10, 148, 0, 8], [172, 31, 148, 9], [10, 148, 0, 254]);
    // Outbound, routed from the segment (any interface: the programs only tell it from none,
    // 0, the host's own packets).
    let (segment, host_made) = (bed.ifindex, 0);
    let icmp_refused = || switch_drops(&bed.sw)["icmp_refused"].as_u64().unwrap();
    let refused = |prog: &SchedClassifier, f: &[u8], from: u32, what: &str| {
        let before = icmp_refused();
        assert_eq!(run_tc_routed(prog, f, bed.ifindex, from).unwrap().retval, 2, "{what}: not dropped");
        assert_eq!(icmp_refused(), before + 1, "{what}: not counted");
    };

    // A masqueraded flow host:5000 -> client:7000; a router's error about it is the host's
    // namespace's only when sent to the uplink address, the quoted packet's source.
    let left = outbound(&bed, &packet(UDP, host, client, 5000, 7000, 0, false));
    let quoted = packet(UDP, uplink_ip, client, left.sport, 7000, 0, false);
    let back = run_tc(&bed.nat_in, &icmp_error(3, 4, 1300, router, uplink_ip, &quoted[14..]), bed.ifindex).unwrap();
    assert_eq!(inspect_error(&back.data), ((router, host), (host, client, 5000, 7000)));
    for (to, what) in [(other, "to another namespace"), (host, "to the namespace itself"), (router, "to elsewhere")] {
        refused(&bed.nat_in, &icmp_error(3, 4, 1300, router, to, &quoted[14..]), bed.ifindex, what);
    }

    // A forwarded flow client:41000 -> target:53: the target's own error leaves translated;
    // another namespace's about it, one with a made-up public source from a port without
    // port security, and the host's own from its private gateway address are refused.
    inbound(&bed, &packet(UDP, client, uplink_ip, 41000, bed.udp_port, 0, false));
    let delivered = packet(UDP, client, target, 41000, 53, 0, false);
    let out = run_tc_routed(&bed.nat_out, &icmp_error(3, 3, 0, target, client, &delivered[14..]), bed.ifindex, segment);
    assert_eq!(inspect_error(&out.unwrap().data), ((uplink_ip, client), (client, uplink_ip, 41000, bed.udp_port)));
    refused(&bed.nat_out, &icmp_error(3, 3, 0, other, client, &delivered[14..]), segment, "from another namespace");
    refused(&bed.nat_out, &icmp_error(3, 3, 0, router, client, &delivered[14..]), segment, "made-up source");
    refused(&bed.nat_out, &icmp_error(3, 3, 0, gateway, client, &delivered[14..]), host_made, "private host address");

    // The host's own error about a packet to a namespace that no connection knows (its entries
    // gone): it would quote the private address as it is.
    let stale = packet(UDP, client, other, 41001, 53, 0, false);
    refused(
        &bed.nat_out,
        &icmp_error(3, 3, 0, uplink_ip, client, &stale[14..]),
        host_made,
        "quoting a private address",
    );
}
