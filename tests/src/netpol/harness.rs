//! The e2e model on a real cluster lab, and the probe runner.
//!
//! [`NetpolLab::build`] starts a two-node [`Cluster`] (agents in standalone
//! mode), creates the nine pods through the real `weir-cni` (with
//! `agentSocket`), writes their Pod objects (labels, the four named
//! container ports, `status.podIP`) and the labelled Namespaces, and starts
//! one `weir-serve` per pod on TCP and UDP 80 and 81, answering
//! `<namespace>/<pod>`.
//!
//! [`NetpolLab::check`] runs every probe of the matrix at once (one
//! `weir-probe` process per cell, all spawned before any is awaited), each
//! with a short timeout. Allowed = the target's own answer; denied = a
//! timeout (the datapath drops the SYN or the datagram, and a UDP probe
//! needs the server's reply to count as connected). Mismatching cells are
//! probed once more (a lost first packet must not fail a case); if any
//! still mismatch, the error holds the whole table with them marked.
//!
//! [`NetpolLab::apply`] writes a [`Step`]'s state into the manifests dir
//! (policies in one file, replaced atomically) and waits until every
//! agent's `weir_sync_total{result="ok"}` has advanced and it counts the
//! step's NetworkPolicies.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::cases::{Case, FlowCheck, ServiceCheck, Step};
use super::table::{Cell, Observed, PORT_PROTOS, Reachability, compare, render};
use super::{
    Model, ModelNode, NAMESPACES, POD_COUNT, PodId, namespace_object, namespace_object_annotated,
};
use crate::cluster::{Cluster, SYNC_DEADLINE, UdpFlow, poll};
use crate::pod::Pod;
use crate::workload::{ProbeOutcome, ProbeResult, Proto, ServeGuard};

/// Per-probe timeout (ms) of [`NetpolLab::check`]: long enough for a
/// first packet that waits on ARP, short enough that a denied matrix
/// costs about a second.
pub const PROBE_TIMEOUT_MS: u64 = 1000;

/// Policies of the current step, one file replaced atomically.
const POLICY_FILE: &str = "netpol-policies.yaml";
/// Services of the current step.
const SERVICE_FILE: &str = "netpol-services.yaml";

/// The e2e model on a cluster lab. Field order is drop order: servers,
/// pods (CNI DEL while the agents still run), then the cluster.
#[derive(Debug)]
pub struct NetpolLab {
    _servers: Vec<ServeGuard>,
    pods: Vec<Pod>,
    model: Model,
    /// The state last written (starts as the model's defaults).
    current: Step,
    /// Per-probe timeout in ms (default [`PROBE_TIMEOUT_MS`]).
    pub probe_timeout_ms: u64,
    cluster: Cluster,
}

/// What [`NetpolLab::check`] did.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// Cells probed (matrix plus VIP cells).
    pub cells: usize,
    /// Wall time of the first, full round of probes.
    pub matrix_time: Duration,
    /// Cells probed again because they mismatched at first.
    pub retried: usize,
    pub observed: Observed,
}

/// What [`NetpolLab::run_cases`] did: every case's wall time, and the
/// cases that failed.
#[derive(Debug, Clone, Default)]
pub struct CaseRun {
    pub times: Vec<(&'static str, Duration)>,
    pub failures: Vec<CaseFailure>,
}

/// One failed case: its name and the whole error (the step, and the
/// table with the mismatching cells marked).
#[derive(Debug, Clone)]
pub struct CaseFailure {
    pub case: &'static str,
    pub error: String,
}

impl CaseRun {
    pub fn total(&self) -> Duration {
        self.times.iter().map(|(_, t)| *t).sum()
    }

