//! `switch capture` on real namespaces: a pcapng file that tcpdump reads, with one interface per
//! port and each frame's verdict (forwarded where, flooded, dropped why) as its comment; the
//! filters (port, verdict, snap length, count); one capture at a time; and the capture off
//! again after Ctrl-C or kill -9 (the next command turns it off).
use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::Duration,
};

use pcap_file::pcapng::{
    Block, PcapNgReader,
    blocks::{enhanced_packet::EnhancedPacketOption, interface_description::InterfaceDescriptionOption},
};
use switch_tests::{
    frames::{experimental_frame, send_raw, udp_frame},
    *,
};

/// Whether the datapath of `sw` copies frames now (CFG_F_CAPTURE in its pinned CONFIG).
fn capture_on(sw: &str) -> bool {
    config_flag(sw, switch_common::CFG_F_CAPTURE)
}

/// A running `switch capture`. Dropping it stops the process (SIGINT, then SIGKILL), so a
/// failing test leaves none behind.
struct Capture {
    child: Child,
}

impl Capture {
    /// Starts `switch [--json] capture --switch SW EXTRA...` and waits until the capture is on.
    fn start(sw: &str, extra: &[&str], json: bool) -> Self {
        let mut cmd = Command::new(switch_bin());
        if json {
            cmd.arg("--json");
        }
        let child = cmd
            .args(["capture", "--switch", sw])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let c = Self { child };
        assert!(within(|| capture_on(sw)), "switch capture did not turn the capture on");
        c
    }

    /// Ctrl-C; whether the process exited successfully.
    fn interrupt(mut self) -> bool {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().unwrap().success()
    }

    /// Waits for the process to end by itself (`-c`); its standard output.
    fn output(mut self) -> String {
        let mut out = String::new();
        let stdout = self.child.stdout.take().unwrap();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            out.push_str(&line);
            out.push('\n');
        }
        assert!(self.child.wait().unwrap().success(), "switch capture failed: {out}");
        out
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        interrupt_and_reap(&mut self.child);
    }
}

/// A capture file under the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> Self {
        Self(std::env::temp_dir().join(format!("switch-capture-{}-{tag}.pcapng", std::process::id())))
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One frame of a capture file as the test reads it back.
#[derive(Debug)]
struct Frame {
    /// The name of its interface (the port's host interface).
    interface: String,
    /// The interface's description.
    description: String,
    /// The packet comment (the verdict).
    comment: String,
    data: Vec<u8>,
    original_len: u32,
}

/// Every frame of pcapng file `path`, read with an independent reader.
fn read_pcapng(path: &str) -> Vec<Frame> {
    let bytes = std::fs::read(path).unwrap();
    let mut reader = PcapNgReader::new(bytes.as_slice()).unwrap();
    let mut frames = vec![];
    while let Some(block) = reader.next_block() {
        let Block::EnhancedPacket(p) = block.unwrap().into_owned() else { continue };
        let idb = reader.packet_interface(&p).expect("every frame has its interface");
        let option = |f: fn(&InterfaceDescriptionOption) -> Option<String>| idb.options.iter().find_map(f);
        let comment = p.options.iter().find_map(|o| match o {
            EnhancedPacketOption::Comment(c) => Some(c.to_string()),
            _ => None,
        });
        frames.push(Frame {
            interface: option(|o| match o {
                InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                _ => None,
            })
            .unwrap_or_default(),
            description: option(|o| match o {
                InterfaceDescriptionOption::IfDescription(n) => Some(n.to_string()),
                _ => None,
            })
            .unwrap_or_default(),
            comment: comment.unwrap_or_default(),
            data: p.data.to_vec(),
            original_len: p.original_len,
        });
    }
    frames
}

/// The host-side interface of namespace `ns`'s port.
fn port_of(ns: &str) -> String {
    ns_info(ns)["host_interface"].as_str().unwrap().to_owned()
}

