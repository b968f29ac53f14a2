//! # The Kubernetes e2e NetworkPolicy model, on the cluster lab
//!
//! The model of Kubernetes' `test/e2e/network/netpol`: namespaces `x`, `y`
//! and `z` labelled `ns=x|y|z`, pods `a`, `b` and `c` in each labelled
//! `pod=a|b|c`, spread over two nodes, every pod serving TCP and UDP on
//! ports 80 and 81 (container ports `serve-80-tcp`, `serve-80-udp`,
//! `serve-81-tcp`, `serve-81-udp`).
//!
//! * [`table`]: the expected [`Reachability`] (9×9 pods × {80, 81} ×
//!   {TCP, UDP}) with builders, the [`Observed`] probe results, and
//!   [`compare`] / [`render`] (the whole table with mismatches marked).
//! * [`harness`]: [`NetpolLab`] builds the model on a [`crate::cluster::Cluster`]
//!   (pods through the real `weir-cni`, one `weir-serve` per pod on all
//!   four ports, answering `<ns>/<pod>`), probes the whole matrix in
//!   parallel, applies a [`Case`]'s steps through the manifests dir and
//!   waits for every agent to sync.
//! * [`cases`]: the policy cases of issue 4, each with its hand-derived
//!   expected tables. Their unit test cross-checks every table against the
//!   agent's reference decision (`weir_agent::policy`).
//!
//! Objects are emitted as JSON documents (never bare YAML scalars), so a
//! namespace or label value `y` stays a string for the agent's YAML 1.1
//! reader.
//!
//! Pod placement (index = namespace × 3 + pod): even indexes on node 1,
//! odd on node 2, so x/a, x/c, y/b, z/a, z/c share node 1 and x/b, y/a,
//! y/c, z/b node 2; every namespace spans both nodes.

pub mod cases;
pub mod harness;
pub mod monitor;
pub mod table;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::cluster::objects::PodSpec;
use crate::workload::Proto;

pub use cases::{Case, FlowCheck, ServiceCheck, Step, Theme, all_cases, cases_of};
pub use harness::{CaseFailure, CaseRun, NetpolLab};
pub use table::{
    Cell, Mismatch, Observed, On, PORT_PROTOS, Peer, Reachability, compare, render, render_expected,
};

/// The model's namespaces.
pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
/// The pod names in each namespace.
pub const PODS: [&str; 3] = ["a", "b", "c"];
/// Number of pods.
pub const POD_COUNT: usize = 9;
/// The ports every pod serves, TCP and UDP.
pub const PORTS: [u16; 2] = [80, 81];

/// One pod of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodId {
    pub ns: usize,
    pub pod: usize,
}

impl PodId {
    /// `PodId::new("x", "a")`; panics on a name outside the model.
    pub fn new(ns: &str, pod: &str) -> PodId {
        let find = |all: &[&str], what: &str| match all.iter().position(|n| *n == what) {
            Some(i) => i,
            None => panic!("{what:?} is not in the model ({all:?})"),
        };
        PodId {
            ns: find(&NAMESPACES, ns),
            pod: find(&PODS, pod),
        }
    }

    pub fn from_index(index: usize) -> PodId {
        PodId {
            ns: index / 3,
            pod: index % 3,
        }
    }

    /// All nine, x/a first.
    pub fn all() -> impl Iterator<Item = PodId> {
        (0..POD_COUNT).map(PodId::from_index)
    }

    pub fn index(self) -> usize {
        self.ns * 3 + self.pod
    }

    pub fn namespace(self) -> &'static str {
        NAMESPACES[self.ns]
    }

    pub fn name(self) -> &'static str {
        PODS[self.pod]
    }

    /// The lab node (1 or 2) the pod runs on.
    pub fn node(self) -> usize {
        1 + self.index() % 2
    }

    /// Its labels when no step changes them: `pod=<name>`.
    pub fn default_labels(self) -> BTreeMap<String, String> {
        BTreeMap::from([("pod".to_string(), self.name().to_string())])
    }

    /// The Pod's spec with these labels: the four named container ports.
    pub fn spec(self, labels: &BTreeMap<String, String>) -> PodSpec {
        let mut spec = PodSpec::new(self.name()).namespace(self.namespace());
        for (k, v) in labels {
            spec = spec.label(k, v);
        }
        for port in PORTS {
            for proto in Proto::ALL {
                spec = spec.port(&port_name(port, proto), port, proto);
            }
        }
        spec
    }
}

/// `serve-80-tcp` and so on.
pub fn port_name(port: u16, proto: Proto) -> String {
    format!("serve-{port}-{proto}")
}

/// A node of the model: what its Node object says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelNode {
    pub name: String,
    pub ip: Ipv4Addr,
    pub pod_cidr: ipnetwork::Ipv4Network,
}