    /// `Err` naming every failed case with its error, after a summary.
    pub fn into_result(self) -> Result<()> {
        println!(
            "{} cases in {:.1?}, {} failed",
            self.times.len(),
            self.total(),
            self.failures.len()
        );
        if self.failures.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.failures.iter().map(|f| f.case).collect();
        let details: Vec<String> = self
            .failures
            .iter()
            .map(|f| format!("=== case {} ===\n{}", f.case, f.error))
            .collect();
        bail!(
            "{} of {} cases failed: {}\n\n{}",
            self.failures.len(),
            self.times.len(),
            names.join(", "),
            details.join("\n\n")
        )
    }
}

/// One probe to run.
#[derive(Debug, Clone, Copy)]
struct Job {
    from: PodId,
    target: SocketAddr,
    proto: Proto,
}

impl NetpolLab {
    /// Builds the cluster and the model (see the module docs) and waits
    /// until every agent has synced the pods' objects.
    pub fn build() -> Result<NetpolLab> {
        let cluster = Cluster::builder().nodes(2).build()?;
        let mut pods = Vec::with_capacity(POD_COUNT);
        for id in PodId::all() {
            let pod = cluster
                .add_pod(id.node(), id.spec(&id.default_labels()))
                .with_context(|| format!("creating pod {id}"))?;
            pods.push(pod);
        }
        let before = sync_counts(&cluster);
        // add_pod wrote the Namespaces with the name label only.
        for ns in NAMESPACES {
            cluster.apply(
                &namespace_file(ns),
                &[namespace_object(ns, &BTreeMap::new())],
            )?;
        }
        let nodes = cluster
            .nodes()
            .iter()
            .map(|n| ModelNode {
                name: n.name().to_string(),
                ip: n.ip(),
                pod_cidr: n.pod_cidr(),
            })
            .collect();
        let mut pod_ips = [Ipv4Addr::UNSPECIFIED; POD_COUNT];
        for (i, pod) in pods.iter().enumerate() {
            pod_ips[i] = pod.ip();
        }
        let mut servers = Vec::with_capacity(POD_COUNT);
        for (id, pod) in PodId::all().zip(&pods) {
            let ports = super::PORTS;
            servers.push(
                pod.netns()
                    .serve(&id.to_string(), &ports, &ports)
                    .with_context(|| format!("starting weir-serve in {id}"))?,
            );
        }
        let lab = NetpolLab {
            _servers: servers,
            pods,
            model: Model { nodes, pod_ips },
            current: Step::new("initial", Reachability::all()),
            probe_timeout_ms: PROBE_TIMEOUT_MS,
            cluster,
        };
        let took = lab.wait_synced(&before, 0)?;
        println!("netpol lab: 9 pods on 2 nodes, agents synced after {took:?}");
        Ok(lab)
    }

    /// The addresses of this lab's model (for [`super::cases::all_cases`]).
    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn pod(&self, id: PodId) -> &Pod {
        &self.pods[id.index()]
    }

    /// Writes `step`'s state (labels, services, policies) and waits until
    /// every agent has synced it; returns that wait.
    pub fn apply(&mut self, step: &Step) -> Result<Duration> {
        let before = sync_counts(&self.cluster);
        let mut changed = false;
        for ns in NAMESPACES {
            let labels = step.namespace_labels(ns);
            let annotations = step.namespace_annotations(ns);
            if labels != self.current.namespace_labels(ns)
                || annotations != self.current.namespace_annotations(ns)
            {
                self.cluster.apply(
                    &namespace_file(ns),
                    &[namespace_object_annotated(ns, &labels, &annotations)],
                )?;
                changed = true;
            }
        }
        for id in PodId::all() {
            let labels = step.pod_labels(id);
            if labels != self.current.pod_labels(id) {
                self.cluster.apply(
                    &format!("pod.{}.{}.yaml", id.namespace(), id.name()),
                    &[self.model.pod_object(id, &labels)],
                )?;
                changed = true;
            }
        }
        let services: Vec<Value> = step.services.iter().map(ServiceCheck::object).collect();
        let old_services: Vec<Value> = self
            .current
            .services
            .iter()
            .map(ServiceCheck::object)
            .collect();
        changed |= self.replace_file(SERVICE_FILE, &old_services, &services)?;
        changed |= self.replace_file(POLICY_FILE, &self.current.policies, &step.policies)?;
        self.current = step.clone();
        if !changed {
            return Ok(Duration::ZERO);
        }
        self.wait_synced(&before, step.policies.len())
    }

