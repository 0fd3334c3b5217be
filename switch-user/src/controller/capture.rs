//! `switch capture`: the frames a switch sees, as they arrived on a port and before it acted
//! on them, each with its verdict (forwarded to which port, flooded, or dropped and why).
//!
//! ```text
//!   port ingress ──► decide ──► [capture: CAPTURE_FILTER wants it?] ──► forward / flood / drop
//!                                   └─► CAPTURE ring ──► read_ring (tokio) ──► queue ──► show
//!                                                                     (pcapng file or lines)
//! ```
//!
//! Capturing costs the datapath a copy of every wanted frame, so it is on only while a
//! capture runs (see `readers`), and the datapath has one filter: one capture per switch at a
//! time. Frames are named by the switch's port records, read again when a frame comes from a
//! port newer than the last look.
use std::{
    collections::HashMap,
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use pcap_file::{
    DataLink,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
    },
};
use serde::Serialize;
use switch_common::{
    ETH_HLEN,
    capture::{
        Filter as KernelFilter, HEADER_LEN, Header, MAX_SNAPLEN, VERDICT_DROP, VERDICT_FLOOD, VERDICT_FORWARD,
        WANT_DROPPED, WANT_FORWARDED,
    },
    events::{FRAME_F_IPV4, FRAME_F_PORTS, FrameSummary},
    nat::{PROTO_TCP, PROTO_UDP},
};
use tokio::sync::{mpsc, oneshot};

use super::{
    monitor::{Frame, PortRef, Ports, ports_of, reason_name, rfc3339, wall_time},
    readers::{self, Reader, Stream},
};
use crate::{
    error::{Error, Result},
    names::validate_name,
    state::{PortKind, Store},
    sys::blocking,
};

/// Frames waiting between the ring and whoever shows them (at most about 9.5 MB of full-size
/// records). A reader slower than the frames loses the excess here (counted), rather than
/// letting the queue grow without bound under a flood.
pub const QUEUE: usize = 1024;

/// Which verdicts a capture wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Verdicts {
    /// Frames the switch forwards: known unicast and flooded.
    Forward,
    /// Frames the switch drops.
    Drop,
    /// Both.
    #[default]
    All,
}

impl Verdicts {
    fn flags(self) -> u32 {
        match self {
            Self::Forward => WANT_FORWARDED,
            Self::Drop => WANT_DROPPED,
            Self::All => WANT_FORWARDED | WANT_DROPPED,
        }
    }
}

/// What to capture.
#[derive(Clone, Debug)]
pub struct Options {
    /// The switch.
    pub switch: String,
    /// Only frames from this namespace's port.
    pub namespace: Option<String>,
    /// Only frames from the port with this host-side interface.
    pub port: Option<String>,
    /// Only frames with these verdicts.
    pub verdicts: Verdicts,
    /// Stop after this many frames.
    pub count: Option<u64>,
    /// Bytes of each frame to keep, 1..=`MAX_SNAPLEN`.
    pub snaplen: u32,
}

/// What the switch did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Known unicast, sent to one port.
    Forward,
    /// Sent to every other port.
    Flood,
    /// Dropped.
    Drop,
}

/// One captured frame.
#[derive(Clone, Debug, Serialize)]
pub struct Captured {
    /// When the switch decided (UTC, RFC 3339 with milliseconds).
    pub time: String,
    /// The port it came in on.
    pub port: PortRef,
    /// What the switch did with it.
    pub verdict: Verdict,
    /// Why it was dropped (the reasons of `switch monitor`).
    pub reason: Option<&'static str>,
    /// The port a forwarded frame went to.
    pub to: Option<PortRef>,
    /// Frames the capture lost just before this one (the ring or the queue was full).
    pub lost: u64,
    /// Bytes of the frame kept.
    pub caplen: u32,
    /// What it is.
    pub frame: Frame,
    /// The kept bytes.
    #[serde(skip)]
    pub data: Vec<u8>,
    /// When, for the capture file.
    #[serde(skip)]
    pub at: SystemTime,
    /// The host ifindex of the port it came in on.
    #[serde(skip)]
    pub ifindex: u32,
}

