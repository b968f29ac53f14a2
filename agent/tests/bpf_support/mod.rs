//! Shared harness of the BPF_PROG_TEST_RUN tests (`bpf_*.rs`): loading the
//! object, filling the maps through the `weir_common` ABI, a packet builder,
//! checksum recomputation and a private network namespace per test.
//!
//! Every test runs on its own thread inside a fresh network namespace
//! (`unshare(CLONE_NEWNET)` of that thread only): the kernel runs test
//! packets against that namespace's devices and routes, and the namespace
//! vanishes with the thread, also after a panic.
#![allow(clippy::unwrap_used, dead_code)]

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{SchedClassifier, TestRun, TestRunOptions},
};
use weir_common::{
    DropReason,
    config::DatapathConfig,
    ct::{Ct4Entry, Ct4Key},
    endpoint::{EndpointInfo, ep_flags},
    lb::{
        Lb4AffinityKey, Lb4AffinityValue, Lb4Backend, Lb4Key, Lb4MaglevKey, Lb4RevNat, Lb4Service,
    },
    maps,
    metrics::{Direction, MetricKey, MetricValue},
};

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "BPF_PROG_TEST_RUN tests need root; run them through `cargo xtask test` as root"
    );
}

/// Runs `test` on a thread of its own inside a fresh network namespace with
/// `lo` up, and re-raises its panic.
pub fn in_netns<T: Send + 'static>(test: impl FnOnce() -> T + Send + 'static) -> T {
    require_root();
    let thread = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET) for this test's thread");
        ip(&["link", "set", "lo", "up"]);
        test()
    });
    match thread.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Gives the calling test thread a private mount namespace with a bpffs
/// mounted on a fresh directory, runs `f` with that directory, and unmounts.
/// Call it inside [`in_netns`]: the mount never reaches the machine's mount
/// namespace, and it dies with the thread even after a panic.
pub fn with_private_bpffs<T>(f: impl FnOnce(&std::path::Path) -> T) -> T {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .expect("unshare(CLONE_NEWNS) for this test's thread");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make this thread's mounts private");
    let dir =
        std::env::temp_dir().join(format!("weir-bpftest-{}-{}", std::process::id(), unique()));
    std::fs::create_dir(&dir).unwrap();
    mount(
        Some("bpf"),
        &dir,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount a bpffs");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&dir)));
    umount2(&dir, MntFlags::MNT_DETACH).expect("unmount the test bpffs");
    std::fs::remove_dir(&dir).unwrap();
    match result {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs `ip ARGS` in the calling thread's network namespace (a child
/// process forked from this thread inherits it).
pub fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?} failed");
}

pub fn sysctl(path: &str, value: &str) {
    std::fs::write(format!("/proc/sys/{path}"), value)
        .unwrap_or_else(|e| panic!("write /proc/sys/{path}: {e}"));
}

pub fn ifindex(name: &str) -> u32 {
    nix::net::if_::if_nametoindex(name).unwrap_or_else(|e| panic!("ifindex of {name}: {e}"))
}

/// The MAC of a device in the calling thread's network namespace (from
/// `ip`: /sys shows the namespace it was mounted in, not ours).
pub fn mac_of(name: &str) -> [u8; 6] {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "dev", name])
        .output()
        .expect("run ip");
    assert!(out.status.success(), "ip link show {name}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mac = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC for {name} in {text:?}"));
    parse_mac(mac)
}

pub fn parse_mac(text: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16).unwrap();
    }
    mac
}

/// The object `cargo xtask build` compiled (`WEIR_EBPF_OBJ`).
pub fn object() -> Vec<u8> {
    let path = std::env::var_os("WEIR_EBPF_OBJ").expect(
        "WEIR_EBPF_OBJ is not set: run through `cargo xtask test` (or set it to the eBPF object)",
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.to_string_lossy()))
}

