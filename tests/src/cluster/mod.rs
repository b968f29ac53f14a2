//! # A lab with agents
//!
//! [`Cluster`] is a [`Lab`] whose nodes each run a real `weir-agent` in
//! standalone mode, as DESIGN.md's "The lab" describes:
//!
//! * one manifests directory (`<lab dir>/manifests`) stands for the API
//!   server; every node's agent reads it with its own `--node-name`;
//! * each agent runs inside its node netns, with the node's own pin root
//!   (`<node dir>/bpffs`, outside /sys: the agent mounts a bpffs there) and
//!   state dir (`<node dir>/agent`, holding `agent.sock`);
//! * the agents program the routes between nodes (the lab's own native
//!   routes are off), and every node gets a default route via the lab netns,
//!   as a real node has one;
//! * pods are wired by the real `weir-cni` with `agentSocket`, so ADD
//!   registers them with the node's agent; their Pod objects (nodeName,
//!   labels, named container ports, `status.podIP`, Ready) are written to
//!   the manifests as the kubelet would report them;
//! * optionally ([`ClusterBuilder::socket_lb`]) each node gets a cgroup of
//!   its own under the machine's cgroup2 mount, passed as `--cgroup`.
//!
//! Dropping the cluster kills the agents, tears the lab down (netns, state
//! dir, bpffs mounts) and removes the cgroups, also during a panic; a
//! panicking test also prints the tail of every agent's log.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use weir_lab::Proto;
//! use weir_lab::cluster::{Cluster, PodSpec};
//! let cluster = Cluster::builder().nodes(2).build()?;
//! let (a, _srv) = cluster.add_backend(1, PodSpec::new("a").label("app", "web")
//!     .port("http", 8080, Proto::Tcp))?;
//! cluster.apply("web.yaml", &[serde_json::json!({
//!     "apiVersion": "v1", "kind": "Service",
//!     "metadata": {"name": "web", "namespace": "default"},
//!     "spec": {"clusterIP": "10.96.0.10", "selector": {"app": "web"},
//!              "ports": [{"port": 80, "targetPort": "http"}]}})])?;
//! cluster.wait_backends(std::net::Ipv4Addr::new(10, 96, 0, 10), 80, Proto::Tcp,
//!     &[std::net::SocketAddrV4::new(a.ip(), 8080)])?;
//! # Ok(()) }
//! ```

pub mod agent;
pub mod cgroup;
pub mod maps;
pub mod objects;
pub mod traffic;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub use agent::Agent;
pub use cgroup::TestCgroup;
pub use maps::{BackendSlot, Frontend, FrontendEntry};
pub use objects::{ContainerPort, PodSpec, PodState};
pub use traffic::{EchoServer, PortProbe, Reply, Server, TcpConn, UdpFlow, tally};

use crate::lab::{Lab, Node, OUTSIDE_IP};
use crate::pod::Pod;
use crate::workload::Proto;

/// How long the helpers wait for the datapath to reflect a manifest change
/// before they give up. Generous on purpose: tests report the time they
/// observed, they never assert it.
pub const SYNC_DEADLINE: Duration = Duration::from_secs(20);

/// Builder of a [`Cluster`]; see [`Cluster::builder`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    nodes: usize,
    agent_args: Vec<String>,
    socket_lb: bool,
    default_routes: bool,
    manifests: Vec<(String, String)>,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            nodes: 2,
            agent_args: Vec::new(),
            socket_lb: false,
            default_routes: true,
            manifests: Vec::new(),
        }
    }
}

impl ClusterBuilder {
    /// Number of nodes (default 2).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// An extra argument for every agent (e.g. `--lb-algorithm`, `maglev`).
    pub fn agent_arg(mut self, arg: &str) -> Self {
        self.agent_args.push(arg.to_string());
        self
    }

    /// Gives every node a test cgroup and passes it as the agent's
    /// `--cgroup` (default off).
    pub fn socket_lb(mut self, on: bool) -> Self {
        self.socket_lb = on;
        self
    }

