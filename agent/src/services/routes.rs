//! Native routing: a route to every other node's pod CIDR via its IP.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::{IpNetwork, Ipv4Network};
use k8s_openapi::api::core::v1::Node;

use crate::k8s::{Kind, ObjectKey, ObjectName, ObjectWarning, Snapshot};
use crate::plan::NodeRoute;

/// The node's IPv4 `status.addresses` of type InternalIP, in order.
pub fn internal_ips(node: &Node) -> Vec<Ipv4Addr> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

/// The node's IPv4 pod CIDR: the first IPv4 one of `spec.podCIDRs`, else
/// `spec.podCIDR`. `Err` names an unparsable one.
fn pod_cidr(node: &Node) -> Result<Option<Ipv4Network>, String> {
    let Some(spec) = node.spec.as_ref() else {
        return Ok(None);
    };
    let listed = spec.pod_cidrs.iter().flatten().map(String::as_str);
    for cidr in listed.chain(spec.pod_cidr.as_deref()) {
        match cidr.parse::<IpNetwork>() {
            Ok(IpNetwork::V4(net)) => return Ok(Some(net)),
            Ok(IpNetwork::V6(_)) => {}
            Err(_) => return Err(format!("unparsable pod CIDR {cidr:?}")),
        }
    }
    Ok(None)
}

/// Routes to the pod CIDRs of all nodes but `local_node`, sorted by CIDR.
/// A node without a pod CIDR or InternalIP gets none (a warning names the
/// missing part); of two nodes claiming one CIDR the first by name wins.
pub fn node_routes(
    snapshot: &Snapshot,
    local_node: &str,
    warnings: &mut Vec<ObjectWarning>,
) -> Vec<NodeRoute> {
    let mut by_cidr: BTreeMap<Ipv4Network, NodeRoute> = BTreeMap::new();
    for (name, node) in &snapshot.nodes {
        if name.name == local_node {
            continue;
        }
        let mut warn = |m: String| {
            warnings.push(ObjectWarning::new(
                ObjectKey::new(Kind::Node, name.clone()),
                m,
            ))
        };
        let cidr = match pod_cidr(node) {
            Ok(Some(cidr)) => cidr,
            Ok(None) => continue,
            Err(e) => {
                warn(e);
                continue;
            }
        };
        let Some(via) = internal_ips(node).into_iter().next() else {
            warn(format!(
                "pod CIDR {cidr} but no IPv4 InternalIP address: no route to it"
            ));
            continue;
        };
        if let Some(existing) = by_cidr.get(&cidr) {
            warn(format!(
                "pod CIDR {cidr} is also node {}'s: no route via this node",
                existing.node
            ));
            continue;
        }
        by_cidr.insert(
            cidr,
            NodeRoute {
                node: name.name.clone(),
                pod_cidr: cidr,
                via,
            },
        );
    }
    by_cidr.into_values().collect()
}

/// The addresses NodePorts answer on: the local Node's InternalIPs.
pub fn local_node_ips(
    snapshot: &Snapshot,
    local_node: &str,
    warnings: &mut Vec<ObjectWarning>,
) -> Vec<Ipv4Addr> {
    let key = || ObjectKey::new(Kind::Node, ObjectName::cluster(local_node));
    match snapshot.node(local_node) {
        None => {
            warnings.push(ObjectWarning::new(
                key(),
                "this node's Node object is unknown: no NodePort frontends",
            ));
            Vec::new()
        }
        Some(node) => {
            let ips = internal_ips(node);
            if ips.is_empty() {
                warnings.push(ObjectWarning::new(
                    key(),
                    "this node has no IPv4 InternalIP address: no NodePort frontends",
                ));
            }
            ips
        }
    }
}