    /// Back to the model's initial state: no policies, no services,
    /// default labels.
    pub fn reset(&mut self) -> Result<Duration> {
        self.apply(&Step::new("reset", Reachability::all()))
    }

    fn replace_file(&self, file: &str, old: &[Value], new: &[Value]) -> Result<bool> {
        if old == new {
            return Ok(false);
        }
        if new.is_empty() {
            self.cluster.remove_manifest(file)?;
        } else {
            self.cluster.apply(file, new)?;
        }
        Ok(true)
    }

    /// Polls until every agent synced after `before` and counts
    /// `policies` NetworkPolicies.
    fn wait_synced(&self, before: &[f64], policies: usize) -> Result<Duration> {
        let want = policies as f64;
        poll(SYNC_DEADLINE, || {
            Ok(self
                .cluster
                .agents()
                .iter()
                .zip(before)
                .all(|(agent, before)| {
                    let synced = agent
                        .metric("weir_sync_total{result=\"ok\"}")
                        .is_some_and(|n| n > *before);
                    let counted = agent
                        .metric("weir_objects{kind=\"NetworkPolicy\"}")
                        .is_some_and(|n| n == want);
                    synced && counted
                }))
        })
        .context("waiting for every agent to sync the manifests")
    }

    /// Probes the whole matrix (and the VIPs of `services`), compares it
    /// with `expected` (see the module docs) and prints the probe time.
    /// The error holds the whole table with the mismatching cells marked.
    pub fn check(&self, expected: &Reachability, services: &[ServiceCheck]) -> Result<ProbeReport> {
        let jobs = self.matrix_jobs();
        let vip_jobs = vip_jobs(services);
        let all: Vec<Job> = jobs
            .iter()
            .chain(vip_jobs.iter().map(|(j, _)| j))
            .copied()
            .collect();
        let start = Instant::now();
        let cells = self.run(&all)?;
        let matrix_time = start.elapsed();
        let (matrix_cells, vip_cells) = cells.split_at(jobs.len());
        let mut observed = observed_from(matrix_cells);
        let mut vip_cells = vip_cells.to_vec();

        // Retry the cells that disagree, once.
        let retry_matrix: Vec<(PodId, PodId, usize)> = compare(expected, &observed)
            .iter()
            .map(|m| (m.from, m.to, port_proto(m.port, m.proto)))
            .collect();
        let retry_vip: Vec<usize> = (0..vip_jobs.len())
            .filter(|&i| !vip_agrees(&vip_jobs[i], &vip_cells[i], services))
            .collect();
        let retried = retry_matrix.len() + retry_vip.len();
        if retried > 0 {
            let mut again: Vec<Job> = retry_matrix
                .iter()
                .map(|&(from, to, i)| self.job(from, to, i))
                .collect();
            again.extend(retry_vip.iter().map(|&i| vip_jobs[i].0));
            let cells = self.run(&again)?;
            let (m, v) = cells.split_at(retry_matrix.len());
            for (&(from, to, i), cell) in retry_matrix.iter().zip(m) {
                observed.set(from, to, i, cell.clone());
            }
            for (&i, cell) in retry_vip.iter().zip(v) {
                vip_cells[i] = cell.clone();
            }
        }
        println!(
            "probed {} cells ({} matrix + {} via VIPs) in {:.0} ms; {retried} retried",
            all.len(),
            jobs.len(),
            vip_jobs.len(),
            matrix_time.as_secs_f64() * 1e3
        );
        let mismatches = compare(expected, &observed);
        let vip_mismatches: Vec<String> = vip_jobs
            .iter()
            .zip(&vip_cells)
            .filter(|(job, cell)| !vip_agrees(job, cell, services))
            .map(|((job, s), cell)| {
                let svc = &services[*s];
                format!(
                    "  {} -> {}/{} {} {}:{} (backend {}): expected {}, observed {} {:?}",
                    job.from,
                    svc.namespace,
                    svc.name,
                    job.proto,
                    svc.vip,
                    job.target.port(),
                    svc.backend,
                    if svc.allowed_from.matches(job.from) {
                        "allowed"
                    } else {
                        "denied"
                    },
                    cell.outcome,
                    cell.reply
                )
            })
            .collect();
        if !mismatches.is_empty() || !vip_mismatches.is_empty() {
            bail!(
                "the probes disagree with the expected table:\n{}{} mismatching VIP cells:\n{}",
                render(expected, &observed),
                vip_mismatches.len(),
                vip_mismatches.join("\n")
            );
        }
        Ok(ProbeReport {
            cells: all.len(),
            matrix_time,
            retried,
            observed,
        })
    }