/// An ICMP echo of type `icmp_type` from `src` to `dst` (an IPv4 frame without options).
fn is_echo(f: &Frame, icmp_type: u8, src: [u8; 4], dst: [u8; 4]) -> bool {
    let d = &f.data;
    d.len() >= 35 && d[12..14] == [8, 0] && d[23] == 1 && d[26..30] == src && d[30..34] == dst && d[34] == icmp_type
}

fn the_file_has_the_frames_and_their_verdicts(dp: &str, net: u8) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("cap", dp, &[]);
    let a = sb.port(&sw, "a", &format!("10.{net}.0.1/24"), &[]);
    let b = sb.port(&sw, "b", &format!("10.{net}.0.2/24"), &[]);
    let (a_if, b_if) = (port_of(&a), port_of(&b));
    let a_mac = ns_info(&a)["mac"].as_str().unwrap().to_owned();
    let file = TempFile::new(dp);
    let c = Capture::start(&sw, &["-w", file.path()], false);

    // Unicast both ways (and the ARP that comes first: flooded, then forwarded).
    exec(&a, &["ip", "neigh", "flush", "all"]);
    assert!(ping(&a, &format!("10.{net}.0.2"), 1));
    // A group source MAC, and an address that is not a's: two drops with different reasons.
    send_raw(&a, &experimental_frame("ff:ff:ff:ff:ff:ff", "01:00:00:00:00:01"));
    send_raw(&a, &udp_frame("ff:ff:ff:ff:ff:ff", &a_mac, [10, net, 0, 99], [10, net, 0, 2]));
    sleep(Duration::from_millis(300));
    assert!(c.interrupt(), "capture did not exit cleanly on SIGINT");
    assert!(!capture_on(&sw), "capture left on after Ctrl-C");

    // Other namespaces' traffic: readable by its owner only.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file.0).unwrap().permissions().mode() & 0o777, 0o600);

    // tcpdump reads the file and sees every frame.
    let dump = host("tcpdump", &["-n", "-e", "-r", file.path()]);
    for what in [
        "ICMP echo request".to_owned(),
        "ICMP echo reply".to_owned(),
        format!("Request who-has 10.{net}.0.2"),
        "ethertype Unknown (0x88b5)".to_owned(),
        format!("10.{net}.0.99.5000 > 10.{net}.0.2.53"),
    ] {
        assert!(dump.contains(&what), "no '{what}' in tcpdump's reading:\n{dump}");
    }

    // Each frame on its port's interface, with its verdict.
    let frames = read_pcapng(file.path());
    let find = |what: &str, f: &dyn Fn(&Frame) -> bool| -> &Frame {
        frames.iter().find(|x| f(x)).unwrap_or_else(|| panic!("no {what} in {frames:#?}"))
    };
    let (ip_a, ip_b) = ([10, net, 0, 1], [10, net, 0, 2]);
    let request = find("echo request", &|f| is_echo(f, 8, ip_a, ip_b));
    assert_eq!(
        (request.interface.as_str(), request.comment.as_str()),
        (a_if.as_str(), &*format!("forward to {b}/{b_if}"))
    );
    assert!(request.description.contains(&a) && request.description.contains(&sw), "{request:?}");
    assert_eq!((request.data.len(), request.original_len), (98, 98), "whole frames at the default snap length");
    let reply = find("echo reply", &|f| is_echo(f, 0, ip_b, ip_a));
    assert_eq!((reply.interface.as_str(), reply.comment.as_str()), (b_if.as_str(), &*format!("forward to {a}/{a_if}")));
    let arp = find("ARP request", &|f| f.data.len() >= 14 && f.data[12..14] == [8, 6] && f.data[0..6] == [0xff; 6]);
    assert_eq!((arp.interface.as_str(), arp.comment.as_str()), (a_if.as_str(), "flood"));
    let bad_source = find("group source", &|f| f.data.get(6..12) == Some(&[1, 0, 0, 0, 0, 1][..]));
    assert_eq!((bad_source.interface.as_str(), bad_source.comment.as_str()), (a_if.as_str(), "drop: invalid-source"));
    let spoofed = find("spoofed address", &|f| f.data.get(26..30) == Some(&[10, net, 0, 99][..]));
    assert_eq!(spoofed.comment, "drop: spoofed-ip");
    // Nothing the test did not send: every frame is one of the five kinds above or more of
    // the pings' ARP (a reply, a late announcement).
    let arps = frames.iter().filter(|f| f.data[12..14] == [8, 6]).count();
    assert_eq!(frames.len() - arps, 4, "{frames:#?}");
}