pub fn be_addr(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

pub fn be_port(port: u16) -> u16 {
    port.to_be()
}

/// One backend of a test service.
#[derive(Clone, Copy, Debug)]
pub struct Backend {
    pub id: u32,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub local: bool,
}

impl Backend {
    pub fn new(id: u32, addr: &str, port: u16) -> Self {
        Self {
            id,
            addr: addr.parse().unwrap(),
            port,
            local: false,
        }
    }

    pub fn local(mut self) -> Self {
        self.local = true;
        self
    }
}

/// One frontend of a test service, written like the agent's writer does.
#[derive(Clone, Debug)]
pub struct Service {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
    pub scope: u8,
    pub flags: u16,
    pub rev_nat_index: u16,
    pub affinity_timeout: u32,
    pub backends: Vec<Backend>,
}

impl Service {
    pub fn new(addr: &str, port: u16, proto: u8, rev_nat_index: u16) -> Self {
        Self {
            addr: addr.parse().unwrap(),
            port,
            proto,
            scope: weir_common::lb::SCOPE_EXTERNAL,
            flags: weir_common::lb::svc_flags::CLUSTER_IP,
            rev_nat_index,
            affinity_timeout: 0,
            backends: Vec::new(),
        }
    }

    pub fn backends(mut self, backends: &[Backend]) -> Self {
        self.backends = backends.to_vec();
        self
    }

    pub fn flags(mut self, flags: u16) -> Self {
        self.flags = flags;
        self
    }

    pub fn scope(mut self, scope: u8) -> Self {
        self.scope = scope;
        self
    }

    fn key(&self, slot: u16) -> Lb4Key {
        Lb4Key {
            address: be_addr(self.addr),
            dport: be_port(self.port),
            backend_slot: slot,
            proto: self.proto,
            scope: self.scope,
            pad: [0; 2],
        }
    }
}

/// A loaded object with typed access to its maps and programs.
pub struct Datapath {
    pub ebpf: Ebpf,
    /// from-pod drops packets whose source is not the pod behind the veth
    /// (anti-spoofing). Tests of other things set this (the default) to
    /// have [`Self::run_on`] register an unknown source of a from-pod
    /// packet as the local pod behind the run's interface, without MACs
    /// (so delivery to it is left to the stack, as before).
    pub auto_pods: bool,
}

impl Datapath {
    pub fn load() -> Self {
        Self::load_with(&mut EbpfLoader::new())
    }

    pub fn load_with(loader: &mut EbpfLoader<'_>) -> Self {
        let ebpf = loader.load(&object()).expect("load the eBPF object");
        Self {
            ebpf,
            auto_pods: true,
        }
    }

    fn map(&mut self, name: &str) -> &mut aya::maps::Map {
        self.ebpf
            .map_mut(name)
            .unwrap_or_else(|| panic!("the object lacks map {name}"))
    }

    fn hash<K: aya::Pod, V: aya::Pod>(&mut self, name: &str) -> HashMap<&mut MapData, K, V> {
        HashMap::try_from(self.map(name)).unwrap_or_else(|e| panic!("map {name}: {e}"))
    }

    /// Writes a frontend in the writer's order: backends, slots, revnat,
    /// then slot 0 with the count.
    pub fn service(&mut self, svc: &Service) {
        let mut backends = self.hash::<u32, Lb4Backend>(maps::LB4_BACKENDS);
        for b in &svc.backends {
            let value = Lb4Backend {
                address: be_addr(b.addr),
                port: be_port(b.port),
                proto: svc.proto,
                local: u8::from(b.local),
                ..Lb4Backend::default()
            };
            backends.insert(b.id, value, 0).unwrap();
        }
        let mut services = self.hash::<Lb4Key, Lb4Service>(maps::LB4_SERVICES);
        for (i, b) in svc.backends.iter().enumerate() {
            let slot = Lb4Service {
                backend_id: b.id,
                rev_nat_index: svc.rev_nat_index,
                ..Lb4Service::default()
            };
            services.insert(svc.key(i as u16 + 1), slot, 0).unwrap();
        }
        let mut revnat = self.hash::<u16, Lb4RevNat>(maps::LB4_REVNAT);
        let value = Lb4RevNat {
            address: be_addr(svc.addr),
            port: be_port(svc.port),
            pad: 0,
        };
        revnat.insert(svc.rev_nat_index, value, 0).unwrap();
        let mut services = self.hash::<Lb4Key, Lb4Service>(maps::LB4_SERVICES);
        let front = Lb4Service {
            backend_id: 0,
            count: svc.backends.len() as u16,
            rev_nat_index: svc.rev_nat_index,
            flags: svc.flags,
            pad: 0,
            affinity_timeout: svc.affinity_timeout,
        };
        services.insert(svc.key(0), front, 0).unwrap();
    }

    pub fn maglev_table(&mut self, rev_nat_index: u16, table: &[u32]) {
        let mut maglev = self.hash::<Lb4MaglevKey, u32>(maps::LB4_MAGLEV);
        for (index, id) in table.iter().enumerate() {
            let key = Lb4MaglevKey {
                rev_nat_index,
                pad: 0,
                index: index as u32,
            };
            maglev.insert(key, *id, 0).unwrap();
        }
    }

    pub fn endpoint(&mut self, addr: &str, ifindex: u32, mac: [u8; 6], node_mac: [u8; 6]) {
        let mut eps = self.hash::<u32, EndpointInfo>(maps::ENDPOINTS);
        let info = EndpointInfo {
            ifindex,
            flags: ep_flags::LOCAL_POD,
            mac,
            node_mac,
            ..EndpointInfo::default()
        };
        eps.insert(be_addr(addr.parse().unwrap()), info, 0).unwrap();
    }

    pub fn remove_backend(&mut self, id: u32) {
        let mut backends = self.hash::<u32, Lb4Backend>(maps::LB4_BACKENDS);
        backends.remove(&id).unwrap();
    }

    pub fn set_affinity(
        &mut self,
        client: &str,
        rev_nat_index: u16,
        backend_id: u32,
        last_used_ns: u64,
    ) {
        let mut map = self.hash::<Lb4AffinityKey, Lb4AffinityValue>(maps::LB4_AFFINITY);
        let key = Lb4AffinityKey {
            client: be_addr(client.parse().unwrap()),
            rev_nat_index,
            pad: 0,
        };
        let value = Lb4AffinityValue {
            last_used_ns,
            backend_id,
            pad: 0,
        };
        map.insert(key, value, 0).unwrap();
    }

    pub fn config(&mut self, config: DatapathConfig) {
        let mut array: Array<&mut MapData, DatapathConfig> =
            Array::try_from(self.map(maps::CONFIG)).unwrap();
        array.set(0, config, 0).unwrap();
    }

    pub fn ct(&mut self) -> BTreeMap<CtKey, Ct4Entry> {
        let ct = self.hash::<Ct4Key, Ct4Entry>(maps::CT4);
        ct.iter()
            .map(|r| {
                let (k, v) = r.unwrap();
                (CtKey::from(k), v)
            })
            .collect()
    }

    /// Puts an unrelated entry into conntrack (fills a one-entry test map).
    pub fn fill_ct(&mut self) {
        let mut ct = self.hash::<Ct4Key, Ct4Entry>(maps::CT4);
        let key = Ct4Key {
            saddr: 1,
            ..Ct4Key::default()
        };
        ct.insert(key, Ct4Entry::default(), 0).unwrap();
    }

    pub fn affinity(&mut self) -> Vec<(Lb4AffinityKey, Lb4AffinityValue)> {
        let map = self.hash::<Lb4AffinityKey, Lb4AffinityValue>(maps::LB4_AFFINITY);
        map.iter().map(|r| r.unwrap()).collect()
    }

    /// Packets counted under (direction, reason), summed over CPUs.
    pub fn count(&mut self, direction: Direction, reason: DropReason) -> u64 {
        let counters: PerCpuArray<&mut MapData, MetricValue> =
            PerCpuArray::try_from(self.map(maps::METRICS)).unwrap();
        let per_cpu = counters
            .get(&MetricKey::new(direction, reason).index(), 0)
            .unwrap();
        per_cpu.iter().map(|v| v.packets).sum()
    }

    fn classifier(&mut self, name: &str) -> &mut SchedClassifier {
        let program: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("no program {name}"))
            .try_into()
            .unwrap();
        if program.fd().is_err() {
            program
                .load()
                .unwrap_or_else(|e| panic!("load {name}: {e:#?}"));
        }
        program
    }

    /// Registers the source of a from-pod IPv4 packet as a pod on
    /// `ifindex` when the endpoint map lacks it ([`Self::auto_pods`]).
    fn register_source(&mut self, packet: &[u8], ifindex: u32) {
        if packet.len() < 34 || packet[12..14] != [0x08, 0x00] {
            return;
        }
        let saddr = u32::from_ne_bytes(packet[26..30].try_into().unwrap());
        let mut eps = self.hash::<u32, EndpointInfo>(maps::ENDPOINTS);
        if eps.get(&saddr, 0).is_ok() {
            return;
        }
        let info = EndpointInfo {
            // A test run without an interface runs on `lo`, index 1.
            ifindex: if ifindex == 0 { LO_IFINDEX } else { ifindex },
            flags: ep_flags::LOCAL_POD,
            ..EndpointInfo::default()
        };
        eps.insert(saddr, info, 0).unwrap();
    }

    /// Runs a TC program on `packet` (as received on `ifindex`, 0: `lo`).
    pub fn run_on(&mut self, name: &str, packet: &[u8], ifindex: u32) -> Run {
        if self.auto_pods && name == weir_common::programs::FROM_POD {
            self.register_source(packet, ifindex);
        }
        let mut out = vec![0u8; 2048];
        let mut ctx = [0u8; SK_BUFF_SIZE];
        ctx[SK_BUFF_IFINDEX..SK_BUFF_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(packet);
        opts.data_out = Some(&mut out);
        if ifindex != 0 {
            opts.ctx_in = Some(&ctx);
        }
        let result = self
            .classifier(name)
            .test_run(opts)
            .unwrap_or_else(|e| panic!("test run of {name}: {e:#?}"));
        out.truncate(result.data_size_out as usize);
        Run {
            verdict: result.return_value,
            packet: out,
        }
    }

    pub fn run(&mut self, name: &str, packet: &[u8]) -> Run {
        self.run_on(name, packet, 0)
    }
}

/// `lo` in a fresh network namespace.
pub const LO_IFINDEX: u32 = 1;

/// `sizeof(struct __sk_buff)` and the offset of its `ifindex`.
const SK_BUFF_SIZE: usize = 192;
const SK_BUFF_IFINDEX: usize = 40;

/// A conntrack key in host terms, for readable assertions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CtKey {
    pub saddr: Ipv4Addr,
    pub sport: u16,
    pub daddr: Ipv4Addr,
    pub dport: u16,
    pub proto: u8,
    pub direction: u8,
}