/// How a capture ended.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Frames shown or written.
    pub captured: u64,
    /// Frames lost (the ring or the queue was full).
    pub lost: u64,
}

/// Captures what `opts` asks for on its switch, handing each frame to `show`, until `stop`
/// resolves, `opts.count` frames were shown, or `show` fails; `started` runs once the capture
/// is on and being read. `show` may refuse a frame with `ErrorKind::WouldBlock` (whatever it
/// writes to is behind): the frame is counted as lost and the capture goes on.
pub async fn run(
    opts: Options,
    show: impl FnMut(&Captured) -> std::io::Result<()> + Send + 'static,
    started: impl FnOnce() + Send + 'static,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Summary> {
    let switch = opts.switch.clone();
    validate_name("switch name", &switch)?;
    if !(1..=MAX_SNAPLEN).contains(&opts.snaplen) {
        return Err(Error::invalid("snap length", opts.snaplen.to_string(), format!("must be 1..={MAX_SNAPLEN}")));
    }
    let (verdicts, snaplen) = (opts.verdicts.flags(), opts.snaplen);
    let (reader, state) = Reader::join(
        &switch,
        Stream::Capture,
        |state| port_filter(state, &opts),
        async |dp, ifindex| {
            dp.require_capture()?.set_capture(Some(KernelFilter { ifindex, verdicts, snaplen, pad: 0 })).await
        },
    )
    .await?;

    let (tx, rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    let queue_lost = Arc::new(AtomicU64::new(0));
    let counter = queue_lost.clone();
    // Runs on the reader's task for every record: a copy into the queue, nothing more.
    let sink = Box::new(move |item: &[u8]| {
        if tx.try_send(item.to_vec()).is_err() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    // The reader stops on the caller's signal, when the switch is removed, or once the
    // shower has had enough.
    let (enough_tx, enough_rx) = oneshot::channel::<()>();
    let stop = readers::or_removed(&switch, stop);
    let stop = async move {
        tokio::select! {
            () = stop => {}
            _ = enough_rx => {}
        }
    };
    let streamed = reader.dp.require_capture()?.stream(sink, Box::new(started), Box::pin(stop));
    let shower = Shower { switch: switch.clone(), ports: ports_of(&state, &switch), queue_lost, count: opts.count };
    let (streamed, shown) = tokio::join!(streamed, shower.run(rx, show, enough_tx));
    reader.leave().await?;
    streamed?;
    shown
}

/// What hands the captured frames to whoever shows them.
struct Shower {
    switch: String,
    /// The switch's ports, as the last look at the records found them.
    ports: Ports,
    /// Frames lost because the queue was full, not counted yet.
    queue_lost: Arc<AtomicU64>,
    /// Frames to show before stopping.
    count: Option<u64>,
}

impl Shower {
    /// Shows the frames of `rx` through `show` until the reader stops, `show` fails or
    /// `count` frames were shown; then says `enough` (which stops the reader if it goes on).
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Vec<u8>>,
        mut show: impl FnMut(&Captured) -> std::io::Result<()>,
        enough: oneshot::Sender<()>,
    ) -> Result<Summary> {
        let mut summary = Summary::default();
        let mut result = Ok(());
        while let Some(item) = rx.recv().await {
            let Some((h, data)) = decode(&item) else { continue };
            if !self.ports.contains_key(&h.ifindex) || (h.out_ifindex != 0 && !self.ports.contains_key(&h.out_ifindex))
            {
                // A port newer than the last look; a state being rewritten is read next time.
                if let Ok(state) = blocking(|| Store::peek(crate::sys::host::state_dir())).await {
                    self.ports = ports_of(&state, &self.switch);
                }
            }
            let lost = u64::from(h.lost) + self.queue_lost.swap(0, Ordering::Relaxed);
            let c = resolve(&h, data, lost, &self.ports);
            summary.lost += lost;
            match show(&c) {
                Ok(()) => summary.captured += 1,
                // The writer behind `show` is behind: this frame is lost, not the capture.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    summary.lost += 1;
                    continue;
                }
                Err(e) => {
                    result = Err(Error::Io { context: "writing the captured frames".into(), source: e });
                    break;
                }
            }
            if self.count.is_some_and(|n| summary.captured >= n) {
                break;
            }
        }
        // Stops the reader (if the shower stopped first); frames still queued are not shown.
        let _ = enough.send(());
        summary.lost += self.queue_lost.swap(0, Ordering::Relaxed);
        result.map(|()| summary)
    }
}

/// The ifindex the kernel filter keeps (0: every port), from `--ns` or `--port`.
fn port_filter(state: &crate::state::State, opts: &Options) -> Result<u32> {
    let switch = &opts.switch;
    let found = if let Some(ns) = &opts.namespace {
        let p = state.ports(switch).find(|p| &p.owner == ns && p.kind != PortKind::Uplink);
        p.ok_or_else(|| Error::invalid("namespace", ns.clone(), format!("it has no port on switch '{switch}'")))?
    } else if let Some(port) = &opts.port {
        let p = state.ports(switch).find(|p| &p.host_if == port);
        let p = p.ok_or_else(|| {
            Error::invalid("port", port.clone(), format!("no port of switch '{switch}' has this host interface"))
        })?;
        if p.kind == PortKind::Uplink {
            return Err(Error::invalid(
                "port",
                port.clone(),
                "it is an uplink: the switch does not switch its frames (capture a port, or use tcpdump on it)",
            ));
        }
        p
    } else {
        return Ok(0);
    };
    if !found.ready || found.host_ifindex == 0 {
        return Err(Error::Command(format!("the port {} is still being made; try again", found.host_if)));
    }
    Ok(found.host_ifindex)
}

/// The header and the kept bytes of a ring item; `None` for an item that is not a record of
/// this version of the datapath.
fn decode(item: &[u8]) -> Option<(Header, &[u8])> {
    let (head, data) = item.split_at_checked(HEADER_LEN)?;
    // SAFETY: `Header` is plain old data of exactly HEADER_LEN bytes (any bit pattern is a
    // valid value); the read makes no assumption about the item's alignment.
    let h: Header = unsafe { std::ptr::read_unaligned(head.as_ptr().cast()) };
    (h.caplen as usize == data.len()).then_some((h, data))
}

/// A record named with `ports`.
fn resolve(h: &Header, data: &[u8], lost: u64, ports: &Ports) -> Captured {
    let port_ref = |ifindex: u32| ports.get(&ifindex).cloned().unwrap_or_else(|| PortRef::unknown(ifindex));
    let verdict = match h.verdict {
        VERDICT_FORWARD => Verdict::Forward,
        VERDICT_FLOOD => Verdict::Flood,
        _ => Verdict::Drop,
    };
    let at = wall_time(h.ts_ns);
    Captured {
        time: rfc3339(at),
        port: port_ref(h.ifindex),
        verdict,
        reason: (h.verdict == VERDICT_DROP).then(|| reason_name(h.reason)),
        to: (verdict == Verdict::Forward).then(|| port_ref(h.out_ifindex)),
        lost,
        caplen: h.caplen,
        frame: Frame::from(&summarize(data, h.len)),
        data: data.to_vec(),
        at,
        ifindex: h.ifindex,
    }
}

/// The summary `switch monitor` shows, from a frame's first bytes: MACs and EtherType, and for
/// IPv4 the addresses, protocol and (TCP/UDP, first fragment) ports.
fn summarize(data: &[u8], len: u32) -> FrameSummary {
    let mut f = FrameSummary { len, ..FrameSummary::default() };
    let Some(eth) = data.get(..ETH_HLEN) else { return f };
    f.dst.copy_from_slice(&eth[..6]);
    f.src.copy_from_slice(&eth[6..12]);
    f.ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    let Some(ip) = data.get(ETH_HLEN..ETH_HLEN + 20).filter(|_| f.ethertype == 0x0800) else { return f };
    f.flags = FRAME_F_IPV4;
    f.proto = ip[9];
    // As on the wire, as the datapath's summary has them.
    f.saddr = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]);
    f.daddr = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]);
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let first_fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0;
    if ihl < 20 || !first_fragment || (f.proto != PROTO_TCP && f.proto != PROTO_UDP) {
        return f;
    }
    if let Some(l4) = data.get(ETH_HLEN + ihl..ETH_HLEN + ihl + 4) {
        f.sport = u16::from_be_bytes([l4[0], l4[1]]);
        f.dport = u16::from_be_bytes([l4[2], l4[3]]);
        f.flags |= FRAME_F_PORTS;
    }
    f
}