fn filters_choose_the_frames(dp: &str, net: u8) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("cap", dp, &[]);
    let a = sb.port(&sw, "a", &format!("10.{net}.0.1/24"), &[]);
    let b = sb.port(&sw, "b", &format!("10.{net}.0.2/24"), &[]);

    // Drops of a only, as JSON lines, two of them and then the capture ends by itself.
    let c = Capture::start(&sw, &["--ns", &a, "--verdict", "drop", "-c", "2"], true);
    assert!(ping(&a, &format!("10.{net}.0.2"), 2), "forwarded: not captured");
    send_raw(&b, &experimental_frame("ff:ff:ff:ff:ff:ff", "01:00:00:00:00:0b"));
    send_raw(&a, &experimental_frame("ff:ff:ff:ff:ff:ff", "01:00:00:00:00:0a"));
    send_raw(&a, &experimental_frame("ff:ff:ff:ff:ff:0a", "01:00:00:00:00:0a"));
    let out = c.output();
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{out}");
    for v in &lines {
        assert_eq!((v["port"]["namespace"].as_str(), v["verdict"].as_str()), (Some(a.as_str()), Some("drop")), "{v}");
        assert_eq!(
            (v["reason"].as_str(), v["frame"]["src_mac"].as_str()),
            (Some("invalid-source"), Some("01:00:00:00:00:0a"))
        );
        assert_eq!((v["caplen"].as_u64(), v["frame"]["len"].as_u64()), (Some(60), Some(60)), "{v}");
    }
    assert!(within(|| !capture_on(&sw)), "capture left on after -c");

    // Forwarded frames of b's port, cut at 20 bytes: the file keeps the frame's length.
    let file = TempFile::new(&format!("{dp}-snap"));
    let c = Capture::start(
        &sw,
        &["--port", &port_of(&b), "--verdict", "forward", "-s", "20", "-c", "1", "-w", file.path()],
        false,
    );
    send_raw(&a, &experimental_frame("ff:ff:ff:ff:ff:ff", "01:00:00:00:00:0a"));
    assert!(ping(&b, &format!("10.{net}.0.1"), 1));
    let report = c.output();
    assert!(report.contains("1 frames captured, 0 lost"), "{report}");
    let frames = read_pcapng(file.path());
    assert_eq!(frames.len(), 1, "{frames:#?}");
    assert_eq!(frames[0].interface, port_of(&b));
    assert_eq!((frames[0].data.len(), frames[0].comment.starts_with("forward to ")), (20, true), "{:?}", frames[0]);
    assert!(frames[0].original_len > 20, "{:?}", frames[0]);
}

