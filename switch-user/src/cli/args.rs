//! The command line as clap sees it: every command, flag and typed value. Values are parsed
//! here (CIDRs, MACs, port ranges, `NS:PORT` targets), so a handler never sees a string it
//! still has to check.
use clap::{Args, Parser, Subcommand};
use switch::{
    controller::{
        capture::Verdicts,
        forward::{PortRange, Target},
        monitor::EventKind,
    },
    kind::DatapathKind,
    names::{Cidr, IpCidr, Mac},
    state::{Proto, Redirect},
};

const AFTER_HELP: &str = "\
Quick start:
  switch up                                   # switch sw0
  switch ns add red  --ip 192.168.15.1/24     # namespace red on sw0
  switch ns add blue --ip 192.168.15.2/24
  switch ns exec red -- ping -c 2 192.168.15.2
  switch ports                                # every port: namespaces, gateway, uplinks
  switch fdb                                  # learned MAC table
  switch stats                                # per-port counters
  switch down                                 # remove sw0, red and blue

Every command that changes something is idempotent and safe to re-run after a crash.
Exit status: 0 success, 2 bad input (nothing was changed), 1 other failures.";

/// An eBPF switch for network namespaces: the Linux bridge's job done by TC programs on the
/// host ends of veth pairs.
#[derive(Debug, Parser)]
#[command(name = "switch", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    /// More diagnostics on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print the result as JSON instead of text (every command that reports something).
    #[arg(long, global = true)]
    pub json: bool,
    /// Work for the "host" network namespace /run/netns/NAME instead of the machine: its own
    /// switches, state (/run/switch/@NAME) and pins (/sys/fs/bpf/switch/@NAME). The same as
    /// running the command under `nsenter --net=/run/netns/NAME`, which is detected.
    #[arg(long, global = true, value_name = "NAME")]
    pub host_netns: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// The default switch name.