impl From<Ct4Key> for CtKey {
    fn from(k: Ct4Key) -> Self {
        Self {
            saddr: Ipv4Addr::from(k.saddr.to_ne_bytes()),
            sport: u16::from_be(k.sport),
            daddr: Ipv4Addr::from(k.daddr.to_ne_bytes()),
            dport: u16::from_be(k.dport),
            proto: k.proto,
            direction: k.direction,
        }
    }
}

impl CtKey {
    pub fn new(s: (&str, u16), d: (&str, u16), proto: u8, direction: u8) -> Self {
        Self {
            saddr: s.0.parse().unwrap(),
            sport: s.1,
            daddr: d.0.parse().unwrap(),
            dport: d.1,
            proto,
            direction,
        }
    }
}

/// A program's verdict and the packet as it left the program.
pub struct Run {
    pub verdict: u32,
    pub packet: Vec<u8>,
}

impl Run {
    pub fn view(&self) -> View<'_> {
        View(&self.packet)
    }
}

// ---------------------------------------------------------------- packets

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

/// Builds Ethernet + IPv4 (+ options) + TCP/UDP/ICMP frames with valid
/// checksums.
#[derive(Clone, Debug)]
pub struct Builder {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub tcp_options: Vec<u8>,
    pub ip_options: Vec<u8>,
    pub payload: Vec<u8>,
    pub ttl: u8,
    pub id: u16,
    /// (more fragments, offset in 8-byte units)
    pub frag: (bool, u16),
    pub udp_zero_csum: bool,
}

