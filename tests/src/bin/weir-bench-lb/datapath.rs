//! Part a: per-packet cost of `weir_from_pod` with `BPF_PROG_TEST_RUN`, with 1 to 100k services
//! of 10 backends installed, next to a no-op classifier timed by the same call in the same run.
//!
//! What is measured, exactly:
//!
//! * **established** — one TCP flow, set up by a SYN first, then an ACK run `repeat` times on one
//!   skb. The kernel reuses that skb, so a program that DNATs it would see its own output (a
//!   packet to the backend, a different flow) from the second run on. The flow therefore goes to
//!   a probe service whose ten backends are the service address itself: every run does the full
//!   established path (two conntrack lookups, the rewrite with checksum updates, the local
//!   endpoint lookup) on the same bytes. Cost = kernel time / `repeat`.
//! * **new flow** — a SYN of a flow never seen before, one `BPF_PROG_TEST_RUN` per packet
//!   (`repeat = 1`), each with its own source address and port, so every packet misses
//!   conntrack, looks up the service, picks a backend and creates both conntrack entries.
//!   Conntrack is emptied before every batch of new flows, so each batch sees the same fill
//!   (0 to 2 x calls entries) and it never fills. Two variants: every SYN to the same
//!   service, and every SYN to a service drawn at random from all installed ones (the map is then
//!   read cold: with 100k services it holds 1.1M entries).
//! * **no-op** — `r0 = 0; exit`, timed both ways (amortised over `repeat`, and one run per call,
//!   which adds the timer's own cost once per packet), as the floor for each kind.
//!
//! Services are written straight into the maps through the `weir_common` ABI, in the agent
//! writer's order (backends, slots, reverse NAT, then the slot-0 count), as ClusterIPs in the
//! external scope as the agent writes them. The reverse-NAT index is a u16, so above 65,535
//! services indices repeat; the forward path never reads that map, so the lookups measured are
//! unaffected (the agent itself cannot program more than 65,535 frontends: see the report).

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use aya::maps::{HashMap, MapData};
use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader};
use weir_common::ct::{Ct4Entry, Ct4Key};
use weir_common::lb::{Lb4Backend, Lb4Key, Lb4RevNat, Lb4Service, SCOPE_EXTERNAL, svc_flags};
use weir_common::maps as names;
use weir_common::programs::FROM_POD;

use crate::bpf_sys;
use crate::packet;
use crate::stats;

const TC_ACT_OK: u32 = 0;
const SERVICE_PORT: u16 = 80;
const BACKEND_PORT: u16 = 8080;
/// First service address: service `i` is 10.96.0.1 + i.
const FIRST_VIP: u32 = u32::from_be_bytes([10, 96, 0, 1]);
/// First backend address: backend `k` of service `i` is 10.128.0.0 + i * backends + k.
const FIRST_BACKEND: u32 = u32::from_be_bytes([10, 128, 0, 0]);
/// The established-flow probe service (outside the numbered range).
const PROBE_VIP: Ipv4Addr = Ipv4Addr::new(10, 95, 255, 254);
const PROBE_BACKEND_ID: u32 = 0xf000_0000;
const PROBE_CLIENT: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 244, 255, 1), 40000);
/// Distinct source ports per round and kind (10000..60000).
const MAX_CALLS: u32 = 50_000;

#[derive(Clone, Debug)]
pub struct Options {
    /// Service counts, ascending; services are added on top of the previous level.
    pub levels: Vec<u32>,
    pub backends: u32,
    pub rounds: u32,
    /// Runs per call for the amortised figures.
    pub repeat: u32,
    /// Calls (packets) per round for the one-run-per-call figures.
    pub calls: u32,
}

/// Figures at one service count; times in ns per packet (median over rounds).
#[derive(Clone, Debug, Default)]
pub struct Level {
    pub services: u32,
    /// Seconds it took to write the services added for this level.
    pub install_secs: f64,
    pub noop_repeat: f64,
    pub established: f64,
    pub noop_single: f64,
    pub new_same: f64,
    pub new_spread: f64,
}

#[derive(Clone, Debug, Default)]
pub struct Results {
    pub levels: Vec<Level>,
    pub options_repeat: u32,
    pub options_calls: u32,
    pub options_rounds: u32,
    pub backends: u32,
    pub jit: String,
}