/// What the capture file says about a frame's verdict, in its comment.
pub fn verdict_text(c: &Captured) -> String {
    match (c.verdict, &c.to, c.reason) {
        (Verdict::Forward, Some(to), _) => format!("forward to {to}"),
        (Verdict::Drop, _, Some(reason)) => format!("drop: {reason}"),
        (Verdict::Flood, ..) => "flood".to_owned(),
        (Verdict::Forward, None, _) => "forward".to_owned(),
        (Verdict::Drop, _, None) => "drop".to_owned(),
    }
}

/// A pcapng capture file that tcpdump, tshark and Wireshark read: one interface per port (named
/// by its host interface, described by its namespace), written as the port's first frame
/// comes; each frame with its verdict as the packet comment, the inbound direction flag, and
/// the frames lost before it as its drop count. Timestamps in nanoseconds.
pub struct PcapngFile<W: Write> {
    writer: PcapNgWriter<W>,
    switch: String,
    snaplen: u32,
    /// Port ifindex -> interface id in the file.
    interfaces: HashMap<u32, u32>,
}

impl<W: Write> PcapngFile<W> {
    /// Starts the file (its section header) on `out`.
    pub fn new(out: W, switch: &str, snaplen: u32) -> std::io::Result<Self> {
        let writer = PcapNgWriter::new(out).map_err(pcap_error)?;
        Ok(Self { writer, switch: switch.to_owned(), snaplen, interfaces: HashMap::new() })
    }