impl Builder {
    fn new(src: (&str, u16), dst: (&str, u16), proto: u8) -> Self {
        Self {
            src: src.0.parse().unwrap(),
            dst: dst.0.parse().unwrap(),
            sport: src.1,
            dport: dst.1,
            proto,
            tcp_flags: 0,
            seq: 1000,
            ack: 0,
            tcp_options: Vec::new(),
            ip_options: Vec::new(),
            payload: Vec::new(),
            ttl: 64,
            id: 0x1234,
            frag: (false, 0),
            udp_zero_csum: false,
        }
    }

    pub fn tcp(src: (&str, u16), dst: (&str, u16), flags: u8) -> Self {
        let mut b = Self::new(src, dst, TCP);
        b.tcp_flags = flags;
        b
    }

    pub fn udp(src: (&str, u16), dst: (&str, u16)) -> Self {
        let mut b = Self::new(src, dst, UDP);
        b.payload = b"ping".to_vec();
        b
    }

    pub fn icmp_echo(src: &str, dst: &str) -> Self {
        let mut b = Self::new((src, 0), (dst, 0), ICMP);
        b.payload = vec![8, 0, 0, 0, 0, 1, 0, 1];
        b
    }

    /// An ICMP message (type, code, 2 checksum bytes, rest); the checksum
    /// is filled in.
    pub fn icmp(src: &str, dst: &str, message: &[u8]) -> Self {
        let mut b = Self::new((src, 0), (dst, 0), ICMP);
        b.payload = message.to_vec();
        b
    }