/// Runs the whole part on a thread of its own inside a fresh network namespace (the test runs
/// use that namespace's loopback; nothing reaches the machine's).
pub fn run(object: Vec<u8>, opts: Options) -> Result<Results> {
    ensure!(opts.calls <= MAX_CALLS, "--dp-calls is at most {MAX_CALLS}");
    ensure!(
        opts.levels.windows(2).all(|w| w[0] < w[1]) && opts.levels.first().is_some_and(|l| *l > 0),
        "service levels must be ascending and start above 0: {:?}",
        opts.levels
    );
    // Only the initial namespace has this sysctl; read it before leaving it.
    let jit = std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable")
        .map_or_else(|_| "unknown".into(), |v| v.trim().to_string());
    let thread = std::thread::spawn(move || -> Result<Results> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .context("unshare(CLONE_NEWNET) for the datapath bench thread")?;
        let mut results = Bench::new(&object, &opts)?.run()?;
        results.jit = jit;
        Ok(results)
    });
    match thread.join() {
        Ok(result) => result,
        Err(_) => bail!("the datapath bench thread panicked"),
    }
}

struct Bench<'a> {
    opts: &'a Options,
    // Owns the programs (the maps were taken out of it).
    _ebpf: Ebpf,
    from_pod: OwnedFd,
    noop: OwnedFd,
    services: HashMap<MapData, Lb4Key, Lb4Service>,
    backends: HashMap<MapData, u32, Lb4Backend>,
    revnat: HashMap<MapData, u16, Lb4RevNat>,
    ct: HashMap<MapData, Ct4Key, Ct4Entry>,
    installed: u32,
    rng: stats::Rng,
}

impl<'a> Bench<'a> {
    fn new(object: &[u8], opts: &'a Options) -> Result<Self> {
        let most = opts.levels.iter().copied().max().unwrap_or(1);
        // Room for the largest level plus the probe; the same capacity at every level, so only
        // the fill changes between levels.
        let slots = (most + 1) * (opts.backends + 1);
        let backend_entries = (most + 1) * opts.backends;
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(names::LB4_SERVICES, slots.max(names::LB4_SERVICES_ENTRIES));
        loader.map_max_entries(
            names::LB4_BACKENDS,
            backend_entries.max(names::LB4_BACKENDS_ENTRIES),
        );
        let mut ebpf = loader
            .load(object)
            .context("loading the eBPF object (built by `cargo xtask build`)")?;
        let program: &mut SchedClassifier = ebpf
            .program_mut(FROM_POD)
            .with_context(|| format!("the object has no program {FROM_POD}"))?
            .try_into()
            .with_context(|| format!("{FROM_POD} is not a TC classifier"))?;
        program
            .load()
            .with_context(|| format!("loading {FROM_POD} (verifier)"))?;
        let from_pod = program
            .fd()
            .context("program fd")?
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating the program fd")?;
        let noop = bpf_sys::load_noop_classifier().context("loading the no-op classifier")?;
        let services = take_hash(&mut ebpf, names::LB4_SERVICES)?;
        let backends = take_hash(&mut ebpf, names::LB4_BACKENDS)?;
        let revnat = take_hash(&mut ebpf, names::LB4_REVNAT)?;
        let ct = take_hash(&mut ebpf, names::CT4)?;
        let mut bench = Bench {
            opts,
            _ebpf: ebpf,
            from_pod,
            noop,
            services,
            backends,
            revnat,
            ct,
            installed: 0,
            rng: stats::Rng::seeded(),
        };
        bench.install_probe()?;
        Ok(bench)
    }

    fn run(mut self) -> Result<Results> {
        let mut results = Results {
            options_repeat: self.opts.repeat,
            options_calls: self.opts.calls,
            options_rounds: self.opts.rounds,
            backends: self.opts.backends,
            ..Results::default()
        };
        for &level in &self.opts.levels.clone() {
            let started = Instant::now();
            self.install_up_to(level)?;
            let install_secs = started.elapsed().as_secs_f64();
            println!(
                "datapath: {level} services x {} backends installed ({install_secs:.1} s); measuring",
                self.opts.backends
            );
            let figures = self.measure_level(level)?;
            println!(
                "datapath: {level:>6} services: established {:.1} ns (no-op {:.1}), new flow {:.1} / {:.1} ns spread (no-op {:.1})",
                figures.established,
                figures.noop_repeat,
                figures.new_same,
                figures.new_spread,
                figures.noop_single
            );
            results.levels.push(Level {
                install_secs,
                ..figures
            });
        }
        Ok(results)
    }

    // ------------------------------------------------------------ maps

