//! `weir-demo`: a two-node lab whose nodes each run a real `weir-agent` in
//! standalone mode (manifests from `deploy/examples/`), pods wired by the real
//! `weir-cni` (registered with their node's agent), traffic between them, to a
//! ClusterIP and to a NodePort from outside, a summary table, and the spread of
//! ClusterIP requests over three backends on two nodes; then NetworkPolicy
//! ([`policy`]): a default deny plus an allow, one allowed and one dropped
//! connection, and the `weirctl monitor` line naming the policy.
//!
//! ```text
//! weir-demo                 build, show traffic, tear down (exit 1 if a flow failed)
//! weir-demo --keep          leave the lab up and print how to enter and remove it
//! weir-demo --cleanup ID    remove a kept lab
//! weir-demo --list          list labs on this machine
//! ```
//!
//! Structure, so later stages (policies) slot in: `build_cluster` →
//! `start_workloads` → `flows` (the list of checks) → `run_flows` → `print_table`
//! → `show_spread` → `policy::show`.

mod policy;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use weir_lab::cluster::{Cluster, PodSpec, tally};
use weir_lab::stats::Uniformity;
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
    /// Directory of example manifests (Services) for the agents.
    #[arg(long, value_name = "DIR")]
    examples: Option<PathBuf>,
    /// Requests per protocol sent to the ClusterIP to show the spread over
    /// its backends (each a new flow).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(3..=100_000))]
    requests: u32,
}

/// Port every pod serves, on TCP and UDP.
const PORT: u16 = 80;
/// The label that makes a pod a backend of the example Services.
const BACKEND_LABEL: (&str, &str) = ("app", "echo");
/// `echo` in deploy/examples/echo.yaml.
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// `echo-nodeport` in deploy/examples/echo.yaml.
const NODE_PORT: u16 = 30080;
/// How many pods the demo labels as backends.
const BACKENDS: usize = 3;

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
struct Demo {
    cluster: Cluster,
    /// Pods per node, in node order.
    pods: Vec<Vec<Pod>>,
    /// Names of the pods labelled as backends of the example Services.
    backends: Vec<String>,
}

/// Where a flow starts.
#[derive(Clone, Copy)]
enum Source<'a> {
    Pod(&'a Pod),
    Node(&'a Node),
    Outside,
}

/// One check: a probe from a source to an address, with the replies we accept.
struct Flow<'a> {
    what: &'static str,
    from: Source<'a>,
    to_label: String,
    addr: IpAddr,
    port: u16,
    proto: Proto,
    expect_reply: Vec<String>,
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
    let agent = weir_lab::try_bin_path("weir-agent")?;
    println!("weir-demo: weir-cni = {}", cni.display());
    println!("weir-demo: weir-agent = {}", agent.display());
    let demo = build_cluster(args)?;
    print_topology(&demo);
    let servers = start_workloads(&demo)?;
    wait_for_services(&demo)?;
    print_agents(&demo);
    let flows = flows(&demo);
    let rows = run_flows(demo.cluster.lab(), &flows);
    print_table(&rows);
    let failed = rows.iter().filter(|r| !r.ok).count();
    println!(
        "\n{} flows, {} ok, {failed} failed",
        rows.len(),
        rows.len() - failed
    );
    let spread_ok = show_spread(&demo, args.requests);
    let policy_ok = match demo
        .pods
        .iter()
        .flatten()
        .find(|p| demo.backends.iter().any(|b| b == p.name()))
    {
        Some(backend) => policy::show(
            &demo.cluster,
            &examples_dir(args).join("policies"),
            backend,
            PORT,
        )
        .unwrap_or_else(|err| {
            eprintln!("weir-demo: the policy step failed: {err:#}");
            false
        }),
        None => {
            eprintln!("weir-demo: no backend pod for the policy step");
            false
        }
    };
    if args.keep {
        keep(demo, servers)?;
    } else {
        drop(servers);
        let id = demo.cluster.lab().id().to_string();
        drop(demo);
        println!("lab {id} torn down");
    }
    Ok(failed == 0 && spread_ok && policy_ok)
}

/// The example manifests: `--examples`, else `<workspace>/deploy/examples`.
fn examples_dir(args: &Args) -> PathBuf {
    args.examples
        .clone()
        .unwrap_or_else(|| weir_lab::workspace_root().join("deploy").join("examples"))
}