pub const DEFAULT_SWITCH: &str = "sw0";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a switch: load the datapath and pin it under /sys/fs/bpf/switch/NAME. Idempotent.
    Up(UpArgs),
    /// Remove a switch, its ports and their namespaces. Idempotent.
    Down(DownArgs),
    /// Namespaces: add one to a switch, remove, list, run a command inside.
    #[command(subcommand)]
    Ns(NsCommand),
    /// List the ports of every kind (namespace, adopted, gateway, uplink, tunnel) of a switch,
    /// or of every switch.
    Ports(PortsArgs),
    /// Connect two namespaces with a plain veth pair (no switch), creating them if needed.
    Link(LinkArgs),
    /// Forward ports of the uplinks to namespaces (DNAT in eBPF: no iptables, no proxy).
    #[command(subcommand)]
    Forward(ForwardCommand),
    /// Show the MAC table (forwarding database) of a switch, or edit static entries.
    Fdb(FdbArgs),
    /// The peers of a switch's tunnel port (switch up --vxlan): other hosts' VTEP addresses.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Show per-port packet and byte counters of a switch.
    Stats(SwitchArgs),
    /// Show how full the MAC table and the connection table are and what they evicted (tc,
    /// xdp). A full table evicts its least recently used entries; `evicted` counts them.
    Tables(SwitchArgs),
    /// Stream the datapath's log records until Ctrl-C or SIGTERM (logging is off otherwise).
    Logs(LogsArgs),
    /// Show the datapath's events as they happen until Ctrl-C or SIGTERM: dropped frames
    /// with the reason, learned stations, moves, NAT connections, ports added and removed
    /// (tc, xdp).
    Monitor(MonitorArgs),
    /// Capture the frames a switch sees, with its verdict (forwarded where, flooded, dropped
    /// why), to a pcapng file for tcpdump/Wireshark or as lines (tc, xdp).
    Capture(CaptureArgs),
    /// Print Prometheus metrics of every switch on the host (the numbers of `stats`, `tables`
    /// and `forward list`) once, or serve them over HTTP with `metrics serve`.
    Metrics(MetricsArgs),
    /// List switches.
    List,
    /// Run a userspace switch in the foreground until Ctrl-C/SIGTERM, then remove it and its
    /// ports (what `up --datapath userspace` runs in the background).
    Run(RunArgs),
    /// Measure every datapath against the Linux bridge and a bare veth pair (interleaved
    /// rounds; TCP throughput, 64-byte UDP frame rate, latency, bring-up time).
    Bench(BenchArgs),
    /// Two namespaces (red, blue) on an eBPF switch: ping both ways, show the MAC table, tear
    /// everything down.
    Demo,
    /// Serve Docker's network driver `switch` until Ctrl-C or SIGTERM: `docker network create
    /// -d switch` makes a switch, `docker run --network NET -p ...` plugs containers into it.
    DockerPlugin(DockerPluginArgs),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Switch name (`--name` is the old spelling).
    #[arg(long = "switch", visible_alias = "name", default_value = DEFAULT_SWITCH)]
    pub switch: String,
    /// Seconds after which a silent station is forgotten [default: 300, as the Linux bridge].
    #[arg(long, value_name = "SECS")]
    pub ageing: Option<u64>,
    /// How frames are switched: `tc` (eBPF on tc ingress), `xdp` (eBPF on native XDP),
    /// `userspace` (a tokio process on AF_PACKET sockets) or `bridge` (the kernel's Linux
    /// bridge, as a baseline) [default: tc].
    #[arg(long, value_enum)]
    pub datapath: Option<DatapathKind>,
    /// Give the host an address on the switch's segment, e.g. 192.168.15.254/24 (like a
    /// bridge's own address): host <-> namespace traffic works, and namespaces added later get
    /// a default route via it and must be in its subnet. Given twice, once per family
    /// (`--gateway 192.168.15.254/24 --gateway fd00:15::fe/64`), the segment is dual-stack:
    /// namespaces with an IPv6 address get a default IPv6 route via it too.
    #[arg(long = "gateway", value_name = "CIDR")]
    pub gateways: Vec<IpCidr>,
    /// Host interface where traffic from outside arrives, for port forwarding (repeatable;
    /// needs --gateway and the tc or xdp datapath).
    #[arg(long = "uplink", value_name = "IFACE")]
    pub uplinks: Vec<String>,
    /// Do not source-NAT the namespaces' outbound TCP/UDP to the uplink's address (their
    /// connections are still tracked, so only their replies come back in).
    #[arg(long)]
    pub no_masquerade: bool,
    /// Make the segment routable (tc, xdp): the host may route packets into it from any
    /// interface and out of it to any interface. Without it, only forwarded ports, replies of
    /// the segment's own connections and the host itself reach the namespaces, and two
    /// switches' segments cannot reach each other through the host.
    #[arg(long)]
    pub routable: bool,
    /// New MAC addresses a port without port security (`ns add --no-port-security`) may
    /// learn per ageing period; more are dropped and counted (MAC LIMIT in `switch stats`).
    /// 0: no limit [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_learned: Option<u32>,
    /// How known unicast reaches its port (tc datapath): `peer` (bpf_redirect_peer, straight into the
    /// namespace) or `egress` (bpf_redirect to the host-side veth) [default: peer].
    #[arg(long, value_enum)]
    pub redirect: Option<Redirect>,
    /// Join the switches of other hosts on VXLAN segment VNI (tc datapath): a tunnel port,
    /// a VXLAN device whose peers `switch peer add` names. Namespaces added later get the
    /// underlay's MTU minus 50.
    #[arg(long, value_name = "VNI", requires = "underlay")]
    pub vxlan: Option<u32>,
    /// Userspace datapath: after a frame, each lane keeps looking at its rings for this many
    /// microseconds before it goes to sleep, so the next frame (a reply, the next packet of a
    /// burst) is switched without a thread wake-up. Worth it only where the lanes' CPUs are
    /// otherwise idle: a lane spins on its CPU, so applications that need that CPU lose
    /// latency and throughput (on a 2-CPU host it made everything slower). 0 (the default):
    /// lanes sleep as soon as their rings are empty. At most 1000000.
    #[arg(long, value_name = "USECS")]
    pub busy_poll: Option<u32>,
    /// The host interface the VXLAN traffic goes over (its IPv4 address is the local VTEP's).
    #[arg(long, value_name = "IFACE", requires = "vxlan")]
    pub underlay: Option<String>,
    /// UDP port of the VXLAN traffic [default: 4789].
    #[arg(long, value_name = "PORT", requires = "vxlan")]
    pub vxlan_port: Option<u16>,
}