    /// Whether nodes get a default route via the lab netns (default on), so
    /// host processes can send to service addresses as on a real node.
    pub fn default_routes(mut self, on: bool) -> Self {
        self.default_routes = on;
        self
    }

    /// A manifest file present before the agents start.
    pub fn manifest(mut self, file: &str, text: &str) -> Self {
        self.manifests.push((file.to_string(), text.to_string()));
        self
    }

    /// Builds the lab, writes Nodes and the `default` Namespace, starts one
    /// agent per node and waits until every agent is ready.
    pub fn build(self) -> Result<Cluster> {
        let swept = cgroup::sweep_dead();
        if !swept.is_empty() {
            eprintln!("weir-lab: swept {} leftover cgroups", swept.len());
        }
        let lab = Lab::builder()
            .nodes(self.nodes)
            .native_routing(false)
            .build()?;
        let manifests = lab.dir().join("manifests");
        std::fs::create_dir_all(&manifests)
            .with_context(|| format!("creating {}", manifests.display()))?;
        let mut cluster = Cluster {
            logs_on_panic: LogsOnPanic::default(),
            agents: Vec::new(),
            pods: Mutex::new(BTreeMap::new()),
            namespaces: Mutex::new(BTreeSet::new()),
            manifests,
            lab,
            cgroups: Vec::new(),
        };
        let nodes: Vec<Value> = cluster
            .lab
            .nodes()
            .iter()
            .map(objects::node_object)
            .collect();
        cluster.write_manifest("nodes.yaml", &objects::yaml_documents(&nodes))?;
        cluster.ensure_namespace("default")?;
        for (file, text) in &self.manifests {
            cluster.write_manifest(file, text)?;
        }
        for node in cluster.lab.nodes() {
            if self.default_routes {
                node.netns().ip(&[
                    "route",
                    "replace",
                    "default",
                    "via",
                    &OUTSIDE_IP.to_string(),
                    "dev",
                    "eth0",
                ])?;
            }
        }
        for index in 1..=cluster.lab.nodes().len() {
            let node = cluster.lab.node(index).clone();
            let mut args = self.agent_args.clone();
            if self.socket_lb {
                let cg = TestCgroup::create(&format!("{}-{}", cluster.lab.id(), node.name()))?;
                args.push("--cgroup".to_string());
                args.push(cg.path().display().to_string());
                cluster.cgroups.push(cg);
            }
            let agent = Agent::start(&node, &cluster.manifests, &args)?;
            cluster
                .logs_on_panic
                .0
                .push((node.name().to_string(), agent.log_path().to_path_buf()));
            cluster.agents.push(agent);
        }
        for agent in &mut cluster.agents {
            agent.wait_ready()?;
        }
        Ok(cluster)
    }
}

/// A pod's object as last written, to rewrite it with another state.
#[derive(Debug, Clone)]
struct PodRecord {
    spec: PodSpec,
    node: String,
    ip: Ipv4Addr,
}

/// A lab whose nodes run agents; see the module docs. Field order is drop
/// order: the log report, agents, then the lab, then the cgroups.
#[derive(Debug)]
pub struct Cluster {
    logs_on_panic: LogsOnPanic,
    agents: Vec<Agent>,
    pods: Mutex<BTreeMap<String, PodRecord>>,
    namespaces: Mutex<BTreeSet<String>>,
    manifests: PathBuf,
    lab: Lab,
    cgroups: Vec<TestCgroup>,
}

impl Cluster {
    /// A builder (2 nodes, default routes, no socket LB).
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// The lab underneath.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// Node `index` (1-based).
    pub fn node(&self, index: usize) -> &Node {
        self.lab.node(index)
    }

    /// All nodes.
    pub fn nodes(&self) -> &[Node] {
        self.lab.nodes()
    }

    /// The agent of node `index` (1-based).
    pub fn agent(&self, index: usize) -> &Agent {
        self.agent_slot(index)
    }