    /// Appends frame `c`.
    pub fn write(&mut self, c: &Captured) -> std::io::Result<()> {
        let next = self.interfaces.len() as u32;
        let id = match self.interfaces.get(&c.ifindex) {
            Some(id) => *id,
            None => {
                let idb = InterfaceDescriptionBlock {
                    linktype: DataLink::ETHERNET,
                    snaplen: self.snaplen,
                    options: vec![
                        InterfaceDescriptionOption::IfName(c.port.interface.clone().into()),
                        InterfaceDescriptionOption::IfDescription(
                            format!("port of {} on switch {}", c.port.namespace, self.switch).into(),
                        ),
                        // The writer stores nanoseconds; without this readers assume micro.
                        InterfaceDescriptionOption::IfTsResol(9),
                    ],
                };
                self.writer.write_pcapng_block(idb).map_err(pcap_error)?;
                self.interfaces.insert(c.ifindex, next);
                next
            }
        };
        let mut options = vec![
            EnhancedPacketOption::Comment(verdict_text(c).into()),
            // Direction: inbound (bits 0-1 = 01); every frame is captured as it arrived.
            EnhancedPacketOption::Flags(1),
        ];
        if c.lost > 0 {
            options.push(EnhancedPacketOption::DropCount(c.lost));
        }
        let epb = EnhancedPacketBlock {
            interface_id: id,
            timestamp: c.at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO),
            original_len: c.frame.len,
            data: c.data.as_slice().into(),
            options,
        };
        self.writer.write_pcapng_block(epb).map_err(pcap_error)?;
        Ok(())
    }

    /// Hands what is written so far to the output.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.writer.get_mut().flush()
    }

    /// Flushes and returns the output.
    pub fn finish(self) -> std::io::Result<W> {
        let mut out = self.writer.into_inner();
        out.flush()?;
        Ok(out)
    }
}