    /// Runs every case (see [`NetpolLab::run_case`]), going on after a
    /// failure: each failure names its case and holds the error, with the
    /// rendered table of mismatching cells. Prints one line per case.
    pub fn run_cases(&mut self, cases: &[Case]) -> CaseRun {
        let mut run = CaseRun::default();
        for case in cases {
            let started = Instant::now();
            let result = self.run_case(case);
            let took = started.elapsed();
            run.times.push((case.name, took));
            match result {
                Ok(()) => println!("case {}: ok in {took:.1?}", case.name),
                Err(err) => {
                    println!("case {}: FAILED in {took:.1?}: {err:#}", case.name);
                    run.failures.push(CaseFailure {
                        case: case.name,
                        error: format!("{err:#}"),
                    });
                }
            }
        }
        run
    }

    /// Runs every step of `case` (open its flows, apply, check the flows
    /// and the matrix), then resets the lab, also when a step failed (the
    /// next case starts from the initial state either way).
    pub fn run_case(&mut self, case: &Case) -> Result<()> {
        let result = self.run_steps(case);
        let reset = self
            .reset()
            .with_context(|| format!("resetting after case {}", case.name));
        result.and(reset.map(drop))
    }

    fn run_steps(&mut self, case: &Case) -> Result<()> {
        for (i, step) in case.steps.iter().enumerate() {
            let flows = self
                .open_flows(&step.flows)
                .with_context(|| format!("case {} step {i} ({})", case.name, step.what))?;
            let took = self
                .apply(step)
                .with_context(|| format!("case {} step {i} ({})", case.name, step.what))?;
            self.check_flows(&step.flows, &flows)
                .with_context(|| format!("case {} step {i} ({})", case.name, step.what))?;
            println!(
                "case {} step {i} ({}): agents synced after {took:?}",
                case.name, step.what
            );
            self.check(&step.expected, &step.services)
                .with_context(|| format!("case {} step {i} ({})", case.name, step.what))?;
        }
        Ok(())
    }

    /// Opens each flow (a connected UDP socket in the client pod) and
    /// checks the target answers it now.
    fn open_flows(&self, checks: &[FlowCheck]) -> Result<Vec<UdpFlow>> {
        let timeout = Duration::from_millis(self.probe_timeout_ms);
        checks
            .iter()
            .map(|f| {
                let dst = SocketAddrV4::new(self.model.pod_ip(f.to), f.port);
                let flow = UdpFlow::open(self.pod(f.from).netns(), dst, timeout)?;
                let (outcome, reply) = flow.request();
                if outcome != ProbeOutcome::Connected || reply != f.to.to_string() {
                    bail!(
                        "flow {} -> {}:{}/udp is not answered before the step: {outcome} {reply:?}",
                        f.from,
                        f.to,
                        f.port
                    );
                }
                Ok(flow)
            })
            .collect()
    }

    /// Uses each flow again: answered iff `alive`.
    fn check_flows(&self, checks: &[FlowCheck], flows: &[UdpFlow]) -> Result<()> {
        let mut bad = Vec::new();
        for (f, flow) in checks.iter().zip(flows) {
            let (outcome, reply) = flow.request();
            let cell = Cell {
                outcome,
                reply,
                detail: None,
            };
            if !cell.agrees(f.alive, f.to) {
                bad.push(format!(
                    "  flow {} -> {}:{}/udp: expected {}, observed {} {:?}",
                    f.from,
                    f.to,
                    f.port,
                    if f.alive { "answered" } else { "stopped" },
                    cell.outcome,
                    cell.reply
                ));
            }
        }
        if !bad.is_empty() {
            bail!("established flows across the change:\n{}", bad.join("\n"));
        }
        if !checks.is_empty() {
            println!(
                "{} established flows checked across the change",
                checks.len()
            );
        }
        Ok(())
    }