#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Add a peer: another host's VTEP address (its underlay address). Floods are replicated
    /// to every peer; the tunnel takes frames from peers only. Idempotent.
    Add {
        /// The peer's underlay IPv4 address.
        addr: std::net::Ipv4Addr,
        /// Switch whose tunnel it is.
        #[arg(long, default_value = DEFAULT_SWITCH)]
        switch: String,
    },
    /// Remove a peer and forget the stations learned at it. Idempotent.
    Del {
        /// The peer's underlay IPv4 address.
        addr: std::net::Ipv4Addr,
        /// Switch whose tunnel it is.
        #[arg(long, default_value = DEFAULT_SWITCH)]
        switch: String,
    },
    /// List the peers (of every switch with a tunnel, or of one) with the stations at each.
    List {
        /// Only this switch's peers.
        #[arg(long)]
        switch: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Switch name (`--name` is the old spelling).
    #[arg(long = "switch", visible_alias = "name", default_value = DEFAULT_SWITCH)]
    pub switch: String,
    /// Seconds after which a silent station is forgotten [default: 300].
    #[arg(long, value_name = "SECS")]
    pub ageing: Option<u64>,
    /// Serve an existing switch record made by `switch up --datapath userspace` (internal).
    #[arg(long, hide = true)]
    pub daemon: bool,
    /// Learning limit of ports without port security, per ageing period (internal: `up
    /// --max-learned` passes it to the background process).
    #[arg(long, hide = true, value_name = "N")]
    pub max_learned: Option<u32>,
    /// After a frame, each lane keeps looking at its rings for this many microseconds before
    /// it sleeps: lower latency for a busier CPU (as `up --busy-poll`) [default: 0].
    #[arg(long, value_name = "USECS")]
    pub busy_poll: Option<u32>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Smoke run: one round of 1 s per tool, bring-up of 10 namespaces, 5 podman starts one
    /// after another and 10 at once (under 3 minutes).
    #[arg(long)]
    pub quick: bool,
    /// Rounds of every contender [default: 3, quick: 1].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Seconds per tool run [default: 5, quick: 1].
    #[arg(long)]
    pub secs: Option<u64>,
    /// Only these contenders, with their comparison's baselines (every ratio is against
    /// them): veth, bridge, tc, tc-open (port security off), tc-egress, xdp, userspace,
    /// userspace-poll (`up --busy-poll 100`), ovs (Open vSwitch's userspace datapath); port
    /// forwarding: routed, iptables, ebpf-forward; CNI plugins: switch-cni, bridge-cni;
    /// containers under podman: podman (both of podman-switch-cni, podman-bridge); VXLAN
    /// between hosts: switch-vxlan, bridge-vxlan; Kubernetes Services: services (all of
    /// tc-no-rules, tc-services, bridge-services); pods through CRI: cri (both of
    /// cri-switch-cni, cri-bridge); IPv6 between two namespaces: ipv6 (all of veth6, bridge6,
    /// tc6); `bringup` for bringing up and removing namespaces. A comparison none of whose
    /// contenders is named is left out.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Write an SVG chart to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<std::path::PathBuf>,
    /// Write a Markdown report to FILE (docs/benchmarks.md is made this way).
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Switch name (`--name` is the old spelling).
    #[arg(long = "switch", visible_alias = "name", default_value = DEFAULT_SWITCH)]
    pub switch: String,
}

#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// Switch name.
    #[arg(long, default_value = DEFAULT_SWITCH)]
    pub switch: String,
}

#[derive(Debug, Args)]
pub struct PortsArgs {
    /// Only this switch's ports.
    #[arg(long)]
    pub switch: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Switch name.
    #[arg(long, default_value = DEFAULT_SWITCH)]
    pub switch: String,
}

#[derive(Debug, Args)]
#[command(after_help = MONITOR_HELP)]
pub struct MonitorArgs {
    /// Switch name.
    #[arg(long, default_value = DEFAULT_SWITCH)]
    pub switch: String,
    /// Only these kinds of event, comma-separated [default: all].
    #[arg(long = "type", value_name = "KINDS", value_enum, value_delimiter = ',')]
    pub kinds: Vec<EventKind>,
    /// Only events of this namespace's port (a move: to or from it).
    #[arg(long = "ns", value_name = "NS")]
    pub namespace: Option<String>,
}

