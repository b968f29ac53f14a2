//! Part b: new TCP connections per second and request latency from a client pod to a 3-backend
//! ClusterIP, in one lab, one client node per mechanism and service count, so every mechanism
//! is set up once and the runs can be interleaved:
//!
//! ```text
//!  node1              3 backend pods (the `serve` workload on :8080), nothing else
//!  node2  direct      client pod -> the backend pod IPs (picked at random per connection)
//!  per service count N (10, 10k):
//!  nodeW  weir        weir-agent with N services from manifests; client pod registered with it
//!  nodeI  iptables    kube-proxy's iptables-mode rules for the same N services (iptables-restore)
//!  nodeN  nftables    kube-proxy's nftables-mode table for the same N services (nft -f)
//! ```
//!
//! Every client node is otherwise identical: a plain lab node with native routes. No node runs
//! two mechanisms: the agent runs only on weir nodes (no netfilter rules there), the rules exist
//! only on their nodes (no BPF programs there), and the direct node has neither. The target is
//! the middle service of N (position N/2 in `KUBE-SERVICES`); the other services point at
//! addresses nothing uses. Each round runs every mechanism once per N, the order rotating;
//! ratios are medians of the per-round ratios (runs of one round are seconds apart).

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use weir_lab::{Lab, Node, Pod};

use crate::agent::{Agent, PinnedLb};
use crate::kube_proxy;
use crate::loadgen::LoadReport;
use crate::manifests::{self, Service};
use crate::stats;

const BACKENDS: usize = 3;
const BACKEND_PORT: u16 = 8080;
const CLUSTER_CIDR: &str = "10.244.0.0/16";