/// `(file name, text)` of every `*.yaml`/`*.yml`/`*.json` file in `dir`.
fn read_examples(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading the example manifests in {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let manifest = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if manifest && !name.starts_with('.') {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            files.push((format!("example-{name}"), text));
        }
    }
    files.sort();
    if files.is_empty() {
        anyhow::bail!("no manifests (*.yaml, *.yml, *.json) in {}", dir.display());
    }
    Ok(files)
}

fn build_cluster(args: &Args) -> Result<Demo> {
    let examples = examples_dir(args);
    let mut builder = Cluster::builder().nodes(usize::from(args.nodes));
    for (file, text) in read_examples(&examples)? {
        println!("manifest {file} (from {})", examples.display());
        builder = builder.manifest(&file, &text);
    }
    let cluster = builder.build()?;
    println!(
        "lab {} up: {} nodes, one weir-agent each (standalone, manifests in {})",
        cluster.lab().id(),
        cluster.nodes().len(),
        cluster.manifests_dir().display()
    );
    let backends = choose_backends(args);
    let mut pods = Vec::new();
    for node in cluster.nodes() {
        let mut on_node = Vec::new();
        for k in 0..args.pods_per_node {
            let name = pod_name(node.index(), k);
            let mut spec = PodSpec::new(&name).port("echo", PORT, Proto::Tcp).port(
                "echo-udp",
                PORT,
                Proto::Udp,
            );
            if backends.contains(&name) {
                spec = spec.label(BACKEND_LABEL.0, BACKEND_LABEL.1);
            }
            let pod = cluster
                .add_pod(node.index(), spec)
                .with_context(|| format!("adding pod {name} on {}", node.name()))?;
            on_node.push(pod);
        }
        pods.push(on_node);
    }
    Ok(Demo {
        cluster,
        pods,
        backends,
    })
}

/// Three backends on two nodes where possible: the first two pods of node1
/// and the first of node2; else the first pods in order.
fn choose_backends(args: &Args) -> Vec<String> {
    let mut preferred: Vec<String> = Vec::new();
    if args.nodes >= 2 {
        preferred.extend((0..args.pods_per_node.min(2)).map(|k| pod_name(1, k)));
        preferred.push(pod_name(2, 0));
    }
    let all = (1..=usize::from(args.nodes))
        .flat_map(|n| (0..args.pods_per_node).map(move |k| pod_name(n, k)));
    for name in all {
        if preferred.len() >= BACKENDS {
            break;
        }
        if !preferred.contains(&name) {
            preferred.push(name);
        }
    }
    preferred.truncate(BACKENDS);
    preferred
}

/// Waits until every agent programmed the example ClusterIP with all
/// backends (TCP and UDP).
fn wait_for_services(demo: &Demo) -> Result<()> {
    let want: Vec<SocketAddrV4> = demo
        .pods
        .iter()
        .flatten()
        .filter(|p| demo.backends.iter().any(|b| b == p.name()))
        .map(|p| SocketAddrV4::new(p.ip(), PORT))
        .collect();
    for proto in Proto::ALL {
        let took = demo
            .cluster
            .wait_backends(CLUSTER_IP, PORT, proto, &want)
            .with_context(|| {
                format!("the agents never programmed echo {CLUSTER_IP}:{PORT}/{proto}")
            })?;
        println!(
            "echo {CLUSTER_IP}:{PORT}/{proto}: {} backends in every node's maps (waited {took:.1?})",
            want.len()
        );
    }
    Ok(())
}

fn print_agents(demo: &Demo) {
    println!();
    println!(
        "{:<8} {:<8} {:<7} {:<9} {:<10} {:<9} routes",
        "node", "agent", "ready", "services", "frontends", "backends"
    );
    for agent in demo.cluster.agents() {
        let metric = |name: &str| {
            agent
                .metric(name)
                .map_or_else(|| "?".to_string(), |v| format!("{v}"))
        };
        println!(
            "{:<8} {:<8} {:<7} {:<9} {:<10} {:<9} {}",
            agent.node().name(),
            agent
                .pid()
                .map_or_else(|| "-".to_string(), |p| p.to_string()),
            if agent.ready() { "yes" } else { "no" },
            metric("weir_services_programmed"),
            metric("weir_frontends_programmed"),
            metric("weir_backends_programmed"),
            metric("weir_routes_programmed"),
        );
    }
    println!();
}

