//! The clusters the benchmarks compile, as Kubernetes objects read by the agent's own manifest
//! reader (so the compiler sees exactly what the agent would):
//!
//! * [`scale`]: issue 4's scale, N pods over M nodes in 10 namespaces with P policies in the
//!   shapes real clusters use (pod-selector ingress on a named port, namespace-selector ingress
//!   on a port range, matchExpressions egress on a named port, ipBlock with except, default
//!   deny), the same mix as the agent's own scale unit test;
//! * [`datapath`]: the two pods whose packets part a times, with the one policy that allows
//!   their flow, plus `extra` policies selecting the same pods (other peers and ports), which
//!   grow the maps the lookups read.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Result, bail};
use serde_json::{Value, json};
use weir_agent::k8s::Snapshot;
use weir_lab::cluster::objects::yaml_documents;
use weir_lab::netpol::network_policy;

/// The node the benchmarks program (its pods are the endpoints).
pub const THIS_NODE: &str = "n1";

#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub pods: u32,
    pub nodes: u32,
    pub policies: u32,
}

const NAMESPACES: u32 = 10;

/// Reads `objects` with the agent's manifest reader.
pub fn snapshot(objects: &[Value]) -> Result<Snapshot> {
    let path = Path::new("bench.yaml");
    let parsed = weir_agent::manifests::parse_yaml(path, &yaml_documents(objects));
    if !parsed.errors.is_empty() {
        bail!(
            "the agent's reader rejects bench objects: {:?}",
            parsed.errors
        );
    }
    let (snapshot, errors) = weir_agent::manifests::assemble([(path, &parsed)]);
    if !errors.is_empty() {
        bail!("assembling the bench objects: {errors:?}");
    }
    Ok(snapshot)
}

fn node(name: &str, ip: Ipv4Addr, pod_cidr: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": ip.to_string()}]},
    })
}

fn namespace(name: &str, labels: Value) -> Value {
    let mut labels = labels;
    labels["kubernetes.io/metadata.name"] = json!(name);
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// A running pod with `http:8080` and `metrics:9090` container ports.
fn pod(ns: &str, name: &str, labels: Value, node: &str, ip: Ipv4Addr) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "main", "ports": [
            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
        ]}]},
        "status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]},
    })
}

/// Node `n` (1-based): 192.168.0.n, pods in 10.(99 + n).0.0/16.
fn node_ip(n: u32) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 0, n as u8)
}

fn node_cidr(n: u32) -> String {
    format!("10.{}.0.0/16", 99 + n)
}

/// The scale cluster; see the module docs.
pub fn scale(s: Scale) -> Result<Vec<Value>> {
    if s.nodes == 0 || s.nodes > 150 || s.pods > 150 * 65_000 {
        bail!("scale out of range: {s:?}");
    }
    let mut out = Vec::new();
    for n in 1..=s.nodes {
        out.push(node(&format!("n{n}"), node_ip(n), &node_cidr(n)));
    }
    for ns in 0..NAMESPACES {
        out.push(namespace(
            &format!("ns{ns}"),
            json!({"team": format!("t{}", ns % 3)}),
        ));
    }
    for i in 0..s.pods {
        let n = i % s.nodes + 1;
        let k = i / s.nodes;
        let ip = Ipv4Addr::new(10, (99 + n) as u8, (k / 250) as u8, (k % 250 + 1) as u8);
        let labels = json!({"app": format!("app{}", i % 20), "tier": format!("t{}", i % 3),
                            "idx": format!("i{}", i % 50)});
        out.push(pod(
            &format!("ns{}", i % NAMESPACES),
            &format!("p{i}"),
            labels,
            &format!("n{n}"),
            ip,
        ));
    }
    for p in 0..s.policies {
        let ns = format!("ns{}", p % NAMESPACES);
        let app = |a: u32| json!({"matchLabels": {"app": format!("app{}", a % 20)}});
        let block = 100 + p % s.nodes.min(3);
        let spec = match p % 5 {
            0 => json!({"podSelector": app(p), "ingress": [{
                "from": [{"podSelector": app(p + 1)}], "ports": [{"port": "http"}]}]}),
            1 => json!({"podSelector": app(p), "ingress": [{
                "from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", p % 3)}}}],
                "ports": [{"port": 8000, "endPort": 8100}]}]}),
            2 => json!({"podSelector": {"matchExpressions": [
                    {"key": "tier", "operator": "In", "values": [format!("t{}", p % 3)]}]},
                "egress": [{"to": [{"namespaceSelector": {}, "podSelector": app(p)}],
                            "ports": [{"port": "metrics"}]}]}),
            3 => json!({"podSelector": app(p), "ingress": [{"from": [{"ipBlock": {
                "cidr": format!("10.{block}.0.0/16"),
                "except": [format!("10.{block}.{}.0/24", p % 4)]}}]}]}),
            _ => json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        };
        out.push(network_policy(&ns, &format!("pol{p}"), spec));
    }
    Ok(out)
}

