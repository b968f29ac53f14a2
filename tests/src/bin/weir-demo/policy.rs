//! The demo's NetworkPolicy step, after the load-balancing part: the policies of
//! `deploy/examples/policies/` (a default deny of ingress in `default`, and the echo backends
//! accepting `role=client` pods on their named ports) go into the manifests directory; a
//! `role=client` pod and an unlabelled pod are added; then one allowed and one dropped
//! connection to a backend, while `weirctl monitor --verdict drop` runs in the background on
//! the backend's node and prints the line naming the policy that dropped it.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use weir_lab::cluster::{Cluster, PodSpec, poll};
use weir_lab::netpol::monitor::Monitor;
use weir_lab::{Pod, ProbeOptions, ProbeOutcome, Proto};

/// How long the agents get to apply the policies.
const SYNC: Duration = Duration::from_secs(20);

/// Runs the step against `backend` (a pod labelled app=echo serving TCP `port`); returns
/// whether the allowed connection was answered, the other dropped, and the monitor named the
/// policy.
pub fn show(cluster: &Cluster, policies_dir: &Path, backend: &Pod, port: u16) -> Result<bool> {
    println!("\n==> NetworkPolicy: default deny of ingress, plus an allow for role=client");
    let files = read_policies(policies_dir)?;
    let node = if cluster.nodes().len() >= 2 { 2 } else { 1 };
    let client = cluster
        .add_pod(node, PodSpec::new("client").label("role", "client"))
        .context("adding the client pod")?;
    let other = cluster
        .add_pod(node, PodSpec::new("intruder"))
        .context("adding the unlabelled pod")?;
    let syncs = |a: &weir_lab::cluster::Agent| {
        a.metric("weir_policy_syncs_total{result=\"ok\"}")
            .unwrap_or(0.0)
    };
    let before: Vec<f64> = cluster.agents().iter().map(syncs).collect();
    for (file, text) in &files {
        println!("manifest {file}");
        cluster.write_manifest(file, text)?;
    }
    let want = files.len() as f64;
    let took = poll(SYNC, || {
        Ok(cluster.agents().iter().zip(&before).all(|(a, b)| {
            a.metric("weir_objects{kind=\"NetworkPolicy\"}") == Some(want) && syncs(a) > *b
        }))
    })
    .context("waiting for every agent to apply the policies")?;
    println!(
        "every agent applied {} policies (waited {took:.1?})",
        files.len()
    );

    let socket = backend.node().agent_socket();
    let mut monitor = Monitor::start(&socket, &["--verdict", "drop"], Duration::from_millis(500))
        .context("starting weirctl monitor")?;
    println!(
        "weirctl monitor --verdict drop running on {} (the backend's node)",
        backend.node().name()
    );
    let opts = || ProbeOptions {
        timeout_ms: 1000,
        count: 1,
    };
    let mut ok = true;
    for (pod, allowed) in [(&client, true), (&other, false)] {
        let result = pod
            .probe_with(Proto::Tcp, backend.ip(), port, opts())?
            .pop()
            .context("weir-probe printed nothing")?;
        let seen = match result.result {
            ProbeOutcome::Connected => format!("answered by {}", result.reply),
            other => other.to_string(),
        };
        let good = if allowed {
            result.result == ProbeOutcome::Connected
        } else {
            result.result == ProbeOutcome::Timeout
        };
        ok &= good;
        println!(
            "{:<9} -> {} {}:{port}/tcp: {:<8} {seen:<24} {}",
            pod.name(),
            backend.name(),
            backend.ip(),
            if allowed { "allowed" } else { "dropped" },
            if good { "ok" } else { "UNEXPECTED" }
        );
    }
    let line = monitor.wait_for(Duration::from_secs(5), |l| l.contains("default/"));
    match line {
        Some(line) => println!("weirctl monitor: {line}"),
        None => {
            ok = false;
            println!(
                "weirctl monitor printed no drop naming a policy of default (lines: {:?})",
                monitor.lines()
            );
        }
    }
    drop(monitor);
    for pod in [client, other] {
        pod.delete().context("removing a policy-step pod")?;
    }
    Ok(ok)
}

/// `(manifest file name, text)` of the `*.yaml` files in `dir`.
fn read_policies(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("reading the policies in {}", dir.display()))?
    {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".yaml") && !name.starts_with('.') {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            files.push((format!("example-policy-{name}"), text));
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("no policies (*.yaml) in {}", dir.display());
    }
    Ok(files)
}
