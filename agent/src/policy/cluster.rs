//! The objects policy needs, read once from a snapshot: namespaces with
//! their labels, pods with an IPv4 address, and node addresses.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Node, Pod};

use super::error::{PolicyError, Problem};
use super::ports::NamedPorts;
use crate::k8s::{Kind, ObjectKey, ObjectName, Snapshot};

/// The label the API server puts on every namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Namespace annotation: policy drops in it pass and are reported as audit.
pub const AUDIT_ANNOTATION: &str = "weir.io/policy-audit";

#[derive(Clone, Debug, Default)]
pub struct NamespaceView {
    /// With [`NAMESPACE_NAME_LABEL`], also for namespaces only known from
    /// their pods.
    pub labels: BTreeMap<String, String>,
    pub audit: bool,
}

#[derive(Clone, Debug)]
pub struct PodView<'a> {
    pub name: &'a ObjectName,
    pub labels: &'a BTreeMap<String, String>,
    pub ip: Ipv4Addr,
    /// Runs on this node (by `spec.nodeName` or a CNI registration here).
    pub local: bool,
    pub named_ports: NamedPorts,
}

pub struct Cluster<'a> {
    pub namespaces: BTreeMap<&'a str, NamespaceView>,
    /// Pods with an IPv4 address, by name; hostNetwork and finished pods
    /// are left out (they are the node, or gone), and so is a pod whose
    /// address an earlier pod (by name) already has.
    pub pods: Vec<PodView<'a>>,
    /// This node's addresses.
    pub host_ips: Vec<Ipv4Addr>,
    /// Other nodes' addresses.
    pub remote_node_ips: Vec<Ipv4Addr>,
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl<'a> Cluster<'a> {
    pub fn read(
        snapshot: &'a Snapshot,
        node_name: &str,
        pod_ip_overrides: &HashMap<ObjectName, Ipv4Addr>,
        errors: &mut Vec<PolicyError>,
    ) -> Self {
        let mut namespaces: BTreeMap<&str, NamespaceView> = BTreeMap::new();
        for (name, namespace) in &snapshot.namespaces {
            let meta = &namespace.metadata;
            let mut labels = meta.labels.clone().unwrap_or_default();
            labels.insert(NAMESPACE_NAME_LABEL.into(), name.name.clone());
            let audit = meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(AUDIT_ANNOTATION))
                .is_some_and(|v| v == "true");
            namespaces.insert(name.name.as_str(), NamespaceView { labels, audit });
        }

        let mut pods = Vec::new();
        let mut owners: HashMap<Ipv4Addr, &ObjectName> = HashMap::new();
        for (name, pod) in &snapshot.pods {
            if is_host_network(pod) || is_finished(pod) {
                continue;
            }
            let ip = match pod_ip_overrides.get(name) {
                Some(ip) => *ip,
                None => match pod_ipv4(pod) {
                    Ok(Some(ip)) => ip,
                    Ok(None) => continue,
                    Err(bad) => {
                        let key = ObjectKey::new(Kind::Pod, name.clone());
                        errors.push(PolicyError::new(
                            key,
                            "status.podIP",
                            Problem::InvalidPodIp(bad),
                        ));
                        continue;
                    }
                },
            };
            if let Some(other) = owners.get(&ip) {
                let key = ObjectKey::new(Kind::Pod, name.clone());
                let problem = Problem::DuplicatePodIp {
                    ip,
                    other: other.to_string(),
                };
                errors.push(PolicyError::new(key, "status.podIP", problem));
                continue;
            }
            owners.insert(ip, name);
            namespaces
                .entry(name.namespace.as_str())
                .or_insert_with(|| NamespaceView {
                    labels: BTreeMap::from([(NAMESPACE_NAME_LABEL.into(), name.namespace.clone())]),
                    audit: false,
                });
            let on_node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
            pods.push(PodView {
                name,
                labels: pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS),
                ip,
                local: on_node == Some(node_name) || pod_ip_overrides.contains_key(name),
                named_ports: NamedPorts::of(pod),
            });
        }

        let mut host_ips = Vec::new();
        let mut remote_node_ips = Vec::new();
        for (name, node) in &snapshot.nodes {
            let ips = if name.name == node_name {
                &mut host_ips
            } else {
                &mut remote_node_ips
            };
            ips.extend(node_ipv4s(node));
        }
        Self {
            namespaces,
            pods,
            host_ips,
            remote_node_ips,
        }
    }
}

fn is_host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The first IPv4 of `status.podIPs`, else `status.podIP`; `Err` carries
/// an unparsable address when there is no IPv4 at all.
fn pod_ipv4(pod: &Pod) -> Result<Option<Ipv4Addr>, String> {
    let Some(status) = pod.status.as_ref() else {
        return Ok(None);
    };
    let all = || {
        status
            .pod_ips
            .iter()
            .flatten()
            .map(|p| p.ip.as_str())
            .chain(status.pod_ip.as_deref())
    };
    if let Some(ip) = all().find_map(|ip| ip.parse::<Ipv4Addr>().ok()) {
        return Ok(Some(ip));
    }
    match all().find(|ip| ip.parse::<std::net::IpAddr>().is_err()) {
        Some(bad) => Err(bad.to_string()),
        None => Ok(None),
    }
}

/// Every IPv4 in `status.addresses` (InternalIP, ExternalIP).
fn node_ipv4s(node: &Node) -> impl Iterator<Item = Ipv4Addr> + '_ {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.parse().ok())
}
