//! `--cgroup`: the agent attaches the socket LB programs to the given
//! cgroup (never the root), host processes in it reach ClusterIPs, and
//! the attachments outlive the agent.
#![allow(clippy::unwrap_used)]

mod daemon_support;

use std::path::{Path, PathBuf};

use daemon_support::*;
use weir_lab::{Node, ProbeResult};

const CGROUP2_ROOT: &str = "/sys/fs/cgroup/unified";

/// A cgroup of our own under the machine's cgroup2 mount; removed on drop.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new() -> Self {
        let path = Path::new(CGROUP2_ROOT).join(format!("weir-lab-{}-daemon", std::process::id()));
        std::fs::create_dir(&path).unwrap();
        Self(path)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.0) {
            eprintln!("removing cgroup {}: {e}", self.0.display());
        }
    }
}

/// Program names attached to `cgroup` (bpftool shows BTF names).
fn cgroup_programs(cgroup: &Path) -> Vec<String> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(cgroup)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Vec::new();
    }
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut names: Vec<String> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// `weir-probe --tcp addr` from the node's netns, inside `cgroup`.
fn probe_in_cgroup(node: &Node, cgroup: &Path, target: &str) -> ProbeResult {
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec {} --tcp {target} --timeout-ms 2000 --count 1",
        cgroup.display(),
        weir_lab::bin_path("weir-probe").display()
    );
    let out = node.netns().run("sh", &["-c", &script]).unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn socket_lb_programs_go_on_the_given_cgroup_and_stay() {
    require_root();
    // Declared before the lab, so it is removed after the lab's bpffs
    // (and with it the pinned links) is gone.
    let cgroup = TestCgroup::new();
    let lab = lab(1);
    let node = lab.node(1);
    let dir = manifests_dir(&lab);
    write_manifest(
        &dir,
        "cluster.yaml",
        &format!(
            "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\n\
             spec: {{clusterIP: 10.96.0.40, selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080}}]}}\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: default, labels: {{app: web}}}}\n\
             spec: {{nodeName: node1, containers: [{{name: c, image: x}}]}}\n\
             status: {{phase: Running, conditions: [{{type: Ready, status: 'True'}}]}}\n",
            node_manifests(&lab)
        ),
    );
    let cgroup_arg = cgroup.0.display().to_string();
    let mut agent = Agent::start_with(node, &dir, &["--cgroup", &cgroup_arg]);
    agent.wait_ready();
    let want = [
        "weir_sock_connect4",
        "weir_sock_getpeername4",
        "weir_sock_recvmsg4",
        "weir_sock_sendmsg4",
    ];
    assert_eq!(cgroup_programs(&cgroup.0), want);
    assert!(
        cgroup_programs(Path::new(CGROUP2_ROOT)).is_empty(),
        "nothing on the root cgroup"
    );

    let a = node
        .add_pod_with_config("a", &node.cni_config_with_agent())
        .unwrap();
    let _server = a.serve(&[8080]).unwrap();
    let reply = probe_in_cgroup(node, &cgroup.0, "10.96.0.40:80");
    assert!(reply.is_connected() && reply.reply == "a", "{reply:?}");

    let status = agent.terminate();
    assert!(status.success(), "{status}");
    assert_eq!(
        cgroup_programs(&cgroup.0),
        want,
        "attachments outlive the agent"
    );
    let reply = probe_in_cgroup(node, &cgroup.0, "10.96.0.40:80");
    assert!(
        reply.is_connected() && reply.reply == "a",
        "without agent: {reply:?}"
    );
}
