//! Running the real `weir-agent` binary inside a lab node, as the demo
//! and a DaemonSet would: its own netns, pin root, state dir and a
//! manifests directory standing for the API server.
#![allow(clippy::unwrap_used, dead_code)]

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use aya::programs::{SchedClassifier, TcAttachType};
use serde_json::Value;
use weir_lab::cluster::agent::Agent as LabAgent;
use weir_lab::{CniCall, CniOutput, Lab, Node, Pod};

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "daemon tests need root (netns, bpffs, tcx); run them through `cargo xtask test` as root"
    );
}

/// A 1..n node lab without the lab's own native routes (the agents
/// program them).
pub fn lab(nodes: usize) -> Lab {
    require_root();
    Lab::builder()
        .nodes(nodes)
        .native_routing(false)
        .build()
        .unwrap()
}

/// `<node dir>/manifests`, shared by every node's agent of the lab.
pub fn manifests_dir(lab: &Lab) -> PathBuf {
    let dir = lab.dir().join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Node objects for every lab node (podCIDR, InternalIP).
pub fn node_manifests(lab: &Lab) -> String {
    lab.nodes()
        .iter()
        .map(|n| {
            format!(
                "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {}}}\nspec: {{podCIDR: {}}}\n\
                 status: {{addresses: [{{type: InternalIP, address: {}}}]}}\n",
                n.name(),
                n.pod_cidr(),
                n.ip()
            )
        })
        .collect()
}

/// Writes `body` to `dir/name` atomically (the watcher never sees half).
pub fn write_manifest(dir: &Path, name: &str, body: &str) {
    weir_lab::write_atomic(dir, name, body).unwrap();
}

pub fn record_path(pod: &Pod) -> PathBuf {
    pod.node().agent_dir().join("endpoints").join(format!(
        "{}-{}.json",
        pod.container_id(),
        pod.ifname()
    ))
}

/// A raw ADD for pod `name` in a fresh netns, for calls expected to fail.
pub fn add_call(node: &Node, name: &str, config: &Value) -> (CniCall, CniOutput) {
    let ns = node.create_netns(&format!("default.{name}")).unwrap();
    let container_id = ns
        .name()
        .strip_prefix("wlab-")
        .unwrap_or(ns.name())
        .to_string();
    let call = CniCall::new("ADD", &container_id)
        .netns(ns.path_str())
        .ifname("eth0")
        .args(Some(weir_lab::cni::default_cni_args("default", name)))
        .config(config);
    let out = node.cni_call(&call).unwrap();
    (call, out)
}

/// Names of the tcx programs on `dev` in the node's netns, ingress ones
/// then egress ones, e.g. `["weir_from_pod", "weir_to_pod"]` (bpftool 7.1
/// predates tcx, so this asks the kernel directly).
pub fn tc_programs(node: &Node, dev: &str) -> Vec<String> {
    let dev = dev.to_string();
    node.netns()
        .enter(move || {
            let mut names = Vec::new();
            for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
                let (_, programs) = SchedClassifier::query_tcx(&dev, hook).unwrap();
                names.extend(
                    programs
                        .iter()
                        .map(|p| p.name_as_str().unwrap_or_default().to_string()),
                );
            }
            names
        })
        .unwrap()
}

/// Whether `names` holds `full` (or its first 15 bytes, as the kernel
/// keeps them).
pub fn has_program(names: &[String], full: &str) -> bool {
    let short = &full[..full.len().min(15)];
    names.iter().any(|n| n == full || n == short)
}

/// A `weir-agent` process in a lab node: the lab's
/// [`weir_lab::cluster::agent::Agent`] with the panicking API these tests
/// use. Killed on drop; its log is printed when the test is failing.
pub struct Agent(LabAgent);

impl Agent {
    /// Starts the agent on `node` in standalone mode.
    pub fn start(node: &Node, manifests: &Path) -> Agent {
        Self::start_with(node, manifests, &[])
    }

    pub fn start_with(node: &Node, manifests: &Path, extra: &[&str]) -> Agent {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Agent(LabAgent::start(node, manifests, &args).unwrap())
    }

    /// Starts it again after [`Agent::terminate`] or [`Agent::kill`].
    pub fn restart(&mut self) {
        self.0.restart().unwrap();
    }

    pub fn pid(&self) -> i32 {
        self.0.pid().unwrap() as i32
    }

    /// SIGTERM, then waits (at most 30 s) for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.0.terminate().unwrap()
    }

    /// SIGKILL, then reaps it.
    pub fn kill(&mut self) {
        self.0.kill().unwrap();
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        self.0.log_text()
    }

    /// `GET path` on the agent's HTTP port, from inside the node's netns:
    /// (status, body); `None` when nothing listens yet.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        self.0.get(path)
    }

    /// Waits (at most 30 s) until `/readyz` answers 200.
    pub fn wait_ready(&self) {
        self.wait_for("/readyz 200", |a| a.0.ready());
    }

    /// The value of the sample `name{labels}` (as written) in /metrics.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        self.0.metric(sample)
    }

    /// Polls `f` every 20 ms for at most 30 s; panics with the log.
    pub fn wait_for(&self, what: &str, f: impl Fn(&Agent) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(pid) = self.0.pid()
                && let Some(status) = exited(pid)
            {
                panic!(
                    "the agent exited ({status}) while waiting for {what}\n{}",
                    self.log_text()
                );
            }
            if f(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for {what}\n{}", self.log_text());
    }
}

/// Whether the child `pid` has exited, without reaping it.
fn exited(pid: u32) -> Option<&'static str> {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) if stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')) => Some("zombie"),
        Ok(_) => None,
        Err(_) => Some("gone"),
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // The lab's agent kills the process when it drops, after this.
        if std::thread::panicking() {
            eprintln!(
                "---- weir-agent log ({}) ----\n{}",
                self.0.node().name(),
                self.log_text()
            );
        }
    }
}

/// Reads a JSON file.
pub fn read_json(path: &Path) -> Value {
    let mut text = String::new();
    File::open(path).unwrap().read_to_string(&mut text).unwrap();
    serde_json::from_str(&text).unwrap()
}