const MONITOR_HELP: &str = "\
One line per event: time (UTC), namespace/port, kind, reason, and the frame (MACs,
EtherType, IPv4 addresses and TCP/UDP ports). With --json, one JSON object per line.

  switch monitor                          # everything on sw0
  switch monitor --type drop --ns red     # why red's frames are dropped
  switch monitor --type learn,move --json
  switch monitor --type nat               # connections to forwarded ports, masqueraded ones

Drop reasons: malformed (shorter than an Ethernet header), invalid-source (group or zero
source MAC), same-port (destination behind the port it came from), spoofed-mac,
spoofed-ip, spoofed-arp, tagged (port security: a VLAN-tagged frame from a secured port),
mac-limit (the port's or the peer's learning limit), not-peer (on the tunnel port: a frame
from an address that is not a peer, or of another VNI), nat-refused (a packet of the segment NAT could not translate), masquerade-share (a new
connection of a namespace that holds its share of the masquerade ports towards that remote),
unsolicited-routed (routed towards the segment, asked for by nothing there), icmp-foreign (an
ICMP error at an uplink that is not its connection's own).
NAT events: forward and masquerade show the first packet of a new connection as it came
and, after '->', the address and port it is translated to; expired (idle past its timeout)
and evicted (pushed out of a full table) show the connection as seen from outside.
Age events name a station the switch forgot after the ageing time (seen within a second).

The datapath emits events only while a monitor runs, at most 200 per second per CPU;
what it leaves out is counted on the next event (\"+N suppressed\").";

#[derive(Debug, Args)]
#[command(after_help = CAPTURE_HELP)]
pub struct CaptureArgs {
    /// Switch name.
    #[arg(long, default_value = DEFAULT_SWITCH)]
    pub switch: String,
    /// Only frames from this namespace's port.
    #[arg(long = "ns", value_name = "NS", conflicts_with = "port")]
    pub namespace: Option<String>,
    /// Only frames from the port with this host-side interface (see `switch ports`).
    #[arg(long, value_name = "IFACE")]
    pub port: Option<String>,
    /// Only frames the switch forwards (unicast or flood), drops, or all.
    #[arg(long, value_enum, default_value = "all")]
    pub verdict: Verdicts,
    /// Stop after N frames.
    #[arg(short = 'c', long = "count", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Bytes of each frame to keep; 0 means the most, 9216.
    #[arg(short = 's', long = "snaplen", value_name = "BYTES", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=switch_common::capture::MAX_SNAPLEN as i64))]
    pub snaplen: u32,
    /// Write the frames to this pcapng file ('-': standard output) instead of one line each.
    /// The file is made new (mode 0600); an existing one is refused unless --force.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: Option<std::path::PathBuf>,
    /// Replace the -w FILE if it exists: only a regular file of your own (never a link, or
    /// another user's file).
    #[arg(long, requires = "write")]
    pub force: bool,
}

const CAPTURE_HELP: &str = "\
Every frame arriving on a port of the switch (a namespace's or the host's), as it arrived
and before the switch acted on it, with the verdict: forward (known unicast, and the port
it went to), flood, or drop with the reason of `switch monitor`.

  switch capture                              # every frame on sw0, one line each
  switch capture --ns red --verdict drop      # what red sends that the switch refuses
  switch capture -c 100 -w red.pcapng --ns red
  tcpdump -n -r red.pcapng                    # read it back (Wireshark shows the verdicts)
  switch capture -w - | tcpdump -n -r -       # live through tcpdump's dissectors

The file is pcapng: one interface per port (its host interface, described by the
namespace), the verdict as each frame's comment, frames lost before it as its drop count.
Without -w, one line per frame: time, port, verdict, frame; --json: one object per line.

The datapath copies frames only while a capture runs, at most 9216 bytes of each (a GSO
super-frame is cut there; its full length is recorded), one capture per switch at a
time. A capture that cannot keep up loses frames and says how many. Frames from the
uplinks to forwarded ports are not switched frames: capture them on the uplink.";

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, after_help = METRICS_HELP)]
pub struct MetricsArgs {
    #[command(subcommand)]
    pub command: Option<MetricsCommand>,
}

const METRICS_HELP: &str = "\
The metrics name every switch, namespace, host interface and forwarded port with its
target address: whoever can scrape them learns the layout of the host's networks. The
server has no TLS or authentication and listens on loopback only unless told otherwise.
A Prometheus on another machine should reach it through an SSH tunnel or a reverse proxy
that authenticates, or the server should listen only on the address of a network you
trust.

