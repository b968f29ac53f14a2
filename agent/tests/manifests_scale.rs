//! Scale check of the standalone control plane: N Services × 10 endpoints
//! from a manifest directory to a plan. Asserts the plan is complete and
//! prints the wall and CPU time of each stage (never asserted), and the
//! cost of one more file: re-reading it and planning incrementally.
//!
//! N defaults to 1000 so the debug test suite stays quick; the issue's
//! figure is for 10k, in release:
//!   WEIR_SCALE_SERVICES=10000 cargo test --release -p weir-agent --test manifests_scale -- --nocapture
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Instant;

use weir_agent::manifests::{DirLoader, Poll};
use weir_agent::services::{IncrementalPlanner, PlanContext, compute_plan};

const ENDPOINTS: usize = 10;
const NODES: usize = 10;

fn services() -> usize {
    std::env::var("WEIR_SCALE_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn ip(base: u32, offset: usize) -> Ipv4Addr {
    Ipv4Addr::from(base + offset as u32)
}

fn nodes_yaml() -> String {
    let mut out = String::new();
    for n in 0..NODES {
        write!(
            out,
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: node-{n}}}\nspec: {{podCIDR: 10.{}.0.0/16}}\n\
             status: {{addresses: [{{type: InternalIP, address: 192.168.0.{}}}]}}\n",
            128 + n,
            n + 1
        )
        .unwrap();
    }
    out
}

/// Service `i` selects 10 pods spread over the nodes, with a named port.
fn pod_backed_yaml(first: usize, last: usize) -> String {
    let mut out = String::new();
    for i in first..last {
        write!(
            out,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: default}}\n\
             spec:\n  clusterIP: {}\n  selector: {{app: app-{i}}}\n  ports: [{{name: http, port: 80, targetPort: http}}]\n",
            ip(0x0a60_0000, i)
        )
        .unwrap();
        for j in 0..ENDPOINTS {
            write!(
                out,
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: app-{i}-{j}, namespace: default, labels: {{app: app-{i}}}}}\n\
                 spec: {{nodeName: node-{j}, containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]}}\n\
                 status: {{phase: Running, podIP: {}, conditions: [{{type: Ready, status: \"True\"}}]}}\n",
                ip(0x0a80_0000, i * ENDPOINTS + j)
            )
            .unwrap();
        }
    }
    out
}

/// Selector-less Service `i` with one explicit EndpointSlice of 10.
fn slice_backed_yaml(first: usize, last: usize) -> String {
    let mut out = String::new();
    for i in first..last {
        write!(
            out,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: default}}\n\
             spec: {{clusterIP: {}, ports: [{{name: http, port: 80}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: svc-{i}-1, namespace: default, labels: {{kubernetes.io/service-name: svc-{i}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n",
            ip(0x0a60_0000, i)
        )
        .unwrap();
        for j in 0..ENDPOINTS {
            writeln!(
                out,
                "- {{addresses: [{}], nodeName: node-{j}}}",
                ip(0x0a80_0000, i * ENDPOINTS + j)
            )
            .unwrap();
        }
    }
    out
}

/// The pod-backed set again, as one JSON `List` per file.
fn pod_backed_json(first: usize, last: usize) -> String {
    let mut items = Vec::new();
    for i in first..last {
        items.push(format!(
            r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"svc-{i}","namespace":"default"}},"spec":{{"clusterIP":"{}","selector":{{"app":"app-{i}"}},"ports":[{{"name":"http","port":80,"targetPort":"http"}}]}}}}"#,
            ip(0x0a60_0000, i)
        ));
        for j in 0..ENDPOINTS {
            items.push(format!(
                r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"app-{i}-{j}","namespace":"default","labels":{{"app":"app-{i}"}}}},"spec":{{"nodeName":"node-{j}","containers":[{{"name":"c","ports":[{{"name":"http","containerPort":8080}}]}}]}},"status":{{"phase":"Running","podIP":"{}","conditions":[{{"type":"Ready","status":"True"}}]}}}}"#,
                ip(0x0a80_0000, i * ENDPOINTS + j)
            ));
        }
    }
    format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[\n{}\n]}}\n",
        items.join(",\n")
    )
}