#[derive(Clone, Debug)]
pub struct Options {
    pub services: Vec<u32>,
    pub rounds: u32,
    pub seconds: f64,
    pub concurrency: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mechanism {
    Direct,
    Weir,
    Iptables,
    Nftables,
}

impl Mechanism {
    pub const ALL: [Mechanism; 4] = [
        Mechanism::Direct,
        Mechanism::Weir,
        Mechanism::Iptables,
        Mechanism::Nftables,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Mechanism::Direct => "direct (pod IP)",
            Mechanism::Weir => "weir",
            Mechanism::Iptables => "kube-proxy iptables",
            Mechanism::Nftables => "kube-proxy nftables",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Sample {
    pub mechanism: Mechanism,
    pub services: u32,
    pub round: u32,
    pub report: LoadReport,
}

/// Medians over rounds of one (mechanism, N).
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub rate: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Results {
    pub samples: Vec<Sample>,
    pub services: Vec<u32>,
    pub rounds: u32,
    pub seconds: f64,
    pub concurrency: u32,
    /// Setup times (s) per (mechanism, N), for the record.
    pub setup_secs: Vec<(Mechanism, u32, f64)>,
    pub iptables_version: String,
    pub nft_version: String,
}

impl Results {
    pub fn summary(&self, mechanism: Mechanism, services: u32) -> Summary {
        let runs: Vec<&LoadReport> = self
            .samples
            .iter()
            .filter(|s| s.mechanism == mechanism && s.services == services)
            .map(|s| &s.report)
            .collect();
        let pick = |f: fn(&LoadReport) -> f64| {
            stats::median(&runs.iter().map(|r| f(r)).collect::<Vec<_>>())
        };
        Summary {
            rate: pick(|r| r.rate),
            p50_us: pick(|r| r.p50_us),
            p99_us: pick(|r| r.p99_us),
            errors: runs.iter().map(|r| r.errors).sum(),
        }
    }

    /// Median over rounds of `a`'s rate divided by `b`'s rate in the same round and service
    /// count. The two runs are seconds apart, so slow changes in the machine's load (other
    /// work) cancel out better than in a ratio of medians.
    pub fn paired_ratio(&self, a: Mechanism, b: Mechanism, services: u32) -> f64 {
        let rate = |m: Mechanism, round: u32| {
            self.samples
                .iter()
                .find(|s| s.mechanism == m && s.services == services && s.round == round)
                .map(|s| s.report.rate)
        };
        let ratios: Vec<f64> = (0..self.rounds)
            .filter_map(|round| Some(stats::ratio(rate(a, round)?, rate(b, round)?)))
            .collect();
        stats::median(&ratios)
    }
}

/// One client: a pod whose node implements one mechanism for one N.
struct Client {
    mechanism: Mechanism,
    services: u32,
    pod: Pod,
    /// Where the load generator connects (one VIP, or the backend pods for direct).
    targets: Vec<SocketAddr>,
}

/// A workload process; killed on drop.
struct Workload(Child);

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(opts: &Options) -> Result<Results> {
    let exe = std::env::current_exe().context("locating weir-bench-lb itself")?;
    let per_n = 3;
    let nodes = 2 + per_n * opts.services.len();
    println!("e2e: building a {nodes}-node lab");
    let lab = Lab::builder()
        .nodes(nodes)
        .build()
        .context("building the e2e lab")?;
    let mut results = Results {
        services: opts.services.clone(),
        rounds: opts.rounds,
        seconds: opts.seconds,
        concurrency: opts.concurrency,
        iptables_version: tool_version("iptables", "-V"),
        nft_version: tool_version("nft", "-v"),
        ..Results::default()
    };

    // Backends.
    let backend_node = lab.node(1);
    let mut backends = Vec::new();
    let mut servers = Vec::new();
    for i in 0..BACKENDS {
        let pod = backend_node.add_pod(&format!("backend-{i}"))?;
        servers.push(start_server(&exe, &pod)?);
        backends.push(pod);
    }
    let backend_ips: Vec<Ipv4Addr> = backends.iter().map(Pod::ip).collect();
    println!("e2e: backends {backend_ips:?} serving on :{BACKEND_PORT}");

    // One direct client serves every service count's block (direct has no services).
    let direct_pod = client_pod(lab.node(2), None)?;
    let mut agents = Vec::new();
    let mut owned = Vec::new();
    for (j, &n) in opts.services.iter().enumerate() {
        let services = service_set(n, &backend_ips);
        let target = services
            .get(target_index(n))
            .context("empty service set")?
            .clone();
        let vip = SocketAddr::from((target.vip, target.port));

        let weir_node = lab.node(3 + per_n * j);
        let started = Instant::now();
        let (agent, pod) = setup_weir(&lab, weir_node, &services, n)?;
        results
            .setup_secs
            .push((Mechanism::Weir, n, started.elapsed().as_secs_f64()));
        agents.push(agent);
        owned.push(Client {
            mechanism: Mechanism::Weir,
            services: n,
            pod,
            targets: vec![vip],
        });

        let ipt_node = lab.node(4 + per_n * j);
        let started = Instant::now();
        let text = kube_proxy::iptables_restore(&services, CLUSTER_CIDR);
        load_rules(
            &lab,
            ipt_node,
            "iptables-restore",
            &[],
            &format!("iptables-{n}.rules"),
            &text,
        )?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "e2e: {}: kube-proxy iptables rules for {n} services loaded ({} lines, {secs:.1} s)",
            ipt_node.name(),
            text.lines().count()
        );
        results.setup_secs.push((Mechanism::Iptables, n, secs));
        owned.push(Client {
            mechanism: Mechanism::Iptables,
            services: n,
            pod: client_pod(ipt_node, None)?,
            targets: vec![vip],
        });

        let nft_node = lab.node(5 + per_n * j);
        let started = Instant::now();
        let text = kube_proxy::nft_script(&services, CLUSTER_CIDR);
        load_rules(
            &lab,
            nft_node,
            "nft",
            &["-f"],
            &format!("nft-{n}.nft"),
            &text,
        )?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "e2e: {}: kube-proxy nftables table for {n} services loaded ({} commands, {secs:.1} s)",
            nft_node.name(),
            text.lines().count()
        );
        results.setup_secs.push((Mechanism::Nftables, n, secs));
        owned.push(Client {
            mechanism: Mechanism::Nftables,
            services: n,
            pod: client_pod(nft_node, None)?,
            targets: vec![vip],
        });
    }
    // Netfilter costs per packet as soon as a table hooks in (conntrack even
    // more), and a table is created by merely listing it with iptables. The
    // backend, direct and weir nodes must have none, or the comparison is off.
    let mut clean: Vec<&Node> = vec![backend_node, lab.node(2)];
    clean.extend((0..opts.services.len()).map(|j| lab.node(3 + per_n * j)));
    for node in clean {
        assert_no_netfilter(node)?;
    }
    let direct_targets: Vec<SocketAddr> = backend_ips
        .iter()
        .map(|ip| SocketAddr::from((*ip, BACKEND_PORT)))
        .collect();