    fn install_probe(&mut self) -> Result<()> {
        let key = |slot: u16| Lb4Key {
            address: u32::from_ne_bytes(PROBE_VIP.octets()),
            dport: SERVICE_PORT.to_be(),
            backend_slot: slot,
            proto: 6,
            scope: SCOPE_EXTERNAL,
            pad: [0; 2],
        };
        for k in 0..self.opts.backends {
            let backend = Lb4Backend {
                address: u32::from_ne_bytes(PROBE_VIP.octets()),
                port: SERVICE_PORT.to_be(),
                proto: 6,
                ..Lb4Backend::default()
            };
            self.backends
                .insert(PROBE_BACKEND_ID + k, backend, 0)
                .context("writing a probe backend")?;
            let slot = Lb4Service {
                backend_id: PROBE_BACKEND_ID + k,
                rev_nat_index: 1,
                ..Lb4Service::default()
            };
            self.services
                .insert(key(k as u16 + 1), slot, 0)
                .context("writing a probe slot")?;
        }
        let front = Lb4Service {
            count: self.opts.backends as u16,
            rev_nat_index: 1,
            flags: svc_flags::CLUSTER_IP,
            ..Lb4Service::default()
        };
        self.services
            .insert(key(0), front, 0)
            .context("writing the probe frontend")
    }

    /// Writes services `installed..level` in the agent writer's order.
    fn install_up_to(&mut self, level: u32) -> Result<()> {
        let per = self.opts.backends;
        let mut last_report = Instant::now();
        for i in self.installed..level {
            let rev_nat_index = (i % u32::from(u16::MAX)) as u16 + 1;
            let key = |slot: u16| Lb4Key {
                address: vip(i).to_be(),
                dport: SERVICE_PORT.to_be(),
                backend_slot: slot,
                proto: 6,
                scope: SCOPE_EXTERNAL,
                pad: [0; 2],
            };
            for k in 0..per {
                let backend = Lb4Backend {
                    address: (FIRST_BACKEND + i * per + k).to_be(),
                    port: BACKEND_PORT.to_be(),
                    proto: 6,
                    ..Lb4Backend::default()
                };
                self.backends
                    .insert(backend_id(i, k, per), backend, 0)
                    .with_context(|| format!("writing backend {k} of service {i}"))?;
            }
            for k in 0..per {
                let slot = Lb4Service {
                    backend_id: backend_id(i, k, per),
                    rev_nat_index,
                    ..Lb4Service::default()
                };
                self.services
                    .insert(key(k as u16 + 1), slot, 0)
                    .with_context(|| format!("writing slot {k} of service {i}"))?;
            }
            if i < u32::from(u16::MAX) {
                let value = Lb4RevNat {
                    address: vip(i).to_be(),
                    port: SERVICE_PORT.to_be(),
                    pad: 0,
                };
                self.revnat
                    .insert(rev_nat_index, value, 0)
                    .with_context(|| format!("writing reverse NAT of service {i}"))?;
            }
            let front = Lb4Service {
                count: per as u16,
                rev_nat_index,
                flags: svc_flags::CLUSTER_IP,
                ..Lb4Service::default()
            };
            self.services
                .insert(key(0), front, 0)
                .with_context(|| format!("writing the frontend of service {i}"))?;
            if last_report.elapsed().as_secs() >= 5 {
                println!("datapath: installing services: {}/{level}", i + 1);
                last_report = Instant::now();
            }
        }
        self.installed = level;
        Ok(())
    }

    fn clear_ct(&mut self) -> Result<()> {
        let keys: Vec<Ct4Key> = self
            .ct
            .keys()
            .collect::<std::result::Result<_, _>>()
            .context("listing conntrack")?;
        for key in keys {
            // An entry gone already (LRU) is as good as removed.
            let _ = self.ct.remove(&key);
        }
        Ok(())
    }

    // ------------------------------------------------------------ measurement

    fn measure_level(&mut self, level: u32) -> Result<Level> {
        let mut noop_repeat = Vec::new();
        let mut established = Vec::new();
        let mut noop_single = Vec::new();
        let mut new_same = Vec::new();
        let mut new_spread = Vec::new();
        let ack = packet::tcp(
            PROBE_CLIENT,
            (PROBE_VIP, SERVICE_PORT),
            packet::ACK,
            &[0u8; 10],
        );
        for round in 0..self.opts.rounds {
            self.clear_ct()?;
            self.establish_probe_flow()?;
            noop_repeat.push(f64::from(
                bpf_sys::test_run(self.noop.as_fd(), &ack, None, self.opts.repeat)?.duration_ns,
            ));
            established.push(self.established(&ack)?);
            noop_single.push(self.noop_single(&ack)?);
            // Every new-flow batch starts from an empty conntrack: its fill (0 to 2 x calls
            // entries) changes what a miss and an insert cost, so it must be the same for all.
            self.clear_ct()?;
            new_same.push(self.new_flows(round, 0, level, false)?);
            self.clear_ct()?;
            new_spread.push(self.new_flows(round, 1, level, true)?);
        }
        Ok(Level {
            services: level,
            install_secs: 0.0,
            noop_repeat: stats::median(&noop_repeat),
            established: stats::median(&established),
            noop_single: stats::median(&noop_single),
            new_same: stats::median(&new_same),
            new_spread: stats::median(&new_spread),
        })
    }