/// CPU seconds this process used so far, all threads (/proc ticks are
/// USER_HZ = 100 on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn run(label: &str, extension: &str, generate: fn(usize, usize) -> String) {
    let n = services();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nodes.yaml"), nodes_yaml()).unwrap();
    // Ten files, as a generator or a dump would split them.
    let files = 10;
    for f in 0..files {
        let text = generate(n * f / files, n * (f + 1) / files);
        std::fs::write(dir.path().join(format!("svc-{f}.{extension}")), text).unwrap();
    }

    let mut loader = DirLoader::new(dir.path());
    let (started, cpu) = (Instant::now(), cpu_seconds());
    let Poll::Changed(set) = loader.poll() else {
        panic!("the first poll loads")
    };
    let (loaded, load_cpu) = (started.elapsed(), cpu_seconds() - cpu);
    assert!(
        set.errors.is_empty(),
        "{:?}",
        &set.errors[..set.errors.len().min(3)]
    );

    let ctx = PlanContext {
        node_name: "node-0".into(),
        ..PlanContext::default()
    };
    let (started, cpu) = (Instant::now(), cpu_seconds());
    let plan = compute_plan(&set.snapshot, &ctx);
    let (planned, plan_cpu) = (started.elapsed(), cpu_seconds() - cpu);

    assert!(
        plan.warnings.is_empty(),
        "{:?}",
        &plan.warnings[..plan.warnings.len().min(3)]
    );
    assert_eq!(plan.state.frontends.len(), n);
    assert!(
        plan.state
            .frontends
            .iter()
            .all(|f| f.backends.len() == ENDPOINTS && f.backends[0].port == 8080)
    );
    assert_eq!(plan.state.routes.len(), NODES - 1);
    println!(
        "{label}: {n} services x {ENDPOINTS} endpoints, {} objects in {} documents: \
         load {:.0} ms ({:.0} ms CPU), plan {:.0} ms ({:.0} ms CPU)",
        set.snapshot.counts().total(),
        set.documents,
        loaded.as_secs_f64() * 1e3,
        load_cpu * 1e3,
        planned.as_secs_f64() * 1e3,
        plan_cpu * 1e3,
    );

    // One more Service with one endpoint, in a file of its own: the cost
    // of a small change at this scale, as the watcher and the main loop
    // pay it (re-check the named file, re-assemble, plan incrementally).
    let mut planner = IncrementalPlanner::new();
    let first = planner.plan(None, &set.snapshot, &ctx);
    assert_eq!(first, plan);
    std::fs::write(dir.path().join("change.yaml"), slice_backed_yaml(n, n + 1)).unwrap();
    let started = Instant::now();
    let Poll::Changed(changed) = loader.poll_names(&["change.yaml".into()]) else {
        panic!("the new file is seen")
    };
    let reloaded = started.elapsed();
    let started = Instant::now();
    let replan = planner.plan(Some(&set.snapshot), &changed.snapshot, &ctx);
    let replanned = started.elapsed();
    assert_eq!(replan.state.frontends.len(), n + 1);
    let started = Instant::now();
    assert_eq!(replan, compute_plan(&changed.snapshot, &ctx));
    let full = started.elapsed();
    println!(
        "{label}: one more file: re-poll {:.1} ms, incremental re-plan {:.1} ms (full plan {:.0} ms)",
        reloaded.as_secs_f64() * 1e3,
        replanned.as_secs_f64() * 1e3,
        full.as_secs_f64() * 1e3,
    );
}

#[test]
fn services_backed_by_pods() {
    run("pods (YAML)", "yaml", pod_backed_yaml);
}

#[test]
fn services_backed_by_pods_in_json_lists() {
    run("pods (JSON)", "json", pod_backed_json);
}

#[test]
fn services_backed_by_endpoint_slices() {
    run("slices (YAML)", "yaml", slice_backed_yaml);
}