Examples:
  switch metrics                                   # once, on stdout
  switch metrics serve                             # http://127.0.0.1:9370/metrics
  curl -s http://127.0.0.1:9370/metrics";

#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// Serve the metrics at http://IP:PORT/metrics until Ctrl-C or SIGTERM. Each scrape
    /// reads fresh numbers; a switch that goes away is gone from the next scrape.
    #[command(after_help = METRICS_HELP)]
    Serve {
        /// Address and port to listen on (IP:PORT; port 0 picks a free one and prints it).
        /// Anything but a loopback address exposes namespace names and addresses to
        /// whoever can reach it.
        #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:9370")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
pub enum NsCommand {
    /// Create namespace NS with interface eth0 (address --ip) and plug it into a switch.
    Add(NsAddArgs),
    /// Remove namespace NS and everything made for it (port, veth, links).
    Del {
        /// Namespace name.
        ns: String,
    },
    /// Plug a namespace switch did not make into a switch: a container's
    /// (`/proc/PID/ns/net` of a `docker run --network none` container), or any under
    /// /run/netns. Only the veth pair is made (and removed by `ns detach`, `ns del` or
    /// `down`); the namespace itself is never deleted.
    Attach(NsAttachArgs),
    /// Take an attached namespace out of its switch (its veth pair and forwards go; the
    /// namespace stays). Detaching one that is not attached is not an error.
    Detach {
        /// The name given to `ns attach`.
        name: String,
    },
    /// List the namespaces made by switch and the attached ones.
    List,
    /// Run a command inside namespace NS (like `ip netns exec`).
    #[command(trailing_var_arg = true)]
    Exec {
        /// Namespace name.
        ns: String,
        /// Command and arguments (after `--`).
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct NsAddArgs {
    /// Namespace name (letters, digits, '_', '.', '-'; at most 64).
    pub ns: String,
    /// Address with prefix length of the namespace's eth0, e.g. 192.168.15.1/24; given again
    /// with an IPv6 one (`--ip fd00:15::1/64`), the namespace is dual-stack (IPv6 is off in
    /// it otherwise). One IPv4 address is required.
    #[arg(long = "ip", value_name = "CIDR", required = true)]
    pub ips: Vec<IpCidr>,
    /// Switch to plug the namespace into.
    #[arg(long, default_value = DEFAULT_SWITCH)]
    pub switch: String,
    /// MAC address of the namespace's eth0 [default: random, chosen by the kernel].
    #[arg(long)]
    pub mac: Option<Mac>,
    /// Let the port carry other stations' MACs and addresses (a nested bridge, a VM, a
    /// router). By default a port accepts only its own MAC, its own IPv4 address (0.0.0.0
    /// for DHCP), ARP that claims nothing else, IPv6 from its own and its link-local address,
    /// neighbour discovery that claims nothing else, and no router advertisement (tc, xdp and
    /// userspace datapaths).
    #[arg(long)]
    pub no_port_security: bool,
}

#[derive(Debug, Args)]
pub struct NsAttachArgs {
    /// A name for the port, shown by `ns list` and used by `forward add --to NAME:PORT` and
    /// `ns detach` (letters, digits, '_', '.', '-'; at most 64).
    pub name: String,
    /// The namespace file, e.g. /proc/1234/ns/net or /run/netns/NAME.
    #[arg(long, value_name = "PATH")]
    pub netns: std::path::PathBuf,
    /// Address with prefix length of the new interface; once per family for dual-stack (see
    /// `ns add`). One IPv4 address is required.
    #[arg(long = "ip", value_name = "CIDR", required = true)]
    pub ips: Vec<IpCidr>,
    /// Name of the interface made inside the namespace.
    #[arg(long, default_value = "eth0")]
    pub ifname: String,
    /// Switch to plug the namespace into.
    #[arg(long, default_value = DEFAULT_SWITCH)]
    pub switch: String,
    /// MAC address of the new interface [default: random, chosen by the kernel].
    #[arg(long)]
    pub mac: Option<Mac>,
    /// MTU of the veth pair [default: the kernel's, 1500].
    #[arg(long)]
    pub mtu: Option<u32>,
    /// Let the port carry other stations' MACs and addresses (see `ns add`).
    #[arg(long)]
    pub no_port_security: bool,
}

#[derive(Debug, Subcommand)]
pub enum ForwardCommand {
    /// Forward host PORT (or FIRST-LAST) on every uplink address to NS:PORT (or a range of the
    /// same size). The server sees the client's real address.
    Add {
        /// Protocol.
        #[arg(long, value_enum)]
        proto: Proto,
        /// Host port or range, e.g. 8080 or 8000-8099.
        #[arg(long, value_name = "PORT[-PORT]")]
        host_port: PortRange,
        /// Target, e.g. web:80 or web:8000-8099.
        #[arg(long, value_name = "NS:PORT[-PORT]")]
        to: Target,
        /// Switch whose uplinks answer.
        #[arg(long, default_value = DEFAULT_SWITCH)]
        switch: String,
    },
    /// Stop forwarding a port (range) as it was added: new connections stop at once,
    /// established ones finish.
    Del {
        /// Protocol.
        #[arg(long, value_enum)]
        proto: Proto,
        /// Host port or range, as added.
        #[arg(long, value_name = "PORT[-PORT]")]
        host_port: PortRange,
        /// Switch.
        #[arg(long, default_value = DEFAULT_SWITCH)]
        switch: String,
    },
    /// List forwards with packet, byte and connection counters.
    List {
        /// Only this switch's forwards.
        #[arg(long)]
        switch: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct LinkArgs {
    /// First namespace.
    pub ns1: String,
    /// Second namespace.
    pub ns2: String,
    /// Address of NS1's end, e.g. 10.0.0.1/24.
    #[arg(long)]
    pub ip1: Cidr,
    /// Address of NS2's end, e.g. 10.0.0.2/24.
    #[arg(long)]
    pub ip2: Cidr,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FdbArgs {
    #[command(subcommand)]
    pub command: Option<FdbCommand>,
    #[command(flatten)]
    pub show: SwitchArgs,
}

#[derive(Debug, Subcommand)]
pub enum FdbCommand {
    /// Add a static entry: MAC is behind namespace NS's port (never aged, never moved).
    Add {
        /// Station MAC address.
        mac: Mac,
        /// Namespace whose port the station is behind.
        #[arg(long)]
        ns: String,
    },
    /// Delete the entry of MAC (static or learned).
    Del {
        /// Station MAC address.
        mac: Mac,
        /// Switch name.
        #[arg(long, default_value = DEFAULT_SWITCH)]
        switch: String,
    },
}

const DOCKER_PLUGIN_HELP: &str = "\
Docker finds the driver by its socket: /run/docker/plugins/NAME.sock serves the driver NAME
(`-d NAME`). Start it before dockerd (a systemd unit ordered before docker.service: see
docs/docker.md); it keeps nothing in memory, so it can be restarted while containers run.

Options of `docker network create -d switch -o KEY=VALUE`:
  uplink=IFACE[,IFACE]   where -p answers and outbound traffic leaves (masqueraded)
  datapath=tc|xdp|userspace|bridge   [default: tc]
  masquerade=false       outbound traffic keeps the containers' addresses
  port-security=false    containers may send as other stations
  mtu=N                  the containers' interfaces

Examples:
  switch docker-plugin &
  docker network create -d switch -o uplink=eth1 --subnet 10.20.0.0/24 web
  docker run -d --network web -p 8080:80 nginx
  switch ports; switch forward list";

#[derive(Debug, Args)]
#[command(after_help = DOCKER_PLUGIN_HELP)]
pub struct DockerPluginArgs {
    /// The Unix socket to serve (its file name is the driver's name for Docker).
    #[arg(long, value_name = "PATH", default_value = switch::docker::DEFAULT_SOCKET)]
    pub socket: std::path::PathBuf,
    /// Where the networks' options are kept, so their switches can be made again after a
    /// reboot.
    #[arg(long, value_name = "DIR", default_value = switch::docker::DEFAULT_DATA_DIR)]
    pub data_dir: std::path::PathBuf,
    /// Docker's API socket (unix:///run/docker.sock): the driver asks it for the names of
    /// the containers, which the driver protocol does not tell, and `switch ports` shows them
    /// as their ports' workload. Without it the ports are named by their endpoints only.
    #[arg(long, value_name = "unix:///PATH")]
    pub docker_host: Option<String>,
}
