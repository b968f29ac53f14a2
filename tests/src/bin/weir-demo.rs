//! `weir-demo`: a two-node lab with pods wired by the real `weir-cni`, traffic
//! between them, and a summary table.
//!
//! ```text
//! weir-demo                 build, show traffic, tear down (exit 1 if a flow failed)
//! weir-demo --keep          leave the lab up and print how to enter and remove it
//! weir-demo --cleanup ID    remove a kept lab
//! weir-demo --list          list labs on this machine
//! ```
//!
//! Structure, so later stages (agents, services, policies) slot in: `build_cluster`
//! → `start_workloads` → `flows` (the list of checks) → `run_flows` → `print_table`.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use weir_lab::{Lab, Node, Pod, ProbeOptions, ProbeResult, Proto, ServeGuard};

#[derive(Parser, Debug)]
#[command(about = "Weir demo: pods wired by weir-cni talking within and across nodes")]
struct Args {
    /// Leave the lab up and print how to enter and remove it.
    #[arg(long)]
    keep: bool,
    /// Remove a kept lab by id (see --list) and exit.
    #[arg(long, value_name = "LAB_ID", conflicts_with_all = ["keep", "list"])]
    cleanup: Option<String>,
    /// List the labs on this machine and exit.
    #[arg(long, conflicts_with = "keep")]
    list: bool,
    /// Number of nodes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=9))]
    nodes: u8,
    /// Pods per node.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=20))]
    pods_per_node: u8,
}

/// Port every pod serves, on TCP and UDP.
const PORT: u16 = 80;

