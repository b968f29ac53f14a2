//! Part a: per-packet cost of the policy decision with `BPF_PROG_TEST_RUN`, with 1 and with
//! 1,000 policies selecting the measured pods, next to a no-op classifier timed by the same call
//! in the same run.
//!
//! The plans are compiled from Kubernetes objects ([`crate::objects::datapath`]) by
//! `weir_agent::policy` and written by the agent's own datapath writer into the maps of a real
//! loaded datapath (pinned under a scratch bpffs). The flow is client → server:80/TCP, both pods
//! of this node, allowed by one policy; the other policies select the same two pods with other
//! peers (namespaces, pod labels across namespaces, ipBlocks with excepts) and ports, so the
//! policy trie and the ipcache grow with them while the measured lookups stay the same.
//!
//! * **egress** — `weir_from_pod` (the client's veth): anti-spoofing, then the egress decision.
//! * **ingress** — `weir_to_pod` (the server's veth): the ingress decision.
//! * **new flow** — a SYN never seen before, one run per call, each from its own source port;
//!   conntrack is emptied before every batch so each batch sees the same fill.
//! * **established** — an ACK of a flow whose SYN passed, `repeat` runs on one skb (the packet
//!   is not rewritten: no service), cost = kernel time / `repeat`.
//! * **no-op** — `r0 = 0; exit`, timed both ways, the floor of each kind.
//!
//! Before measuring, each level checks the verdicts: the allowed SYN passes both programs, a
//! SYN to a pod the policies isolate is dropped (so the policy maps really are in force).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use aya::programs::SchedClassifier;
use weir_agent::datapath::{Datapath, LoadOptions};
use weir_agent::policy::{PolicyCompiler, PolicyContext};
use weir_common::endpoint::{EndpointInfo, ep_flags};
use weir_common::programs::{FROM_POD, TO_POD};
use weir_lab::bench::{bpf_sys, numbers, packet};

use crate::objects::{self, CLIENT, OTHER, PORT, SERVER};
use crate::scratch::ScratchBpffs;

const TC_ACT_SHOT: u32 = 2;
/// Distinct source ports per batch (10000..60000).
const MAX_CALLS: u32 = 50_000;
const ESTABLISHED_PORT: u16 = 9999;

#[derive(Clone, Debug)]
pub struct Options {
    /// Policy counts, ascending, from 1.
    pub levels: Vec<u32>,
    pub rounds: u32,
    pub repeat: u32,
    pub calls: u32,
}

/// Figures at one policy count; times in ns per packet (median over rounds).
#[derive(Clone, Debug, Default)]
pub struct Level {
    pub policies: u32,
    pub policy_entries: usize,
    pub ipcache_entries: usize,
    /// Compile + write of this level's plan (on top of the previous level's).
    pub program_secs: f64,
    pub noop_repeat: f64,
    pub noop_single: f64,
    pub egress_established: f64,
    pub egress_new: f64,
    pub ingress_established: f64,
    pub ingress_new: f64,
}

#[derive(Clone, Debug, Default)]
pub struct Results {
    pub levels: Vec<Level>,
    pub repeat: u32,
    pub calls: u32,
    pub rounds: u32,
    pub jit: String,
}