    /// An ICMP error (`icmp_type`, `code`) quoting `quoted` (an IP packet
    /// without its Ethernet header), cut after 8 bytes of L4 header.
    pub fn icmp_error(src: &str, dst: &str, icmp_type: u8, code: u8, quoted: &[u8]) -> Self {
        let ihl = usize::from(quoted[0] & 0x0f) * 4;
        let mut message = vec![icmp_type, code, 0, 0, 0, 0, 0, 0];
        message.extend_from_slice(&quoted[..ihl + 8]);
        Self::icmp(src, dst, &message)
    }

    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    pub fn seq_ack(mut self, seq: u32, ack: u32) -> Self {
        self.seq = seq;
        self.ack = ack;
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let l4 = self.l4();
        let ip_hlen = 20 + self.ip_options.len();
        assert_eq!(ip_hlen % 4, 0, "IP options must pad to 4 bytes");
        let mut p = Vec::new();
        p.extend_from_slice(&GATEWAY_MAC);
        p.extend_from_slice(&CLIENT_MAC);
        p.extend_from_slice(&0x0800u16.to_be_bytes());
        p.push(0x40 | (ip_hlen / 4) as u8);
        p.push(0);
        p.extend_from_slice(&((ip_hlen + l4.len()) as u16).to_be_bytes());
        p.extend_from_slice(&self.id.to_be_bytes());
        let frag = (u16::from(self.frag.0) << 13) | self.frag.1;
        p.extend_from_slice(&frag.to_be_bytes());
        p.push(self.ttl);
        p.push(self.proto);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&self.src.octets());
        p.extend_from_slice(&self.dst.octets());
        p.extend_from_slice(&self.ip_options);
        let check = checksum(&p[14..14 + ip_hlen]);
        p[24..26].copy_from_slice(&check.to_be_bytes());
        p.extend_from_slice(&l4);
        p
    }

    /// The L4 segment with its checksum (over the whole datagram).
    fn l4(&self) -> Vec<u8> {
        let mut s = Vec::new();
        match self.proto {
            TCP => {
                assert_eq!(self.tcp_options.len() % 4, 0);
                s.extend_from_slice(&self.sport.to_be_bytes());
                s.extend_from_slice(&self.dport.to_be_bytes());
                s.extend_from_slice(&self.seq.to_be_bytes());
                s.extend_from_slice(&self.ack.to_be_bytes());
                s.push((((20 + self.tcp_options.len()) / 4) << 4) as u8);
                s.push(self.tcp_flags);
                s.extend_from_slice(&64240u16.to_be_bytes());
                s.extend_from_slice(&[0, 0, 0, 0]);
                s.extend_from_slice(&self.tcp_options);
                s.extend_from_slice(&self.payload);
                let c = l4_checksum(self.src, self.dst, TCP, &s);
                s[16..18].copy_from_slice(&c.to_be_bytes());
            }
            UDP => {
                s.extend_from_slice(&self.sport.to_be_bytes());
                s.extend_from_slice(&self.dport.to_be_bytes());
                s.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                s.extend_from_slice(&[0, 0]);
                s.extend_from_slice(&self.payload);
                if !self.udp_zero_csum {
                    let c = l4_checksum(self.src, self.dst, UDP, &s);
                    s[6..8].copy_from_slice(&c.to_be_bytes());
                }
            }
            _ => {
                s.extend_from_slice(&self.payload);
                if self.proto == ICMP && s.len() >= 4 {
                    let c = checksum(&s);
                    s[2..4].copy_from_slice(&c.to_be_bytes());
                }
            }
        }
        s
    }
}

/// The Internet checksum (RFC 1071) of `data`, as a big-endian value.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

fn sum(data: &[u8], mut acc: u32) -> u32 {
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        acc += u32::from(word);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// TCP/UDP checksum with the pseudo-header; UDP's 0 becomes 0xffff.
pub fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    let c = !fold(sum(segment, sum(&pseudo, 0)));
    if proto == UDP && c == 0 { 0xffff } else { c }
}