fn one_capture_at_a_time_and_a_killed_one_is_turned_off(dp: &str) {
    let mut sb = Sandbox::new();
    let sw = sb.switch("cap", dp, &[]);
    let _a = sb.port(&sw, "a", "10.98.0.1/24", &[]);
    assert!(!capture_on(&sw), "capture is off unless one runs");
    let captures = || {
        let state: Value = serde_json::from_str(&std::fs::read_to_string("/run/switch/state.json").unwrap()).unwrap();
        state["switches"][&sw]["captures"].as_array().map_or(0, Vec::len)
    };
    let mut first = Capture::start(&sw, &[], false);
    let e = fails(&["capture", "--switch", &sw], 1);
    assert!(e.contains("already has a capture running") && e.contains("one capture at a time"), "{e}");
    assert!(capture_on(&sw), "the refused capture changed nothing");
    // kill -9: nobody turns the capture off on the way out ...
    first.child.kill().unwrap();
    let _ = first.child.wait();
    assert!(capture_on(&sw), "a killed capture cannot clean up");
    assert_eq!(captures(), 1);
    // ... until the next command of the switch that changes something,
    ok(&["up", "--switch", &sw]);
    assert!(!capture_on(&sw), "capture left on after it was killed");
    assert_eq!(captures(), 0);
    // and a new capture may start (and it also converges what a killed one left).
    let again = Capture::start(&sw, &[], false);
    assert!(again.interrupt());
    assert!(!capture_on(&sw));
}

#[test]
fn tc_the_file_has_the_frames_and_their_verdicts() {
    the_file_has_the_frames_and_their_verdicts("tc", 81);
}

#[test]
fn xdp_the_file_has_the_frames_and_their_verdicts() {
    the_file_has_the_frames_and_their_verdicts("xdp", 82);
}

#[test]
fn tc_filters_choose_the_frames() {
    filters_choose_the_frames("tc", 83);
}

#[test]
fn xdp_filters_choose_the_frames() {
    filters_choose_the_frames("xdp", 84);
}

#[test]
fn tc_one_capture_at_a_time_and_a_killed_one_is_turned_off() {
    one_capture_at_a_time_and_a_killed_one_is_turned_off("tc");
}

#[test]
fn xdp_one_capture_at_a_time_and_a_killed_one_is_turned_off() {
    one_capture_at_a_time_and_a_killed_one_is_turned_off("xdp");
}

#[test]
fn userspace_and_bridge_refuse_with_one_line() {
    refused_by_bridge_and_userspace(&mut Sandbox::new(), &["capture"], "packet capture");
}