/// Runs the whole part on a thread of its own inside a fresh network namespace (the test runs
/// use its loopback; nothing reaches the machine's).
pub fn run(object: Vec<u8>, opts: Options) -> Result<Results> {
    ensure!(opts.calls <= MAX_CALLS, "--dp-calls is at most {MAX_CALLS}");
    ensure!(
        opts.levels.windows(2).all(|w| w[0] < w[1]) && opts.levels.first().is_some_and(|l| *l > 0),
        "policy levels must be ascending and start above 0: {:?}",
        opts.levels
    );
    // Only the initial namespace has this sysctl; read it before leaving it.
    let jit = std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable")
        .map_or_else(|_| "unknown".into(), |v| v.trim().to_string());
    let thread = std::thread::spawn(move || -> Result<Results> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .context("unshare(CLONE_NEWNET) for the datapath bench thread")?;
        let scratch = ScratchBpffs::create("datapath")?;
        let mut results = Bench::new(&object, &opts, &scratch)?.run()?;
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
    from_pod: OwnedFd,
    to_pod: OwnedFd,
    noop: OwnedFd,
    compiler: PolicyCompiler,
    // Last: the maps and programs it owns outlive the fds above only as long as needed.
    dp: Datapath,
}

fn program_fd(dp: &Datapath, name: &str) -> Result<OwnedFd> {
    let program: &SchedClassifier = dp
        .ebpf()
        .program(name)
        .with_context(|| format!("the object has no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not a TC classifier"))?;
    program
        .fd()
        .with_context(|| format!("{name} is not loaded"))?
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating the program fd")
}

impl<'a> Bench<'a> {
    fn new(object: &[u8], opts: &'a Options, scratch: &ScratchBpffs) -> Result<Self> {
        let mut dp = Datapath::load_object(object, &LoadOptions::new(scratch.path()))
            .context("loading the datapath (built by `cargo xtask build`)")?;
        // The test runs' skb comes in on this netns' loopback: the pods "live" behind it, so
        // the anti-spoofing check finds the client's own address on its own interface.
        let lo = nix::net::if_::if_nametoindex("lo").context("ifindex of lo")?;
        for ip in [CLIENT, SERVER, OTHER] {
            let info = EndpointInfo {
                ifindex: lo,
                flags: ep_flags::LOCAL_POD,
                ..EndpointInfo::default()
            };
            dp.upsert_endpoint(ip, &info)
                .with_context(|| format!("writing the endpoint {ip}"))?;
        }
        Ok(Bench {
            opts,
            from_pod: program_fd(&dp, FROM_POD)?,
            to_pod: program_fd(&dp, TO_POD)?,
            noop: bpf_sys::load_noop_classifier().context("loading the no-op classifier")?,
            compiler: PolicyCompiler::new(),
            dp,
        })
    }

    fn run(mut self) -> Result<Results> {
        let mut results = Results {
            repeat: self.opts.repeat,
            calls: self.opts.calls,
            rounds: self.opts.rounds,
            ..Results::default()
        };
        for &level in &self.opts.levels.clone() {
            let mut figures = self.program(level)?;
            self.check_verdicts()?;
            self.measure(&mut figures)?;
            println!(
                "datapath: {level:>5} policies ({} policy entries, {} ipcache): egress new {:.1} / established {:.1} ns, \
                 ingress new {:.1} / established {:.1} ns (no-op {:.1} / {:.1})",
                figures.policy_entries,
                figures.ipcache_entries,
                figures.egress_new,
                figures.egress_established,
                figures.ingress_new,
                figures.ingress_established,
                figures.noop_single,
                figures.noop_repeat,
            );
            results.levels.push(figures);
        }
        Ok(results)
    }

    /// Compiles the level's objects and writes the plan with the agent's writer.
    fn program(&mut self, policies: u32) -> Result<Level> {
        let snapshot = objects::snapshot(&objects::datapath(policies - 1)?)?;
        let started = Instant::now();
        let ctx = PolicyContext {
            node_name: objects::THIS_NODE.to_string(),
            ..PolicyContext::default()
        };
        let plan = self.compiler.compile(&snapshot, &ctx);
        ensure!(
            plan.errors.is_empty(),
            "the bench policies do not compile: {:?}",
            plan.errors
        );
        self.dp
            .apply_policy(&plan)
            .with_context(|| format!("writing the plan of {policies} policies"))?;
        let program_secs = started.elapsed().as_secs_f64();
        let stats = plan.stats();
        println!(
            "datapath: {policies} policies compiled and written in {:.1} ms",
            program_secs * 1e3
        );
        Ok(Level {
            policies,
            policy_entries: stats.policy_entries,
            ipcache_entries: stats.ipcache_entries,
            program_secs,
            ..Level::default()
        })
    }

    fn clear_ct(&mut self) -> Result<()> {
        clear_ct(&mut self.dp)
    }

    fn check_verdicts(&mut self) -> Result<()> {
        self.clear_ct()?;
        let allowed = packet::tcp((CLIENT, 1000), (SERVER, PORT), packet::SYN, &[]);
        for (name, fd) in [
            (FROM_POD, self.from_pod.as_fd()),
            (TO_POD, self.to_pod.as_fd()),
        ] {
            let run = bpf_sys::test_run(fd, &allowed, None, 1).context("test run")?;
            ensure!(
                run.retval != TC_ACT_SHOT,
                "{name} dropped the allowed SYN client -> server:{PORT}"
            );
        }
        // The client's egress allows only the server; the server's ingress only the client.
        let denied_egress = packet::tcp((CLIENT, 1001), (OTHER, PORT), packet::SYN, &[]);
        let denied_ingress = packet::tcp((OTHER, 1002), (SERVER, PORT), packet::SYN, &[]);
        for (name, fd, denied) in [
            (FROM_POD, self.from_pod.as_fd(), &denied_egress),
            (TO_POD, self.to_pod.as_fd(), &denied_ingress),
        ] {
            let run = bpf_sys::test_run(fd, denied, None, 1).context("test run")?;
            ensure!(
                run.retval == TC_ACT_SHOT,
                "{name} passed (verdict {}) a SYN the policies deny: the policy maps are not in force",
                run.retval
            );
        }
        self.clear_ct()
    }

    fn measure(&mut self, level: &mut Level) -> Result<()> {
        let ack = packet::tcp(
            (CLIENT, ESTABLISHED_PORT),
            (SERVER, PORT),
            packet::ACK,
            &[0u8; 10],
        );
        let mut noop_repeat = Vec::new();
        let mut noop_single = Vec::new();
        let mut egress = (Vec::new(), Vec::new());
        let mut ingress = (Vec::new(), Vec::new());
        for _ in 0..self.opts.rounds {
            noop_repeat.push(f64::from(
                bpf_sys::test_run(self.noop.as_fd(), &ack, None, self.opts.repeat)?.duration_ns,
            ));
            noop_single.push(single_runs(self.noop.as_fd(), self.opts.calls, |_| {
                ack.clone()
            })?);
            for (fd, figures) in [(&self.from_pod, &mut egress), (&self.to_pod, &mut ingress)] {
                let fd = fd.as_fd();
                clear_ct(&mut self.dp)?;
                figures.0.push(established(fd, &ack, self.opts.repeat)?);
                clear_ct(&mut self.dp)?;
                figures.1.push(single_runs(fd, self.opts.calls, |k| {
                    packet::tcp(
                        (CLIENT, 10_000 + k as u16),
                        (SERVER, PORT),
                        packet::SYN,
                        &[],
                    )
                })?);
            }
        }
        level.noop_repeat = numbers::median(&noop_repeat);
        level.noop_single = numbers::median(&noop_single);
        level.egress_established = numbers::median(&egress.0);
        level.egress_new = numbers::median(&egress.1);
        level.ingress_established = numbers::median(&ingress.0);
        level.ingress_new = numbers::median(&ingress.1);
        Ok(())
    }
}

/// Empties conntrack and policy conntrack (every entry is idle at the end of time).
fn clear_ct(dp: &mut Datapath) -> Result<()> {
    dp.ct_gc_at(u64::MAX).context("emptying conntrack")?;
    dp.polct_gc_at(u64::MAX)
        .context("emptying policy conntrack")?;
    Ok(())
}

/// The SYN of the established flow passes, then its ACK runs `repeat` times: ns per run.
fn established(fd: BorrowedFd<'_>, ack: &[u8], repeat: u32) -> Result<f64> {
    let syn = packet::tcp((CLIENT, ESTABLISHED_PORT), (SERVER, PORT), packet::SYN, &[]);
    let run = bpf_sys::test_run(fd, &syn, None, 1).context("test run of the SYN")?;
    ensure!(
        run.retval != TC_ACT_SHOT,
        "the established flow's SYN was dropped"
    );
    let run = bpf_sys::test_run(fd, ack, None, repeat).context("test run of the ACKs")?;
    ensure!(
        run.retval != TC_ACT_SHOT,
        "the established flow's ACK was dropped"
    );
    Ok(f64::from(run.duration_ns))
}

/// Trimmed mean ns of `calls` runs of one packet each (`frame(k)` for call k).
fn single_runs(fd: BorrowedFd<'_>, calls: u32, frame: impl Fn(u32) -> Vec<u8>) -> Result<f64> {
    let mut times = Vec::with_capacity(calls as usize);
    for k in 0..calls {
        let run = bpf_sys::test_run(fd, &frame(k), None, 1).context("test run")?;
        ensure!(
            run.retval != TC_ACT_SHOT,
            "an allowed packet was dropped (call {k})"
        );
        times.push(f64::from(run.duration_ns));
    }
    Ok(numbers::trimmed_mean(&mut times, 0.1))
}