    // Sanity: every client reaches all three backends without errors before anything is timed.
    let check = |pod: &Pod, targets: &[SocketAddr], what: &str| -> Result<()> {
        let report = loadgen(&exe, pod, targets, 0.5, 2, 100)?;
        if report.errors > 0 || report.replies.len() != BACKENDS || report.connections < 30 {
            bail!(
                "sanity check of {what} failed: {} connections, {} errors {:?}, answers by backend {:?}",
                report.connections,
                report.errors,
                report.error_kinds,
                report.replies
            );
        }
        println!(
            "e2e: check {what}: {} connections, all {BACKENDS} backends answered {:?}",
            report.connections, report.replies
        );
        Ok(())
    };
    check(&direct_pod, &direct_targets, "direct")?;
    for client in &owned {
        check(
            &client.pod,
            &client.targets,
            &format!(
                "{} with {} services",
                client.mechanism.label(),
                client.services
            ),
        )?;
    }

    // Measurement rounds.
    let total = opts.rounds as usize * opts.services.len() * Mechanism::ALL.len();
    let mut done = 0;
    for round in 0..opts.rounds {
        for &n in &opts.services {
            let mut order: Vec<Mechanism> = Mechanism::ALL.to_vec();
            let shift = round as usize % order.len();
            order.rotate_left(shift);
            for mechanism in order {
                let (pod, targets) = if mechanism == Mechanism::Direct {
                    (&direct_pod, direct_targets.as_slice())
                } else {
                    let client = owned
                        .iter()
                        .find(|c| c.mechanism == mechanism && c.services == n)
                        .context("no client for a mechanism")?;
                    (&client.pod, client.targets.as_slice())
                };
                let cpu_before: Vec<f64> = agents.iter().map(agent_cpu_secs).collect();
                let report = loadgen(&exe, pod, targets, opts.seconds, opts.concurrency, 300)?;
                let agent_ms: Vec<String> = agents
                    .iter()
                    .zip(&cpu_before)
                    .map(|(a, before)| format!("{:.0}", (agent_cpu_secs(a) - before) * 1e3))
                    .collect();
                done += 1;
                println!(
                    "e2e: round {}/{} [{done}/{total}] {:<20} {n:>6} services: {:>8.0} conn/s  p50 {:>6.0} us  p99 {:>6.0} us  errors {}  (agents' CPU ms {})",
                    round + 1,
                    opts.rounds,
                    mechanism.label(),
                    report.rate,
                    report.p50_us,
                    report.p99_us,
                    report.errors,
                    agent_ms.join("/")
                );
                results.samples.push(Sample {
                    mechanism,
                    services: n,
                    round,
                    report,
                });
            }
        }
        for agent in &mut agents {
            agent.check_alive()?;
        }
    }
    drop(servers);
    Ok(results)
}

/// The N services of a run: numbered, 3 endpoints each at unused addresses, except the target
/// (the middle one), whose endpoints are the backend pods.
fn service_set(n: u32, backends: &[Ipv4Addr]) -> Vec<Service> {
    let mut services = manifests::numbered(n, BACKENDS as u32, Ipv4Addr::new(10, 250, 0, 0));
    if let Some(target) = services.get_mut(target_index(n)) {
        target.endpoints = backends.to_vec();
    }
    services
}

fn target_index(n: u32) -> usize {
    (n / 2) as usize
}

/// A client pod on `node`, with the ephemeral port range widened (the same on every client).
fn client_pod(node: &Node, config: Option<&Value>) -> Result<Pod> {
    let pod = match config {
        Some(config) => node.add_pod_with_config("client", config)?,
        None => node.add_pod("client")?,
    };
    pod.netns()
        .sysctl("net/ipv4/ip_local_port_range", "1024 65535")?;
    pod.netns().sysctl("net/ipv4/tcp_tw_reuse", "1")?;
    Ok(pod)
}

/// Starts the agent on `node` with the services, waits until all are programmed, and adds the
/// client pod through CNI with the agent's socket (ADD returns once its programs are attached).
fn setup_weir(lab: &Lab, node: &Node, services: &[Service], n: u32) -> Result<(Agent, Pod)> {
    let dir = lab.dir().join(format!("manifests-weir-{n}"));
    manifests::write_dir(&dir, node, services)?;
    let mut agent = Agent::start(node, &dir)?;
    agent.wait_ready(Duration::from_secs(120))?;
    let maps = PinnedLb::wait_open(&node.bpffs_dir(), &mut agent, Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    for service in services {
        while maps.count(service.vip, service.port) != Some(service.endpoints.len() as u16) {
            agent.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "weir-agent on {} did not program {}",
                    node.name(),
                    service.name
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let config = node.cni_config_with_agent();
    let pod = client_pod(node, Some(&config))?;
    println!(
        "e2e: {}: weir-agent programmed {n} services in {:.1} s; client pod {} registered",
        node.name(),
        agent.spawned.elapsed().as_secs_f64(),
        pod.ip()
    );
    Ok((agent, pod))
}

/// Writes `text` to the lab dir and loads it with `tool args... FILE` inside `node`'s netns.
fn load_rules(
    lab: &Lab,
    node: &Node,
    tool: &str,
    args: &[&str],
    file: &str,
    text: &str,
) -> Result<()> {
    let path: PathBuf = lab.dir().join(file);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.push(path.display().to_string());
    node.netns()
        .run(tool, &all)
        .with_context(|| format!("loading {} in {}", path.display(), node.name()))?;
    Ok(())
}

fn start_server(exe: &std::path::Path, pod: &Pod) -> Result<Workload> {
    let mut child = pod
        .netns()
        .command(exe)
        .args([
            "serve",
            "--port",
            &BACKEND_PORT.to_string(),
            "--name",
            pod.name(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting the server in {}", pod.name()))?;
    let stdout = child.stdout.take().context("server stdout")?;
    let workload = Workload(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the server's ready line")?;
    if line.trim() != "ready" {
        bail!("the server in {} did not start: {line:?}", pod.name());
    }
    Ok(workload)
}

/// Runs the load generator inside `pod` and parses its report.
fn loadgen(
    exe: &std::path::Path,
    pod: &Pod,
    targets: &[SocketAddr],
    seconds: f64,
    concurrency: u32,
    warmup_ms: u64,
) -> Result<LoadReport> {
    let addrs: Vec<String> = targets.iter().map(ToString::to_string).collect();
    let out = pod
        .netns()
        .command(exe)
        .args(["loadgen", "--addr", &addrs.join(",")])
        .args(["--seconds", &seconds.to_string()])
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--warmup-ms", &warmup_ms.to_string()])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running the load generator in {}", pod.name()))?;
    if !out.status.success() {
        bail!(
            "the load generator in {} failed ({}): {}",
            pod.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .with_context(|| format!("parsing the load generator's report {text:?}"))
}

fn tool_version(tool: &str, flag: &str) -> String {
    std::process::Command::new(tool)
        .arg(flag)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".into(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )
}

/// Fails unless `node`'s netns has no iptables (legacy) and no nftables tables. Reads only:
/// `/proc/thread-self/net/ip_tables_names` from inside the netns and `nft list tables`.
fn assert_no_netfilter(node: &Node) -> Result<()> {
    let legacy = node
        .netns()
        .enter(|| std::fs::read_to_string("/proc/thread-self/net/ip_tables_names"))?
        .unwrap_or_default();
    let nft = node.netns().run("nft", &["list", "tables"])?;
    let nft = String::from_utf8_lossy(&nft.stdout);
    if !legacy.trim().is_empty() || !nft.trim().is_empty() {
        bail!(
            "{} should have no netfilter tables, has iptables-legacy {:?} and nft {:?}",
            node.name(),
            legacy.trim(),
            nft.trim()
        );
    }
    println!("e2e: {}: no netfilter tables", node.name());
    Ok(())
}

/// CPU time (user + system, s) the agent has used so far; 0 when unreadable.
fn agent_cpu_secs(agent: &Agent) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", agent.pid())) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) start after the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5): indices 11 and 12 after the ')'.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks / if hz > 0 { hz as f64 } else { 100.0 }
}