    fn establish_probe_flow(&mut self) -> Result<()> {
        let syn = packet::tcp(PROBE_CLIENT, (PROBE_VIP, SERVICE_PORT), packet::SYN, &[]);
        let mut out = vec![0u8; 256];
        let run = bpf_sys::test_run(self.from_pod.as_fd(), &syn, Some(&mut out), 1)
            .context("test run of the probe SYN")?;
        ensure!(
            run.retval == TC_ACT_OK,
            "the probe SYN got verdict {}",
            run.retval
        );
        Ok(())
    }

    /// ns per packet of the established flow, amortised over `repeat` runs; checks the verdict
    /// and that the packet still goes to the probe address (it was translated in place).
    fn established(&mut self, ack: &[u8]) -> Result<f64> {
        let mut out = vec![0u8; 256];
        let run = bpf_sys::test_run(self.from_pod.as_fd(), ack, Some(&mut out), self.opts.repeat)
            .context("test run of the established flow")?;
        ensure!(
            run.retval == TC_ACT_OK,
            "the established flow got verdict {}",
            run.retval
        );
        out.truncate(run.data_size_out as usize);
        ensure!(
            packet::destination(&out) == Some((PROBE_VIP, SERVICE_PORT)),
            "the established flow left as {:?}",
            packet::destination(&out)
        );
        ensure!(
            self.ct.iter().count() == 2,
            "the established flow should hold exactly its two conntrack entries"
        );
        Ok(f64::from(run.duration_ns))
    }

    fn noop_single(&mut self, frame: &[u8]) -> Result<f64> {
        let mut times = Vec::with_capacity(self.opts.calls as usize);
        for _ in 0..self.opts.calls {
            let run = bpf_sys::test_run(self.noop.as_fd(), frame, None, 1)?;
            times.push(f64::from(run.duration_ns));
        }
        Ok(stats::trimmed_mean(&mut times, 0.1))
    }

    /// Trimmed mean ns per SYN of `calls` new flows, to service 0 or to random installed
    /// services; each SYN must come out DNATed to one of its service's backends.
    fn new_flows(&mut self, round: u32, kind: u8, level: u32, spread: bool) -> Result<f64> {
        let per = self.opts.backends;
        let client = Ipv4Addr::new(10, 244, 1 + (round % 250) as u8, 1 + kind);
        let mut times = Vec::with_capacity(self.opts.calls as usize);
        let mut out = vec![0u8; 256];
        for call in 0..self.opts.calls {
            let service = if spread { self.rng.below(level) } else { 0 };
            let syn = packet::tcp(
                (client, 10_000 + call as u16),
                (Ipv4Addr::from(vip(service)), SERVICE_PORT),
                packet::SYN,
                &[],
            );
            let run = bpf_sys::test_run(self.from_pod.as_fd(), &syn, Some(&mut out), 1)
                .context("test run of a new flow")?;
            let to = packet::destination(&out[..run.data_size_out as usize]);
            let first = FIRST_BACKEND + service * per;
            let translated = to.is_some_and(|(addr, port)| {
                let addr = u32::from(addr);
                port == BACKEND_PORT && addr >= first && addr < first + per
            });
            ensure!(
                run.retval == TC_ACT_OK && translated,
                "a new flow to service {service} got verdict {} and left as {to:?}",
                run.retval
            );
            times.push(f64::from(run.duration_ns));
        }
        Ok(stats::trimmed_mean(&mut times, 0.1))
    }
}

/// Service `i`'s address, host order.
fn vip(i: u32) -> u32 {
    FIRST_VIP + i
}

fn backend_id(service: u32, k: u32, per: u32) -> u32 {
    service * per + k + 1
}

fn take_hash<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>> {
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("the object has no map {name}"))?;
    HashMap::try_from(map).with_context(|| format!("map {name} is not the expected hash"))
}
