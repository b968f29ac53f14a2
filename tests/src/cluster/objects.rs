//! Kubernetes objects as the API server would hold them, for the manifests
//! directory that stands for the API server (DESIGN.md, "Agent"): Nodes
//! with `spec.podCIDR` and an InternalIP, Namespaces with their name label,
//! Pods with `spec.nodeName`, named container ports, `status.podIP` and the
//! Ready condition.
//!
//! Files are written as YAML whose documents are JSON objects (JSON is a
//! subset of YAML), so every field is typed by serde_json, never by string
//! formatting.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::lab::Node;
use crate::workload::Proto;

/// Kubernetes' protocol name.
pub fn k8s_protocol(proto: Proto) -> &'static str {
    match proto {
        Proto::Tcp => "TCP",
        Proto::Udp => "UDP",
    }
}

/// The Node object of a lab node.
pub fn node_object(node: &Node) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name(), "labels": {"kubernetes.io/hostname": node.name()}},
        "spec": {"podCIDR": node.pod_cidr().to_string(), "podCIDRs": [node.pod_cidr().to_string()]},
        "status": {"addresses": [
            {"type": "InternalIP", "address": node.ip().to_string()},
            {"type": "Hostname", "address": node.name()},
        ]},
    })
}

/// A Namespace object with the `kubernetes.io/metadata.name` label.
pub fn namespace_object(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
    })
}

/// A YAML file of the given documents.
pub fn yaml_documents(docs: &[Value]) -> String {
    docs.iter().map(|d| format!("---\n{d}\n")).collect()
}

/// A pod's readiness and termination, as the kubelet reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    /// Running, Ready=True.
    Ready,
    /// Running, Ready=False.
    NotReady,
    /// deletionTimestamp set, Ready=True: serving while terminating.
    TerminatingServing,
    /// deletionTimestamp set, Ready=False.
    TerminatingNotServing,
}

impl PodState {
    fn ready(self) -> bool {
        matches!(self, PodState::Ready | PodState::TerminatingServing)
    }

    fn terminating(self) -> bool {
        matches!(
            self,
            PodState::TerminatingServing | PodState::TerminatingNotServing
        )
    }
}

/// A named container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: String,
    pub port: u16,
    pub proto: Proto,
}

/// What a test wants of a pod: name, namespace, labels, container ports,
/// state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<ContainerPort>,
    pub state: PodState,
}

impl PodSpec {
    /// A Ready pod `name` in namespace `default`, no labels, no ports.
    pub fn new(name: &str) -> PodSpec {
        PodSpec {
            name: name.to_string(),
            namespace: "default".to_string(),
            labels: BTreeMap::new(),
            ports: Vec::new(),
            state: PodState::Ready,
        }
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_string();
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    /// A named container port.
    pub fn port(mut self, name: &str, port: u16, proto: Proto) -> Self {
        self.ports.push(ContainerPort {
            name: name.to_string(),
            port,
            proto,
        });
        self
    }

    pub fn state(mut self, state: PodState) -> Self {
        self.state = state;
        self
    }

    /// TCP ports among the container ports (what the pod's server binds).
    pub fn tcp_ports(&self) -> Vec<u16> {
        self.ports_of(Proto::Tcp)
    }

    /// UDP ports among the container ports.
    pub fn udp_ports(&self) -> Vec<u16> {
        self.ports_of(Proto::Udp)
    }

    fn ports_of(&self, proto: Proto) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .ports
            .iter()
            .filter(|p| p.proto == proto)
            .map(|p| p.port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// The Pod object on `node_name` with address `ip`.
    pub fn object(&self, node_name: &str, ip: Ipv4Addr) -> Value {
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|p| {
                json!({"name": p.name, "containerPort": p.port, "protocol": k8s_protocol(p.proto)})
            })
            .collect();
        let ready = if self.state.ready() { "True" } else { "False" };
        let mut metadata = json!({
            "name": self.name,
            "namespace": self.namespace,
            "labels": self.labels,
        });
        if self.state.terminating() {
            metadata["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            metadata["deletionGracePeriodSeconds"] = json!(30);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {
                "nodeName": node_name,
                "containers": [{"name": "main", "image": "weir-serve", "ports": ports}],
            },
            "status": {
                "phase": "Running",
                "podIP": ip.to_string(),
                "podIPs": [{"ip": ip.to_string()}],
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "ContainersReady", "status": ready},
                    {"type": "Ready", "status": ready},
                ],
            },
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pod_objects_carry_state_and_ports() {
        let spec = PodSpec::new("a")
            .label("app", "web")
            .port("http", 8080, Proto::Tcp)
            .port("dns", 5353, Proto::Udp)
            .port("dns-tcp", 5353, Proto::Tcp)
            .state(PodState::TerminatingServing);
        let obj = spec.object("node1", Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(obj["metadata"]["labels"]["app"], "web");
        assert!(obj["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(obj["status"]["conditions"][2]["status"], "True");
        assert_eq!(obj["spec"]["containers"][0]["ports"][1]["protocol"], "UDP");
        assert_eq!(obj["status"]["podIP"], "10.244.1.2");
        assert_eq!(spec.tcp_ports(), [5353, 8080]);
        assert_eq!(spec.udp_ports(), [5353]);
        let ready = spec
            .state(PodState::Ready)
            .object("node1", Ipv4Addr::LOCALHOST);
        assert!(ready["metadata"].get("deletionTimestamp").is_none());
    }

    #[test]
    fn documents_are_separated() {
        let text = yaml_documents(&[namespace_object("a"), namespace_object("b")]);
        assert_eq!(text.matches("---\n").count(), 2);
    }
}