/// Read access to a frame's fields, and checksum recomputation.
pub struct View<'a>(pub &'a [u8]);

impl View<'_> {
    pub fn ip_hlen(&self) -> usize {
        usize::from(self.0[14] & 0x0f) * 4
    }
    pub fn tot_len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.0[16], self.0[17]]))
    }
    pub fn proto(&self) -> u8 {
        self.0[23]
    }
    pub fn ttl(&self) -> u8 {
        self.0[22]
    }
    pub fn saddr(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.0[26], self.0[27], self.0[28], self.0[29])
    }
    pub fn daddr(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.0[30], self.0[31], self.0[32], self.0[33])
    }
    pub fn l4(&self) -> usize {
        14 + self.ip_hlen()
    }
    pub fn sport(&self) -> u16 {
        let o = self.l4();
        u16::from_be_bytes([self.0[o], self.0[o + 1]])
    }
    pub fn dport(&self) -> u16 {
        let o = self.l4();
        u16::from_be_bytes([self.0[o + 2], self.0[o + 3]])
    }
    pub fn src(&self) -> (Ipv4Addr, u16) {
        (self.saddr(), self.sport())
    }
    pub fn dst(&self) -> (Ipv4Addr, u16) {
        (self.daddr(), self.dport())
    }
    pub fn dst_mac(&self) -> [u8; 6] {
        self.0[0..6].try_into().unwrap()
    }
    pub fn src_mac(&self) -> [u8; 6] {
        self.0[6..12].try_into().unwrap()
    }
    pub fn tcp_u32(&self, at: usize) -> u32 {
        let o = self.l4() + at;
        u32::from_be_bytes(self.0[o..o + 4].try_into().unwrap())
    }
    pub fn tcp_flags(&self) -> u8 {
        self.0[self.l4() + 13]
    }
    pub fn l4_csum_field(&self) -> u16 {
        let at = self.l4() + if self.proto() == TCP { 16 } else { 6 };
        u16::from_be_bytes([self.0[at], self.0[at + 1]])
    }

    /// Asserts the IP header checksum byte by byte against a recomputation.
    pub fn assert_ip_csum(&self) {
        let mut header = self.0[14..14 + self.ip_hlen()].to_vec();
        let field = [header[10], header[11]];
        header[10] = 0;
        header[11] = 0;
        assert_eq!(field, checksum(&header).to_be_bytes(), "IP header checksum");
    }

    /// Asserts the TCP/UDP checksum byte by byte against a recomputation
    /// (a UDP zero checksum must stay zero).
    pub fn assert_l4_csum(&self) {
        let start = self.l4();
        let end = 14 + self.tot_len();
        let mut segment = self.0[start..end].to_vec();
        let at = if self.proto() == TCP { 16 } else { 6 };
        let field = [segment[at], segment[at + 1]];
        if self.proto() == UDP && field == [0, 0] {
            return;
        }
        segment[at] = 0;
        segment[at + 1] = 0;
        let expected = l4_checksum(self.saddr(), self.daddr(), self.proto(), &segment);
        assert_eq!(field, expected.to_be_bytes(), "L4 checksum");
    }

    /// Asserts an ICMP message's checksum byte by byte.
    pub fn assert_icmp_csum(&self) {
        let start = self.l4();
        let end = 14 + self.tot_len();
        let mut message = self.0[start..end].to_vec();
        let field = [message[2], message[3]];
        message[2] = 0;
        message[3] = 0;
        assert_eq!(field, checksum(&message).to_be_bytes(), "ICMP checksum");
    }

    /// The IP header quoted in an ICMP error, as a view of its own (with a
    /// fake Ethernet header so the accessors apply).
    pub fn quoted(&self) -> Vec<u8> {
        let mut frame = vec![0u8; 14];
        frame.extend_from_slice(&self.0[self.l4() + 8..]);
        frame
    }

    pub fn assert_checksums(&self) {
        self.assert_ip_csum();
        if self.proto() == ICMP {
            self.assert_icmp_csum();
        } else {
            self.assert_l4_csum();
        }
    }
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    assert_eq!(rc, 0, "clock_gettime");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Distinct values for tests that need unique names.
pub fn unique() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Pearson's chi-square statistic of `counts` against a uniform split.
pub fn chi_square(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&c| {
            let d = c as f64 - expected;
            d * d / expected
        })
        .sum()
}