/// The client and server of part a, both on [`THIS_NODE`].
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 10);
pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 20);
/// A pod the client may not reach and the server does not accept (the sanity check's drops).
pub const OTHER: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 30);
/// The allowed flow's port.
pub const PORT: u16 = 80;
const BENCH_NS: &str = "bench";
/// Peer pods the extra policies name, on node 2.
const PEERS: u32 = 200;

/// The part-a cluster with `1 + extra` policies; see the module docs.
pub fn datapath(extra: u32) -> Result<Vec<Value>> {
    if extra > 60_000 {
        bail!("at most 60,000 extra policies (their ports are distinct)");
    }
    let mut out = vec![
        node(THIS_NODE, node_ip(1), &node_cidr(1)),
        node("n2", node_ip(2), &node_cidr(2)),
        namespace(BENCH_NS, json!({})),
    ];
    for (name, ip) in [("client", CLIENT), ("server", SERVER), ("other", OTHER)] {
        out.push(pod(BENCH_NS, name, json!({"pod": name}), THIS_NODE, ip));
    }
    for t in 0..10 {
        out.push(namespace(
            &format!("peers{t}"),
            json!({"team": format!("t{t}")}),
        ));
    }
    for i in 0..PEERS {
        let ip = Ipv4Addr::new(10, 101, (i / 250) as u8, (i % 250 + 1) as u8);
        let labels = json!({"app": format!("a{}", i % 50)});
        out.push(pod(
            &format!("peers{}", i % 10),
            &format!("peer{i}"),
            labels,
            "n2",
            ip,
        ));
    }
    // The measured flow: client -> server:80/TCP, allowed both ways (client egress, server
    // ingress); "other" is selected too: the client may not send to it, the server does not accept it.
    out.push(network_policy(
        BENCH_NS,
        "allow-client-server",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "client"}}}],
                            "ports": [{"port": PORT, "protocol": "TCP"}]}],
               "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "server"}}}],
                           "ports": [{"port": PORT, "protocol": "TCP"}]}]}),
    ));
    for i in 0..extra {
        let port = 1024 + i;
        let peer = match i % 3 {
            0 => json!({"namespaceSelector": {"matchLabels": {"team": format!("t{}", i % 10)}}}),
            1 => json!({"namespaceSelector": {},
                        "podSelector": {"matchLabels": {"app": format!("a{}", i % 50)}}}),
            _ => {
                json!({"ipBlock": {"cidr": format!("172.{}.{}.0/24", 16 + i / 65_536 % 16, i / 256 % 256),
                                    "except": [format!("172.{}.{}.128/25", 16 + i / 65_536 % 16, i / 256 % 256)]}})
            }
        };
        out.push(network_policy(
            BENCH_NS,
            &format!("extra{i}"),
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                   "ingress": [{"from": [peer.clone()], "ports": [{"port": port, "protocol": "TCP"}]}],
                   "egress": [{"to": [peer], "ports": [{"port": port, "endPort": port + 7, "protocol": "TCP"}]}]}),
        ));
    }
    Ok(out)
}