    fn job(&self, from: PodId, to: PodId, port_proto: usize) -> Job {
        let (port, proto) = PORT_PROTOS[port_proto];
        Job {
            from,
            target: SocketAddr::new(self.model.pod_ip(to).into(), port),
            proto,
        }
    }

    fn matrix_jobs(&self) -> Vec<Job> {
        let mut jobs = Vec::with_capacity(POD_COUNT * POD_COUNT * 4);
        for from in PodId::all() {
            for to in PodId::all() {
                for i in 0..PORT_PROTOS.len() {
                    jobs.push(self.job(from, to, i));
                }
            }
        }
        jobs
    }

    /// Spawns every probe, then collects them all.
    fn run(&self, jobs: &[Job]) -> Result<Vec<Cell>> {
        let bin = crate::try_bin_path("weir-probe")?;
        let mut children: Vec<Child> = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut cmd = self.pods[job.from.index()].netns().command(&bin);
            cmd.arg(format!("--{}", job.proto))
                .arg(job.target.to_string())
                .arg("--timeout-ms")
                .arg(self.probe_timeout_ms.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            match cmd.spawn() {
                Ok(child) => children.push(child),
                Err(err) => {
                    for mut child in children {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    return Err(err).context(format!("spawning {}", bin.display()));
                }
            }
        }
        children
            .into_iter()
            .zip(jobs)
            .map(|(child, job)| {
                let out = child.wait_with_output().context("waiting for weir-probe")?;
                let text = String::from_utf8_lossy(&out.stdout);
                let line = text
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .with_context(|| {
                        format!(
                            "weir-probe from {} to {}/{} printed nothing ({})",
                            job.from, job.target, job.proto, out.status
                        )
                    })?;
                let r: ProbeResult = serde_json::from_str(line)
                    .with_context(|| format!("parsing weir-probe output {line:?}"))?;
                Ok(Cell {
                    outcome: r.result,
                    reply: r.reply,
                    detail: r.error,
                })
            })
            .collect()
    }
}

fn port_proto(port: u16, proto: Proto) -> usize {
    super::table::port_proto_index(port, proto).unwrap_or(0)
}

fn observed_from(cells: &[Cell]) -> Observed {
    let mut rows = Vec::with_capacity(POD_COUNT);
    let mut it = cells.iter();
    for _ in 0..POD_COUNT {
        let mut row = Vec::with_capacity(POD_COUNT);
        for _ in 0..POD_COUNT {
            row.push(it.by_ref().take(PORT_PROTOS.len()).cloned().collect());
        }
        rows.push(row);
    }
    Observed { cells: rows }
}

/// Probes of each service's VIP from every pod but its backend, with the
/// service's index.
fn vip_jobs(services: &[ServiceCheck]) -> Vec<(Job, usize)> {
    let mut jobs = Vec::new();
    for (s, svc) in services.iter().enumerate() {
        for from in PodId::all().filter(|p| *p != svc.backend) {
            for &(port, proto) in &PORT_PROTOS {
                jobs.push((
                    Job {
                        from,
                        target: SocketAddr::new(svc.vip.into(), port),
                        proto,
                    },
                    s,
                ));
            }
        }
    }
    jobs
}

fn vip_agrees(job: &(Job, usize), cell: &Cell, services: &[ServiceCheck]) -> bool {
    let svc = &services[job.1];
    cell.agrees(svc.allowed_from.matches(job.0.from), svc.backend)
}

fn namespace_file(ns: &str) -> String {
    format!("namespace.{ns}.yaml")
}

fn sync_counts(cluster: &Cluster) -> Vec<f64> {
    cluster
        .agents()
        .iter()
        .map(|a| a.metric("weir_sync_total{result=\"ok\"}").unwrap_or(0.0))
        .collect()
}