/// The chance that a correct datapath fails one spread check (two per run,
/// TCP and UDP). A demo must essentially never fail on a correct datapath;
/// a broken one is far beyond the critical value (27.6 for three backends):
/// all of 600 requests on one backend give chi² = 1200, one backend never
/// chosen 300, a 2:1:1 split about 75.
const SPREAD_P: f64 = 1e-6;

/// `--requests` requests per protocol from a client pod to the ClusterIP,
/// each a new flow (`weir-probe` opens a fresh socket per request and never
/// reuses a UDP source port within a run, so conntrack does not pin
/// requests to an earlier request's backend): the count per backend, and
/// the chi-square check against a uniform spread at [`SPREAD_P`]. Returns
/// whether every request was answered by a backend and the spread passed.
fn show_spread(demo: &Demo, requests: u32) -> bool {
    let client = demo
        .pods
        .iter()
        .flatten()
        .find(|p| !demo.backends.iter().any(|b| b == p.name()));
    let (label, ns) = match client {
        Some(pod) => (
            format!("pod {} on {}", pod.name(), pod.node().name()),
            pod.netns(),
        ),
        None => ("node1".to_string(), demo.cluster.node(1).netns()),
    };
    let node_of: BTreeMap<&str, &str> = demo
        .pods
        .iter()
        .flatten()
        .map(|p| (p.name(), p.node().name()))
        .collect();
    let mut ok = true;
    for proto in Proto::ALL {
        println!(
            "\nClusterIP spread: {requests} {proto} requests from {label} to echo {CLUSTER_IP}:{PORT}"
        );
        let results = match ns.probe_with(
            proto,
            CLUSTER_IP,
            PORT,
            ProbeOptions {
                timeout_ms: 1000,
                count: requests,
            },
        ) {
            Ok(r) => r,
            Err(e) => {
                println!("  probe failed: {e:#}");
                ok = false;
                continue;
            }
        };
        let counts = tally(&results);
        let observed: Vec<usize> = demo
            .backends
            .iter()
            .map(|b| counts.get(b).copied().unwrap_or(0))
            .collect();
        let longest = observed.iter().copied().max().unwrap_or(1).max(1);
        for (backend, count) in demo.backends.iter().zip(&observed) {
            let bar = "#".repeat(count * 40 / longest);
            println!(
                "  {backend:<4} on {:<6} {count:>6}  {bar}",
                node_of.get(backend.as_str()).copied().unwrap_or("?")
            );
        }
        let others: usize = counts
            .iter()
            .filter(|(k, _)| !demo.backends.contains(k))
            .map(|(_, v)| v)
            .sum();
        if others > 0 {
            println!("  not answered by a backend: {others} ({counts:?})");
            ok = false;
        }
        if observed.len() < 2 {
            println!("  one backend: no spread to check");
            continue;
        }
        let check = Uniformity::check(&observed, SPREAD_P);
        println!(
            "  {}: {}",
            check.summary(),
            if check.uniform() {
                "uniform"
            } else {
                "NOT uniform"
            }
        );
        ok &= check.uniform();
    }
    ok
}

/// `a1, a2, ...` on node1, `b1, ...` on node2, and so on.
fn pod_name(node_index: usize, k: u8) -> String {
    let letter = char::from(b'a' + u8::try_from(node_index.saturating_sub(1) % 26).unwrap_or(0));
    format!("{letter}{}", k + 1)
}

fn start_workloads(demo: &Demo) -> Result<Vec<ServeGuard>> {
    demo.pods
        .iter()
        .flatten()
        .map(|pod| pod.serve(&[PORT]))
        .collect()
}