    /// The agent of node `index`, to kill or restart it.
    pub fn agent_mut(&mut self, index: usize) -> &mut Agent {
        let len = self.agents.len();
        match index.checked_sub(1).and_then(|i| self.agents.get_mut(i)) {
            Some(agent) => agent,
            None => panic!("the cluster has agents 1..={len}, not {index}"),
        }
    }

    fn agent_slot(&self, index: usize) -> &Agent {
        match index.checked_sub(1).and_then(|i| self.agents.get(i)) {
            Some(agent) => agent,
            None => panic!(
                "the cluster has agents 1..={}, not {index}",
                self.agents.len()
            ),
        }
    }

    /// All agents, node 1 first.
    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }

    /// The test cgroup of node `index`, when built with `socket_lb(true)`.
    pub fn cgroup(&self, index: usize) -> Option<&TestCgroup> {
        index.checked_sub(1).and_then(|i| self.cgroups.get(i))
    }

    /// The manifests directory every agent reads.
    pub fn manifests_dir(&self) -> &Path {
        &self.manifests
    }

    // ---- manifests -------------------------------------------------------

    /// Writes `file` (e.g. `web.yaml`) atomically: a temporary dot-file
    /// (which the agent skips), then a rename over the target.
    pub fn write_manifest(&self, file: &str, text: &str) -> Result<()> {
        check_file_name(file)?;
        crate::write_atomic(&self.manifests, file, text)
    }

    /// Writes `file` with the given objects, one document each.
    pub fn apply(&self, file: &str, docs: &[Value]) -> Result<()> {
        self.write_manifest(file, &objects::yaml_documents(docs))
    }

    /// Deletes `file` from the manifests.
    pub fn remove_manifest(&self, file: &str) -> Result<()> {
        check_file_name(file)?;
        let path = self.manifests.join(file);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
    }

    /// Renames a manifest file (`to` may be a name the agent ignores, e.g.
    /// `x.yaml.off`, which removes its objects).
    pub fn rename_manifest(&self, from: &str, to: &str) -> Result<()> {
        check_file_name(from)?;
        check_file_name(to)?;
        let (a, b) = (self.manifests.join(from), self.manifests.join(to));
        std::fs::rename(&a, &b)
            .with_context(|| format!("renaming {} to {}", a.display(), b.display()))
    }

    /// Writes a Namespace object for `name` unless one was written.
    pub fn ensure_namespace(&self, name: &str) -> Result<()> {
        let fresh = match self.namespaces.lock() {
            Ok(mut set) => set.insert(name.to_string()),
            Err(poisoned) => poisoned.into_inner().insert(name.to_string()),
        };
        if fresh {
            self.apply(
                &format!("namespace.{name}.yaml"),
                &[objects::namespace_object(name)],
            )?;
        }
        Ok(())
    }

    // ---- pods --------------------------------------------------------------

    /// Creates a pod on node `node_index` through `weir-cni` with
    /// `agentSocket` (so its agent registers it), then writes its Pod object
    /// (`status.podIP` = the address CNI gave it). Returns the pod; it is
    /// DELeted on drop (its object stays until
    /// [`Cluster::remove_pod_object`]).
    pub fn add_pod(&self, node_index: usize, spec: PodSpec) -> Result<Pod> {
        let node = self.node(node_index).clone();
        self.ensure_namespace(&spec.namespace)?;
        let pod = Pod::add(
            &node,
            &spec.namespace,
            &spec.name,
            &node.cni_config_with_agent(),
        )?;
        let record = PodRecord {
            spec,
            node: node.name().to_string(),
            ip: pod.ip(),
        };
        self.write_pod(&record)?;
        self.pods_lock()
            .insert(pod_file(&record.spec.namespace, &record.spec.name), record);
        Ok(pod)
    }

    /// Creates a pod the way a kubelet does: its Pod object first (no
    /// address yet, phase Pending), waits until every agent has synced it,
    /// then CNI ADD; `right_after` runs the moment ADD returns, before the
    /// object gets its `status.podIP` (so the agents know the address only
    /// from the CNI registration). Then the object is completed.
    pub fn add_pod_declared_first<T>(
        &self,
        node_index: usize,
        spec: PodSpec,
        right_after: impl FnOnce(&Pod) -> T,
    ) -> Result<(Pod, T)> {
        let node = self.node(node_index).clone();
        self.ensure_namespace(&spec.namespace)?;
        let before: Vec<f64> = self.agents.iter().map(sync_ok_count).collect();
        let mut pending = spec.object(node.name(), Ipv4Addr::UNSPECIFIED);
        pending["status"] = serde_json::json!({"phase": "Pending"});
        self.apply(&pod_file(&spec.namespace, &spec.name), &[pending])?;
        poll(SYNC_DEADLINE, || {
            Ok(self
                .agents
                .iter()
                .zip(&before)
                .all(|(a, b)| sync_ok_count(a) > *b))
        })
        .context("waiting for the agents to sync the pending Pod object")?;
        let pod = Pod::add(
            &node,
            &spec.namespace,
            &spec.name,
            &node.cni_config_with_agent(),
        )?;
        let out = right_after(&pod);
        let record = PodRecord {
            spec,
            node: node.name().to_string(),
            ip: pod.ip(),
        };
        self.write_pod(&record)?;
        self.pods_lock()
            .insert(pod_file(&record.spec.namespace, &record.spec.name), record);
        Ok((pod, out))
    }

    /// [`Cluster::add_pod`] plus a [`Server`] answering on the spec's
    /// container ports (TCP and UDP as declared).
    pub fn add_backend(&self, node_index: usize, spec: PodSpec) -> Result<(Pod, Server)> {
        let (tcp, udp) = (spec.tcp_ports(), spec.udp_ports());
        let pod = self.add_pod(node_index, spec)?;
        let server = Server::start(pod.netns(), pod.name(), &tcp, &udp)?;
        Ok((pod, server))
    }

    /// Rewrites the pod's object with another readiness/termination state.
    pub fn set_pod_state(&self, pod: &Pod, state: PodState) -> Result<()> {
        let file = pod_file(pod.namespace(), pod.name());
        let record = {
            let mut pods = self.pods_lock();
            let record = pods
                .get_mut(&file)
                .with_context(|| format!("pod {} was not added by this cluster", pod.name()))?;
            record.spec.state = state;
            record.clone()
        };
        self.write_pod(&record)
    }

    /// Removes the pod's object from the manifests (the API server forgot
    /// it); the pod itself keeps running.
    pub fn remove_pod_object(&self, pod: &Pod) -> Result<()> {
        let file = pod_file(pod.namespace(), pod.name());
        self.pods_lock().remove(&file);
        self.remove_manifest(&file)
    }

    fn write_pod(&self, record: &PodRecord) -> Result<()> {
        self.apply(
            &pod_file(&record.spec.namespace, &record.spec.name),
            &[record.spec.object(&record.node, record.ip)],
        )
    }

    fn pods_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PodRecord>> {
        match self.pods.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    // ---- datapath state ------------------------------------------------------

    /// What node `index`'s maps hold for `addr:port/proto`.
    pub fn frontend(
        &self,
        node_index: usize,
        addr: Ipv4Addr,
        port: u16,
        proto: Proto,
    ) -> Result<Frontend> {
        maps::frontend(&self.node(node_index).bpffs_dir(), addr, port, proto)
    }

    /// Polls node `index`'s maps until `check` holds for the frontend;
    /// returns the time it took, or an error after [`SYNC_DEADLINE`].
    pub fn wait_frontend(
        &self,
        node_index: usize,
        addr: Ipv4Addr,
        port: u16,
        proto: Proto,
        what: &str,
        check: impl Fn(&Frontend) -> bool,
    ) -> Result<Duration> {
        let mut last = Frontend::default();
        let outcome = poll(SYNC_DEADLINE, || {
            last = self.frontend(node_index, addr, port, proto)?;
            Ok(check(&last))
        });
        outcome.with_context(|| {
            format!(
                "node{node_index}: {addr}:{port}/{proto}: {what}; last seen {last:?}\n{}",
                self.agent_slot(node_index).log_tail(30)
            )
        })
    }

    /// Waits until every node's frontend `addr:port/proto` sends traffic
    /// from local pods and the node itself to exactly `expected`.
    pub fn wait_backends(
        &self,
        addr: Ipv4Addr,
        port: u16,
        proto: Proto,
        expected: &[SocketAddrV4],
    ) -> Result<Duration> {
        let want: BTreeSet<SocketAddrV4> = expected.iter().copied().collect();
        let mut slowest = Duration::ZERO;
        for index in 1..=self.nodes().len() {
            let took = self.wait_frontend(
                index,
                addr,
                port,
                proto,
                &format!("want backends {want:?}"),
                |fe| fe.backends_for(true) == want,
            )?;
            slowest = slowest.max(took);
        }
        Ok(slowest)
    }

    /// Waits until no node has the frontend `addr:port/proto`.
    pub fn wait_no_frontend(&self, addr: Ipv4Addr, port: u16, proto: Proto) -> Result<Duration> {
        let mut slowest = Duration::ZERO;
        for index in 1..=self.nodes().len() {
            let took = self.wait_frontend(index, addr, port, proto, "want no frontend", |fe| {
                !fe.exists()
            })?;
            slowest = slowest.max(took);
        }
        Ok(slowest)
    }

    /// Prints every agent's log tail (for a failing test or the demo).
    pub fn print_agent_logs(&self, lines: usize) {
        for agent in &self.agents {
            eprintln!(
                "---- weir-agent log, {} (last {lines} lines) ----\n{}",
                agent.node().name(),
                agent.log_tail(lines)
            );
        }
    }

    /// Leaves everything running after this process exits (for `weir-demo
    /// --keep`): agents keep running, the lab is kept. Returns the lab id.
    pub fn keep(self) -> Result<String> {
        if !self.cgroups.is_empty() {
            bail!("a cluster with test cgroups cannot be kept");
        }
        let Cluster {
            mut agents, lab, ..
        } = self;
        for agent in &mut agents {
            agent.detach();
        }
        lab.keep()
    }
}