/// `-w FILE` never writes into a file someone else made: an existing file is refused (another
/// user's even with `--force`), and so are a symbolic link and a hard link; `--force` replaces
/// only a regular file of the caller's own, made 0600.
#[test]
fn a_capture_file_is_made_new_or_replaced_only_if_it_is_ones_own() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let mut sb = Sandbox::new();
    let sw = sb.switch("cap", "tc", &[]);
    let a = sb.port(&sw, "a", "10.98.0.1/24", &[]);
    let _b = sb.port(&sw, "b", "10.98.0.2/24", &[]);
    let refused = |file: &TempFile, extra: &[&str], why: &str| {
        let mut args = vec!["capture", "--switch", &sw, "-c", "1", "-w", file.path()];
        args.extend_from_slice(extra);
        // A capture that took the file waits for a frame: ended after 10 s (exit 124).
        let r: Run = Command::new("timeout").arg("10").arg(switch_bin()).args(&args).output().unwrap().into();
        assert_eq!(r.code, 1, "switch {args:?}: expected exit 1: {r:?}");
        let e = r.stderr.trim_end();
        assert!(!e.contains('\n') && e.starts_with("error: "), "switch {args:?}: one error line: {e:?}");
        assert!(e.contains(file.path()) && e.contains(why), "switch {args:?}: expected {why:?} in {e:?}");
        assert!(!capture_on(&sw), "switch {args:?} turned the capture on");
    };
    // Another user's file (planted in a shared directory, readable by everyone).
    let theirs = TempFile::new("theirs");
    std::fs::write(&theirs.0, b"theirs").unwrap();
    std::os::unix::fs::chown(&theirs.0, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&theirs.0, std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(&theirs, &[], "--force");
    refused(&theirs, &["--force"], "belongs to user 65534");
    assert_eq!(std::fs::read(&theirs.0).unwrap(), b"theirs");
    assert_eq!(std::fs::metadata(&theirs.0).unwrap().uid(), 65534);
    // One's own file: only with --force, and not while it has another name.
    let mine = TempFile::new("mine");
    std::fs::write(&mine.0, b"old capture").unwrap();
    std::fs::set_permissions(&mine.0, std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(&mine, &[], "exists");
    let other_name = TempFile::new("mine-hardlink");
    std::fs::hard_link(&mine.0, &other_name.0).unwrap();
    refused(&mine, &["--force"], "hard links");
    std::fs::remove_file(&other_name.0).unwrap();
    assert_eq!(std::fs::read(&mine.0).unwrap(), b"old capture");
    // A symbolic link, even to one's own file, even with --force.
    let link = TempFile::new("mine-symlink");
    std::os::unix::fs::symlink(&mine.0, &link.0).unwrap();
    refused(&link, &["--force"], "symbolic link");
    assert_eq!(std::fs::read(&mine.0).unwrap(), b"old capture");

    // --force on one's own file: replaced by the capture, 0600.
    let c = Capture::start(&sw, &["--ns", &a, "-c", "1", "-w", mine.path(), "--force"], false);
    assert!(ping(&a, "10.98.0.2", 1));
    c.output();
    assert_eq!(std::fs::metadata(&mine.0).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(read_pcapng(mine.path()).len(), 1, "the replaced file holds the one frame captured");
}

#[test]
fn bad_input_changes_nothing() {
    let mut sb = Sandbox::new();
    let sw = sb.switch("cap", "tc", &[]);
    let a = sb.port(&sw, "a", "10.97.0.1/24", &[]);
    let e = fails(&["capture", "--switch", &sw, "--ns", "nosuchns"], 2);
    assert!(e.contains("no port on switch"), "{e}");
    let e = fails(&["capture", "--switch", &sw, "--port", "nosuchif"], 2);
    assert!(e.contains("no port of switch"), "{e}");
    let r = switch(&["capture", "--switch", &sw, "-s", "9217"]);
    assert!(r.code == 2 && r.stderr.contains("9217"), "{r:?}");
    let r = switch(&["capture", "--switch", &sw, "--ns", &a, "--port", "x"]);
    assert!(r.code == 2 && r.stderr.contains("cannot be used with"), "{r:?}");
    let r = switch(&["capture", "--switch", &sw, "--verdict", "maybe"]);
    assert!(r.code == 2 && r.stderr.contains("invalid value 'maybe'"), "{r:?}");
    let e = fails(&["capture", "--switch", &sw, "-w", "/nonexistent-dir/x.pcapng"], 1);
    assert!(e.contains("/nonexistent-dir/x.pcapng"), "{e}");
    // A symbolic link where the file goes (planted in a shared directory): refused, and what
    // it points to untouched.
    let (target, link) = (TempFile::new("link-target"), TempFile::new("link"));
    std::fs::write(&target.0, b"precious").unwrap();
    std::os::unix::fs::symlink(&target.0, &link.0).unwrap();
    let e = fails(&["capture", "--switch", &sw, "-w", link.path()], 1);
    assert!(e.contains(link.path()), "{e}");
    assert_eq!(std::fs::read(&target.0).unwrap(), b"precious");
    assert!(!capture_on(&sw));
    let state: Value = serde_json::from_str(&std::fs::read_to_string("/run/switch/state.json").unwrap()).unwrap();
    assert_eq!(state["switches"][&sw]["captures"].as_array().map_or(0, Vec::len), 0);
}

/// Readers of a switch that goes away (`switch down`) end by themselves instead of waiting
/// forever on a ring buffer nothing writes.
#[test]
fn readers_end_when_their_switch_is_removed() {
    let mut sb = Sandbox::new();
    let sw = sb.switch("cap", "tc", &[]);
    let _a = sb.port(&sw, "a", "10.96.0.1/24", &[]);
    let mut capture = Capture::start(&sw, &[], false);
    let mut readers: Vec<Reaped> = ["monitor", "logs"]
        .iter()
        .map(|cmd| {
            Reaped::new(
                Command::new(switch_bin())
                    .args([cmd, "--switch", &sw])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    assert!(within(|| config_flag(&sw, switch_common::CFG_F_EVENTS) && config_flag(&sw, switch_common::CFG_F_LOG)));
    ok(&["down", "--switch", &sw]);
    readers.push(Reaped::new(std::mem::replace(&mut capture.child, Command::new("true").spawn().unwrap())));
    for mut r in readers {
        let ended = within(|| matches!(r.try_wait(), Ok(Some(_))));
        if !ended {
            let _ = r.kill();
        }
        let status = r.wait().unwrap();
        assert!(ended && status.success(), "a reader still ran after its switch was removed ({status})");
    }
}

/// A flood while a capture runs: every frame is either in the file or counted as lost, and
/// the capture's report says which.
#[test]
fn every_frame_of_a_flood_is_captured_or_counted() {
    let flood = 5000;
    let mut sb = Sandbox::new();
    let sw = sb.switch("cap", "tc", &[]);
    let a = sb.port(&sw, "a", "10.95.1.1/24", &[]);
    let file = TempFile::new("flood");
    let mut c = Capture::start(&sw, &["--ns", &a, "--verdict", "drop", "-w", file.path()], false);
    let frame = experimental_frame("ff:ff:ff:ff:ff:ff", "01:00:00:00:95:01");
    let script = format!(
        "import socket; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(('eth0', 0)); f=bytes.fromhex('{frame}')\nfor _ in range({flood}): s.send(f)"
    );
    assert_eq!(exec(&a, &["python3", "-c", &script]).code, 0);
    sleep(Duration::from_millis(1000));
    unsafe { libc::kill(c.child.id() as i32, libc::SIGINT) };
    let mut report = String::new();
    std::io::Read::read_to_string(&mut c.child.stdout.take().unwrap(), &mut report).unwrap();
    assert!(c.child.wait().unwrap().success(), "{report}");
    // "N frames captured, M lost; written to FILE"
    let numbers: Vec<u64> = report.split(|ch: char| !ch.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    let (captured, lost) = (numbers[0], numbers[1]);
    assert_eq!(captured + lost, flood, "{report}");
    let frames = read_pcapng(file.path());
    assert_eq!(frames.len() as u64, captured, "{report}");
    assert!(frames.iter().all(|f| f.comment == "drop: invalid-source"));
    assert!(!capture_on(&sw));
}

/// `-w -` into tcpdump: frames reach the reader as they are captured, not when the capture
/// ends.
#[test]
fn a_pipe_to_tcpdump_sees_frames_live() {
    let mut sb = Sandbox::new();
    let sw = sb.switch("cap", "tc", &[]);
    let a = sb.port(&sw, "a", "10.95.2.1/24", &[]);
    let _b = sb.port(&sw, "b", "10.95.2.2/24", &[]);
    let mut c = Capture::start(&sw, &["--ns", &a, "-w", "-"], false);
    let mut tcpdump = Reaped::new(
        Command::new("tcpdump")
            .args(["-n", "-l", "-r", "-"])
            .stdin(Stdio::from(c.child.stdout.take().unwrap()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (out, sink) = (tcpdump.stdout.take().unwrap(), lines.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    assert!(ping(&a, "10.95.2.2", 1));
    let seen = within(|| lines.lock().unwrap().iter().any(|l| l.contains("ICMP echo request")));
    // The capture still runs: what tcpdump printed came through the pipe as it happened.
    assert!(matches!(c.child.try_wait(), Ok(None)), "the capture ended early");
    assert!(seen, "nothing live through the pipe: {:?}", lines.lock().unwrap());
    unsafe { libc::kill(c.child.id() as i32, libc::SIGINT) };
    assert!(c.child.wait().unwrap().success());
    assert!(tcpdump.wait().unwrap().success(), "tcpdump read a well-formed stream to its end");
}