fn main() -> ExitCode {
    let args = Args::parse();
    if !weir_lab::is_root() {
        eprintln!("weir-demo: needs root (it creates network namespaces)");
        return ExitCode::FAILURE;
    }
    let outcome = if let Some(id) = &args.cleanup {
        cleanup(id)
    } else if args.list {
        list();
        Ok(true)
    } else {
        demo(&args)
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("weir-demo: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The cluster as the demo built it.
struct Cluster {
    lab: Lab,
    /// Pods per node, in node order.
    pods: Vec<Vec<Pod>>,
}

/// Where a flow starts.
#[derive(Clone, Copy)]
enum Source<'a> {
    Pod(&'a Pod),
    Node(&'a Node),
    Outside,
}

/// One check: a probe from a source to an address, with the reply we expect.
struct Flow<'a> {
    what: &'static str,
    from: Source<'a>,
    to_label: String,
    addr: IpAddr,
    port: u16,
    proto: Proto,
    expect_reply: String,
}

/// A flow and what the probe saw.
struct Row {
    what: &'static str,
    from: String,
    to: String,
    proto: Proto,
    result: std::result::Result<ProbeResult, String>,
    ok: bool,
}

fn demo(args: &Args) -> Result<bool> {
    let cni = weir_lab::try_bin_path("weir-cni")?;
    println!("weir-demo: weir-cni = {}", cni.display());
    let cluster = build_cluster(args)?;
    print_topology(&cluster);
    let servers = start_workloads(&cluster)?;
    let flows = flows(&cluster);
    let rows = run_flows(&cluster.lab, &flows);
    print_table(&rows);
    let failed = rows.iter().filter(|r| !r.ok).count();
    println!(
        "\n{} flows, {} ok, {failed} failed",
        rows.len(),
        rows.len() - failed
    );
    if args.keep {
        keep(cluster, servers)?;
    } else {
        drop(servers);
        let id = cluster.lab.id().to_string();
        drop(cluster);
        println!("lab {id} torn down");
    }
    Ok(failed == 0)
}

fn build_cluster(args: &Args) -> Result<Cluster> {
    let lab = Lab::builder().nodes(usize::from(args.nodes)).build()?;
    println!("lab {} up: {} nodes", lab.id(), lab.nodes().len());
    let mut pods = Vec::new();
    for node in lab.nodes() {
        let mut on_node = Vec::new();
        for k in 0..args.pods_per_node {
            let name = pod_name(node.index(), k);
            let pod = node
                .add_pod(&name)
                .with_context(|| format!("adding pod {name} on {}", node.name()))?;
            on_node.push(pod);
        }
        pods.push(on_node);
    }
    Ok(Cluster { lab, pods })
}

/// `a1, a2, ...` on node1, `b1, ...` on node2, and so on.
fn pod_name(node_index: usize, k: u8) -> String {
    let letter = char::from(b'a' + u8::try_from(node_index.saturating_sub(1) % 26).unwrap_or(0));
    format!("{letter}{}", k + 1)
}

fn start_workloads(cluster: &Cluster) -> Result<Vec<ServeGuard>> {
    cluster
        .pods
        .iter()
        .flatten()
        .map(|pod| pod.serve(&[PORT]))
        .collect()
}

/// The checks: pod to pod on one node, across nodes, node to pod, outside to pod.
fn flows(cluster: &Cluster) -> Vec<Flow<'_>> {
    let mut flows = Vec::new();
    let all: Vec<&Pod> = cluster.pods.iter().flatten().collect();
    let mut add = |what, from, to: &Pod| {
        for proto in Proto::ALL {
            flows.push(Flow {
                what,
                from,
                to_label: format!("{} {}", to.name(), to.ip()),
                addr: IpAddr::V4(to.ip()),
                port: PORT,
                proto,
                expect_reply: to.name().to_string(),
            });
        }
    };
    for (i, on_node) in cluster.pods.iter().enumerate() {
        // Same node: each pod to the next one on its node.
        for (k, pod) in on_node.iter().enumerate() {
            if let Some(next) = on_node
                .get((k + 1) % on_node.len())
                .filter(|_| on_node.len() > 1)
            {
                add("same node", Source::Pod(pod), next);
            }
        }
        // Across nodes: the first pod to every pod on the next node.
        let next_node = &cluster.pods[(i + 1) % cluster.pods.len()];
        if cluster.pods.len() > 1
            && let Some(first) = on_node.first()
        {
            for target in next_node {
                add("cross node", Source::Pod(first), target);
            }
        }
    }
    for node in cluster.lab.nodes() {
        // The node's host netns to a local and to a remote pod.
        let local = all.iter().find(|p| p.node().index() == node.index());
        let remote = all.iter().find(|p| p.node().index() != node.index());
        for target in [local, remote].into_iter().flatten() {
            add("node to pod", Source::Node(node), target);
        }
    }
    if let Some(last) = all.last() {
        add("outside to pod", Source::Outside, last);
    }
    // Group the table by kind of check, in the order they were first added.
    let mut order: Vec<&str> = Vec::new();
    for flow in &flows {
        if !order.contains(&flow.what) {
            order.push(flow.what);
        }
    }
    flows.sort_by_key(|f| order.iter().position(|w| *w == f.what));
    flows
}

fn source_label(from: Source<'_>) -> String {
    match from {
        Source::Pod(pod) => format!("{} {}", pod.name(), pod.ip()),
        Source::Node(node) => format!("{} {}", node.name(), node.ip()),
        Source::Outside => format!("outside {}", weir_lab::lab::OUTSIDE_IP),
    }
}

fn run_flows(lab: &Lab, flows: &[Flow<'_>]) -> Vec<Row> {
    let opts = ProbeOptions {
        timeout_ms: 1000,
        count: 1,
    };
    flows
        .iter()
        .map(|flow| {
            let ns = match flow.from {
                Source::Pod(pod) => pod.netns(),
                Source::Node(node) => node.netns(),
                Source::Outside => lab.outside(),
            };
            let result = ns
                .probe_with(flow.proto, flow.addr, flow.port, opts)
                .map_err(|e| format!("{e:#}"))
                .and_then(|mut v| v.pop().ok_or_else(|| "no result".to_string()));
            let ok = matches!(&result, Ok(r) if r.is_connected() && r.reply == flow.expect_reply);
            Row {
                what: flow.what,
                from: source_label(flow.from),
                to: format!("{}:{}", flow.to_label, flow.port),
                proto: flow.proto,
                result,
                ok,
            }
        })
        .collect()
}

fn print_topology(cluster: &Cluster) {
    println!();
    println!(
        "{:<8} {:<16} {:<15} {:<6} {:<14} host veth",
        "node", "node ip", "pod cidr", "pod", "pod ip"
    );
    for (node, pods) in cluster.lab.nodes().iter().zip(&cluster.pods) {
        for pod in pods {
            println!(
                "{:<8} {:<16} {:<15} {:<6} {:<14} {}",
                node.name(),
                node.ip().to_string(),
                node.pod_cidr().to_string(),
                pod.name(),
                pod.ip().to_string(),
                pod.host_veth()
            );
        }
    }
    println!();
}

fn print_table(rows: &[Row]) {
    let header = [
        "check",
        "source",
        "destination",
        "proto",
        "result",
        "reply",
        "ms",
        "verdict",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let (result, reply, ms) = match &r.result {
                Ok(p) => (
                    match &p.error {
                        Some(e) => format!("{} ({e})", p.result),
                        None => p.result.to_string(),
                    },
                    p.reply.clone(),
                    format!("{:.2}", p.elapsed_ms),
                ),
                Err(e) => (format!("lab error: {e}"), String::new(), String::new()),
            };
            [
                r.what.to_string(),
                r.from.clone(),
                r.to.clone(),
                r.proto.to_string(),
                result,
                reply,
                ms,
                if r.ok { "ok" } else { "FAIL" }.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cols: &[String]| {
        let parts: Vec<String> = cols
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(&header.map(str::to_string));
    line(&widths.map(|w| "-".repeat(w)));
    for row in &cells {
        line(row);
    }
}

fn keep(cluster: Cluster, servers: Vec<ServeGuard>) -> Result<()> {
    for server in servers {
        server.detach();
    }
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "weir-demo".to_string());
    let probe = weir_lab::try_bin_path("weir-probe")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "weir-probe".to_string());
    let all: Vec<&Pod> = cluster.pods.iter().flatten().collect();
    let outside = cluster.lab.outside().name().to_string();
    let node1 = cluster.lab.node(1).netns().name().to_string();
    let first = all.first().map(|p| (p.netns().name().to_string(), p.ip()));
    let last = all.last().map(|p| p.ip());
    let dir = cluster.lab.dir().display().to_string();
    let names: Vec<String> = cluster
        .lab
        .nodes()
        .iter()
        .map(|n| n.netns().name().to_string())
        .chain(all.iter().map(|p| p.netns().name().to_string()))
        .chain([outside.clone()])
        .collect();
    // Pods first: their drop now does nothing, as the lab is kept.
    let Cluster { lab, pods } = cluster;
    let id = lab.keep()?;
    drop(pods);

    println!("\nlab {id} kept. Its network namespaces:");
    for name in &names {
        println!("  {name}");
    }
    println!("\nEnter it, e.g.:");
    if let (Some((pod_ns, _)), Some(target)) = (&first, last) {
        println!("  ip netns exec {pod_ns} ip addr show eth0");
        println!("  ip netns exec {pod_ns} ip route");
        println!("  ip netns exec {pod_ns} {probe} --tcp {target}:{PORT}");
        println!("  ip netns exec {outside} {probe} --udp {target}:{PORT}");
    }
    println!("  ip netns exec {node1} ip route");
    println!("  nsenter --net=/run/netns/{node1} bash");
    println!("\nState (CNI config, IPAM files): {dir}");
    println!("\nRemove it:");
    println!("  {exe} --cleanup {id}");
    println!("or by hand:");
    println!(
        "  for ns in {}; do ip netns pids $ns | xargs -r kill; ip netns delete $ns; done; rm -rf {dir}",
        names.join(" ")
    );
    Ok(())
}

fn cleanup(id: &str) -> Result<bool> {
    let report = weir_lab::sweep::remove_lab(id)?;
    if report.netns.is_empty() && report.dirs.is_empty() {
        println!("nothing left of lab {id}");
    } else {
        println!(
            "removed lab {id}: {} netns, {} state dirs",
            report.netns.len(),
            report.dirs.len()
        );
    }
    Ok(true)
}

fn list() {
    let labs = weir_lab::sweep::list_labs();
    if labs.is_empty() {
        println!("no labs");
    }
    for id in labs {
        let pid_alive = weir_lab::sweep::owner_pid(&id).is_some_and(weir_lab::sweep::pid_alive);
        let state = if weir_lab::sweep::is_kept(&id) {
            "kept"
        } else if pid_alive {
            "running"
        } else {
            "leftover (swept by the next lab)"
        };
        println!("{id}  {state}");
    }
}