/// Prints the tail of every agent's log when dropped during a panic (before
/// the lab's teardown removes the logs).
#[derive(Debug, Default)]
struct LogsOnPanic(Vec<(String, PathBuf)>);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (node, log) in &self.0 {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(80)..].join("\n");
            eprintln!("---- weir-agent log, {node} (last 80 lines) ----\n{tail}");
        }
    }
}

/// `pod.<namespace>.<name>.yaml`.
fn pod_file(namespace: &str, name: &str) -> String {
    format!("pod.{namespace}.{name}.yaml")
}

fn check_file_name(file: &str) -> Result<()> {
    if file.is_empty() || file.contains('/') || file.starts_with('.') {
        bail!("{file:?} is not a plain manifest file name");
    }
    Ok(())
}

/// Polls `f` every 10 ms until it returns true; the time it took, or an
/// error (with the last error of `f`, if any) after `deadline`.
pub fn poll(deadline: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match f() {
            Ok(true) => return Ok(start.elapsed()),
            Ok(false) => {}
            Err(err) => last_err = Some(err),
        }
        if start.elapsed() > deadline {
            return match last_err {
                Some(err) => Err(err.context(format!("not done within {deadline:?}"))),
                None => bail!("not done within {deadline:?}"),
            };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An agent's `weir_sync_total{result="ok"}` (0 when unreadable).
fn sync_ok_count(agent: &Agent) -> f64 {
    agent
        .metric("weir_sync_total{result=\"ok\"}")
        .unwrap_or(0.0)
}