fn pcap_error(e: pcap_file::PcapError) -> std::io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// An IPv4 address of a summary.
    fn addr(a: u32) -> Ipv4Addr {
        Ipv4Addr::from(a.to_ne_bytes())
    }

    /// Ethernet + IPv4 + UDP 10.0.0.1:5000 -> 10.0.0.2:53.
    fn udp_frame() -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend([0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend([0x13, 0x88, 0, 53, 0, 12, 0, 0, b'h', b'i', b'!', b'!']);
        f
    }

    fn record(h: Header, data: &[u8]) -> Vec<u8> {
        // SAFETY: plain old data, read as bytes.
        let head: [u8; HEADER_LEN] = unsafe { std::mem::transmute(h) };
        [head.as_slice(), data].concat()
    }

    #[test]
    fn records_decode_and_name_their_ports_and_verdicts() {
        let ports: Ports = [
            (7, PortRef { namespace: "red".into(), interface: "sred".into(), workload: None }),
            (9, PortRef { namespace: "blue".into(), interface: "sblue".into(), workload: None }),
        ]
        .into();
        let data = udp_frame();
        let h = Header {
            ts_ns: 1,
            ifindex: 7,
            out_ifindex: 9,
            len: 46,
            caplen: data.len() as u32,
            verdict: VERDICT_FORWARD,
            reason: 0,
            lost: 2,
        };
        let item = record(h, &data);
        let (got, bytes) = decode(&item).unwrap();
        assert_eq!((got, bytes), (h, data.as_slice()));
        assert!(decode(&item[..item.len() - 1]).is_none(), "caplen must match the item");
        assert!(decode(&item[..10]).is_none());
        let c = resolve(&got, bytes, 2, &ports);
        assert_eq!(verdict_text(&c), "forward to blue/sblue");
        assert_eq!(
            (c.port.namespace.as_str(), c.lost, c.frame.src_port, c.frame.dst_port),
            ("red", 2, Some(5000), Some(53))
        );
        let drop =
            Header { verdict: VERDICT_DROP, reason: switch_common::events::DROP_SPOOFED_MAC, out_ifindex: 0, ..h };
        let c = resolve(&drop, bytes, 0, &ports);
        assert_eq!((verdict_text(&c), c.to.is_none()), ("drop: spoofed-mac".to_owned(), true));
        let c = resolve(&Header { verdict: VERDICT_FLOOD, ifindex: 3, ..h }, bytes, 0, &ports);
        assert_eq!((verdict_text(&c), c.port.interface.as_str()), ("flood".to_owned(), "if3"));
    }

    #[test]
    fn summaries_read_only_what_is_there() {
        let f = udp_frame();
        let s = summarize(&f, 60);
        assert_eq!(
            (addr(s.saddr), addr(s.daddr), s.proto),
            (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 17)
        );
        assert_eq!((s.sport, s.dport, s.flags), (5000, 53, FRAME_F_IPV4 | FRAME_F_PORTS));
        // Cut after the IP header (a short snap length): no ports, nothing invented.
        let s = summarize(&f[..34], 60);
        assert_eq!((s.flags, s.sport), (FRAME_F_IPV4, 0));
        let s = summarize(&f[..10], 60);
        assert_eq!((s.ethertype, s.src), (0, [0; 6]));
    }

    #[test]
    fn the_file_has_one_interface_per_port_and_a_comment_per_frame() {
        let ports: Ports = [(7, PortRef { namespace: "red".into(), interface: "sred".into(), workload: None })].into();
        let data = udp_frame();
        let h = Header { ifindex: 7, len: 46, caplen: data.len() as u32, verdict: VERDICT_FLOOD, ..Header::default() };
        let mut file = PcapngFile::new(Vec::new(), "sw0", 9216).unwrap();
        file.write(&resolve(&h, &data, 0, &ports)).unwrap();
        file.write(&resolve(&h, &data, 5, &ports)).unwrap();
        file.write(&resolve(&Header { ifindex: 8, ..h }, &data, 0, &ports)).unwrap();
        let bytes = file.finish().unwrap();
        let mut reader = pcap_file::pcapng::PcapNgReader::new(bytes.as_slice()).unwrap();
        let mut packets = vec![];
        while let Some(block) = reader.next_block() {
            if let pcap_file::pcapng::Block::EnhancedPacket(p) = block.unwrap().into_owned() {
                packets.push((p.interface_id, p.data.to_vec(), p.options.clone()));
            }
        }
        assert_eq!(reader.interfaces().len(), 2);
        assert_eq!(packets.iter().map(|p| p.0).collect::<Vec<_>>(), vec![0, 0, 1]);
        assert!(packets.iter().all(|p| p.1 == data));
        assert!(packets[0].2.contains(&EnhancedPacketOption::Comment("flood".into())));
        assert!(packets[1].2.contains(&EnhancedPacketOption::DropCount(5)));
    }
}
