//! Endpoints from explicit EndpointSlices, read as kube-proxy reads them
//! (`pkg/proxy/endpointslicecache.go`):
//!
//! - only `addressType: IPv4` slices;
//! - the first address of each endpoint;
//! - nil conditions: ready and serving count as true, terminating as false;
//! - port name defaults to "" and protocol to TCP (the API server's
//!   defaults); a port without a number is ignored.

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{Conditions, Endpoint, EndpointPort, parse_protocol, port_number};
use crate::k8s::ObjectName;

/// The `endpointslice.kubernetes.io/managed-by` value of slices the
/// EndpointSlice controller owns.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";

/// Whether the EndpointSlice controller manages this slice (so for a
/// Service with a selector, our own computation replaces it).
pub fn is_controller_managed(slice: &EndpointSlice) -> bool {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == CONTROLLER_NAME)
}

/// The endpoints one slice contributes. `warn` receives one message per
/// problem.
pub fn endpoints_from_slice(slice: &EndpointSlice, warn: &mut dyn FnMut(String)) -> Vec<Endpoint> {
    if slice.address_type != "IPv4" {
        return Vec::new();
    }
    let mut ports = Vec::new();
    for port in slice.ports.iter().flatten() {
        let name = port.name.clone().unwrap_or_default();
        let Some(protocol) = parse_protocol(port.protocol.as_deref()) else {
            warn(format!(
                "port {name:?}: unsupported protocol {:?}",
                port.protocol
            ));
            continue;
        };
        let Some(number) = port.port.and_then(port_number) else {
            warn(format!("port {name:?}: no valid port number"));
            continue;
        };
        ports.push(EndpointPort {
            name,
            protocol,
            port: number,
        });
    }

    let mut endpoints = Vec::new();
    for endpoint in &slice.endpoints {
        let Some(first) = endpoint.addresses.first() else {
            continue;
        };
        let Ok(address) = first.parse() else {
            warn(format!("unparsable IPv4 endpoint address {first:?}"));
            continue;
        };
        let conditions = endpoint.conditions.as_ref();
        endpoints.push(Endpoint {
            address,
            node_name: endpoint.node_name.clone(),
            conditions: Conditions {
                ready: conditions.and_then(|c| c.ready).unwrap_or(true),
                serving: conditions.and_then(|c| c.serving).unwrap_or(true),
                terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
            },
            target: endpoint
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .map(|r| {
                    ObjectName::new(
                        r.namespace.clone().unwrap_or_default(),
                        r.name.clone().unwrap_or_default(),
                    )
                }),
            ports: ports.clone(),
        });
    }
    endpoints
}
