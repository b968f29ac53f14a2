//! Endpoints computed from Pods, as Kubernetes' EndpointSlice controller
//! computes them (`k8s.io/endpointslice`: `DesiredEndpointSlicesFromServicePods`,
//! `podToEndpoint`, `getEndpointPorts`, `findPort`), for the IPv4 family:
//!
//! - Pods in phase Succeeded or Failed are left out.
//! - A pod needs an address: its CNI registration on this node (the
//!   caller's override map) or else `status.podIPs`/`status.podIP`.
//! - A pod whose `spec.nodeName` names no known Node is left out, unless the
//!   Service sets `publishNotReadyAddresses` (the controller does this so a
//!   pod on a vanished node cannot pin a slice).
//! - serving = the pod's `Ready` condition is True; terminating =
//!   `metadata.deletionTimestamp` is set; ready = serving and not
//!   terminating, or always with `publishNotReadyAddresses`.
//! - Per Service port, the target port resolves per pod: a number as is, a
//!   name to that pod's container port of that name and protocol. A pod
//!   without the named port does not serve that Service port.

use std::collections::HashMap;

use foldhash::HashSet;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Conditions, Endpoint, EndpointPort, parse_protocol, port_number};
use crate::k8s::{Kind, ObjectName};

/// Endpoints for `service` from the `pods` its selector matched, given
/// the names of the Nodes that exist.
/// `warn` receives one message per problem (aggregated per Service).
pub fn endpoints_from_pods<'p>(
    service: &Service,
    pods: impl IntoIterator<Item = &'p Pod>,
    known_nodes: &HashSet<&str>,
    pod_ip_overrides: &HashMap<ObjectName, Ipv4Addr>,
    warn: &mut dyn FnMut(String),
) -> Vec<Endpoint> {
    let spec = service.spec.as_ref();
    let publish_not_ready = spec
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let service_ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();

    let mut on_unknown_node: Vec<String> = Vec::new();
    let mut endpoints = Vec::new();
    for pod in pods {
        if is_terminal(pod) {
            continue;
        }
        let pod_name = ObjectName::of(Kind::Pod, &pod.metadata);
        let address = match pod_address(pod, &pod_name, pod_ip_overrides) {
            Ok(Some(address)) => address,
            Ok(None) => continue,
            Err(bad) => {
                warn(format!("pod {pod_name}: unparsable status.podIP {bad:?}"));
                continue;
            }
        };
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let node_known = node_name
            .as_deref()
            .is_some_and(|n| known_nodes.contains(n));
        if !node_known && !publish_not_ready {
            on_unknown_node.push(format!(
                "{} (node {:?})",
                pod_name.name,
                node_name.as_deref().unwrap_or("")
            ));
            continue;
        }
        let serving = is_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        endpoints.push(Endpoint {
            address,
            node_name,
            conditions: Conditions {
                ready: publish_not_ready || (serving && !terminating),
                serving,
                terminating,
            },
            ports: service_ports
                .iter()
                .filter_map(|sp| endpoint_port(pod, sp))
                .collect(),
            target: Some(pod_name),
        });
    }
    if let Some(first) = on_unknown_node.first() {
        warn(format!(
            "{} matching pod(s) skipped: their node is unknown, e.g. {first}",
            on_unknown_node.len()
        ));
    }
    endpoints
}

/// Succeeded or Failed: the pod's containers are done for good.
fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The pod's `Ready` condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The pod's IPv4 address: its CNI registration here, else the first IPv4
/// of `status.podIPs`, else `status.podIP`. `Ok(None)` when it has none
/// (not yet wired, or IPv6 only); `Err` carries an unparsable address.
fn pod_address(
    pod: &Pod,
    name: &ObjectName,
    overrides: &HashMap<ObjectName, Ipv4Addr>,
) -> Result<Option<Ipv4Addr>, String> {
    if !overrides.is_empty()
        && let Some(address) = overrides.get(name)
    {
        return Ok(Some(*address));
    }
    let Some(status) = pod.status.as_ref() else {
        return Ok(None);
    };
    let listed = || status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
    let all = || listed().chain(status.pod_ip.as_deref());
    if let Some(v4) = all().find_map(|ip| ip.parse::<Ipv4Addr>().ok()) {
        return Ok(Some(v4));
    }
    match all().find(|ip| ip.parse::<std::net::IpAddr>().is_err()) {
        Some(bad) => Err(bad.to_string()),
        None => Ok(None),
    }
}

/// The endpoint port for one Service port on one pod (`findPort`).
fn endpoint_port(pod: &Pod, service_port: &ServicePort) -> Option<EndpointPort> {
    let protocol = parse_protocol(service_port.protocol.as_deref())?;
    let port = match &service_port.target_port {
        // The API server defaults an unset targetPort to the port.
        None => port_number(service_port.port)?,
        Some(IntOrString::Int(n)) => port_number(*n)?,
        Some(IntOrString::String(name)) => named_container_port(pod, name, protocol)?,
    };
    Some(EndpointPort {
        name: service_port.name.clone().unwrap_or_default(),
        protocol,
        port,
    })
}

/// The pod's container port called `name` with `protocol`.
fn named_container_port(pod: &Pod, name: &str, protocol: crate::plan::Protocol) -> Option<u16> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name)
                && parse_protocol(p.protocol.as_deref()) == Some(protocol)
        })
        .and_then(|p| port_number(p.container_port))
}