/// The addresses of a model instance: the lab's real ones, or
/// [`Model::synthetic`] ones (the lab's layout) for tests without root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub nodes: Vec<ModelNode>,
    pub pod_ips: [Ipv4Addr; POD_COUNT],
}

impl Model {
    /// The lab's layout with made-up pod addresses: nodes `node1`/`node2`
    /// at 192.168.100.11/12 with pod CIDRs 10.244.1.0/24 and
    /// 10.244.2.0/24; pod `i` at 10.244.<node>.<20 + i>.
    pub fn synthetic() -> Model {
        let nodes = (1..=2u8)
            .map(|n| ModelNode {
                name: format!("node{n}"),
                ip: Ipv4Addr::new(192, 168, 100, 10 + n),
                pod_cidr: ipnetwork::Ipv4Network::new(Ipv4Addr::new(10, 244, n, 0), 24)
                    .unwrap_or_else(|e| panic!("{e}")),
            })
            .collect();
        let mut pod_ips = [Ipv4Addr::UNSPECIFIED; POD_COUNT];
        for pod in PodId::all() {
            let node = u8::try_from(pod.node()).unwrap_or(1);
            let host = 20 + u8::try_from(pod.index()).unwrap_or(0);
            pod_ips[pod.index()] = Ipv4Addr::new(10, 244, node, host);
        }
        Model { nodes, pod_ips }
    }

    pub fn pod_ip(&self, pod: PodId) -> Ipv4Addr {
        self.pod_ips[pod.index()]
    }

    pub fn node(&self, index: usize) -> &ModelNode {
        &self.nodes[index - 1]
    }

    /// The pod's address as a /32 CIDR string.
    pub fn pod_cidr32(&self, pod: PodId) -> String {
        format!("{}/32", self.pod_ip(pod))
    }

    /// Every object of the cluster in a step's state: Nodes, Namespaces
    /// (labelled), Pods (with the step's labels), the step's Services and
    /// NetworkPolicies. What the agents read, as one list.
    pub fn objects(&self, step: &Step) -> Vec<Value> {
        let mut out: Vec<Value> = self.nodes.iter().map(node_object).collect();
        out.push(namespace_object("default", &BTreeMap::new()));
        for ns in NAMESPACES {
            out.push(namespace_object_annotated(
                ns,
                &step.namespace_labels(ns),
                &step.namespace_annotations(ns),
            ));
        }
        for pod in PodId::all() {
            out.push(self.pod_object(pod, &step.pod_labels(pod)));
        }
        out.extend(step.services.iter().map(ServiceCheck::object));
        out.extend(step.policies.iter().cloned());
        out
    }

    /// The Pod object as the lab writes it.
    pub fn pod_object(&self, pod: PodId, labels: &BTreeMap<String, String>) -> Value {
        pod.spec(labels)
            .object(&self.node(pod.node()).name, self.pod_ip(pod))
    }
}

/// A Node object like [`crate::cluster::objects::node_object`] writes.
pub fn node_object(node: &ModelNode) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": {"kubernetes.io/hostname": node.name}},
        "spec": {"podCIDR": node.pod_cidr.to_string(), "podCIDRs": [node.pod_cidr.to_string()]},
        "status": {"addresses": [
            {"type": "InternalIP", "address": node.ip.to_string()},
            {"type": "Hostname", "address": node.name},
        ]},
    })
}

/// A Namespace of the model: `kubernetes.io/metadata.name=<ns>`, `ns=<ns>`
/// (for the model's three) and `extra`.
pub fn namespace_object(name: &str, extra: &BTreeMap<String, String>) -> Value {
    namespace_object_annotated(name, extra, &BTreeMap::new())
}

/// [`namespace_object`] with annotations (e.g. `weir.io/policy-audit`).
pub fn namespace_object_annotated(
    name: &str,
    extra: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Value {
    let mut labels =
        BTreeMap::from([("kubernetes.io/metadata.name".to_string(), name.to_string())]);
    if NAMESPACES.contains(&name) {
        labels.insert("ns".to_string(), name.to_string());
    }
    labels.extend(extra.clone());
    let mut obj = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    });
    if !annotations.is_empty() {
        obj["metadata"]["annotations"] = json!(annotations);
    }
    obj
}

/// A NetworkPolicy object.
pub fn network_policy(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

/// The file name of one object in the manifests dir.
pub fn file_name(obj: &Value) -> String {
    let kind = obj["kind"]
        .as_str()
        .unwrap_or("object")
        .to_ascii_lowercase();
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("cluster");
    let name = obj["metadata"]["name"].as_str().unwrap_or("unnamed");
    format!("netpol-{kind}.{ns}.{name}.yaml")
}