/// The checks: pod to pod on one node, across nodes, node to pod, outside to
/// pod; then the ClusterIP from pods and nodes, and the NodePort from outside
/// on every node.
fn flows(demo: &Demo) -> Vec<Flow<'_>> {
    let mut flows = Vec::new();
    let all: Vec<&Pod> = demo.pods.iter().flatten().collect();
    let mut add = |what, from, to: &Pod| {
        for proto in Proto::ALL {
            flows.push(Flow {
                what,
                from,
                to_label: format!("{} {}", to.name(), to.ip()),
                addr: IpAddr::V4(to.ip()),
                port: PORT,
                proto,
                expect_reply: vec![to.name().to_string()],
            });
        }
    };
    for (i, on_node) in demo.pods.iter().enumerate() {
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
        let next_node = &demo.pods[(i + 1) % demo.pods.len()];
        if demo.pods.len() > 1
            && let Some(first) = on_node.first()
        {
            for target in next_node {
                add("cross node", Source::Pod(first), target);
            }
        }
    }
    for node in demo.cluster.nodes() {
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
    let mut service = |what, from, label: String, addr: Ipv4Addr, port| {
        for proto in Proto::ALL {
            flows.push(Flow {
                what,
                from,
                to_label: label.clone(),
                addr: IpAddr::V4(addr),
                port,
                proto,
                expect_reply: demo.backends.clone(),
            });
        }
    };
    // The ClusterIP from the first pod of every node and from every node.
    for on_node in &demo.pods {
        if let Some(first) = on_node.first() {
            service(
                "ClusterIP",
                Source::Pod(first),
                format!("echo {CLUSTER_IP}"),
                CLUSTER_IP,
                PORT,
            );
        }
    }
    for node in demo.cluster.nodes() {
        service(
            "ClusterIP",
            Source::Node(node),
            format!("echo {CLUSTER_IP}"),
            CLUSTER_IP,
            PORT,
        );
    }
    // The NodePort on every node, from outside the cluster.
    for node in demo.cluster.nodes() {
        service(
            "NodePort from outside",
            Source::Outside,
            format!("{} {}", node.name(), node.ip()),
            node.ip(),
            NODE_PORT,
        );
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
            let ok = matches!(&result, Ok(r) if r.is_connected() && flow.expect_reply.contains(&r.reply));
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

fn print_topology(demo: &Demo) {
    println!();
    println!(
        "{:<8} {:<16} {:<15} {:<6} {:<14} {:<16} labels",
        "node", "node ip", "pod cidr", "pod", "pod ip", "host veth"
    );
    for (node, pods) in demo.cluster.nodes().iter().zip(&demo.pods) {
        for pod in pods {
            let labels = if demo.backends.iter().any(|b| b == pod.name()) {
                format!("{}={}", BACKEND_LABEL.0, BACKEND_LABEL.1)
            } else {
                String::new()
            };
            println!(
                "{:<8} {:<16} {:<15} {:<6} {:<14} {:<16} {labels}",
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

fn keep(demo: Demo, servers: Vec<ServeGuard>) -> Result<()> {
    for server in servers {
        server.detach();
    }
    let Demo { cluster, pods, .. } = demo;
    let cluster_lab: &Lab = cluster.lab();
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "weir-demo".to_string());
    let probe = weir_lab::try_bin_path("weir-probe")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "weir-probe".to_string());
    let all: Vec<&Pod> = pods.iter().flatten().collect();
    let outside = cluster_lab.outside().name().to_string();
    let node1 = cluster_lab.node(1).netns().name().to_string();
    let first = all.first().map(|p| (p.netns().name().to_string(), p.ip()));
    let last = all.last().map(|p| p.ip());
    let dir = cluster_lab.dir().display().to_string();
    let manifests = cluster.manifests_dir().display().to_string();
    let names: Vec<String> = cluster_lab
        .nodes()
        .iter()
        .map(|n| n.netns().name().to_string())
        .chain(all.iter().map(|p| p.netns().name().to_string()))
        .chain([outside.clone()])
        .collect();
    drop(all);
    // The agents keep running; pods dropped after the lab is kept do nothing.
    let id = cluster.keep()?;
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
        println!("  ip netns exec {pod_ns} {probe} --tcp {CLUSTER_IP}:{PORT} --count 10");
    }
    println!("  ip netns exec {outside} {probe} --tcp 192.168.100.11:{NODE_PORT}");
    println!("  ip netns exec {node1} curl -s localhost:9962/metrics | grep programmed");
    println!("  ip netns exec {node1} ip route");
    println!("  nsenter --net=/run/netns/{node1} bash");
    println!("\nThe agents read {manifests}: edit a Service there and it applies within a second.");
    println!("\nState (CNI config, IPAM files, agent logs and pins): {dir}");
    println!("\nRemove it:");
    println!("  {exe} --cleanup {id}");
    println!("or by hand:");
    println!(
        "  for ns in {}; do ip netns pids $ns | xargs -r kill; ip netns delete $ns; done; \
         umount {dir}/node*/bpffs; rm -rf {dir}",
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
