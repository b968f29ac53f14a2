//! Endpoints of Services, in the shape kube-proxy reads them from
//! EndpointSlices.
//!
//! - [`controller`]: for a Service with a selector, the agent computes the
//!   endpoints itself, as the EndpointSlice controller does.
//! - [`slices`]: explicit EndpointSlices (`kubernetes.io/service-name`),
//!   for selector-less Services.
//! - [`select`]: which endpoints a frontend uses (kube-proxy's
//!   `CategorizeEndpoints`): ready ones, else serving+terminating ones.
//!
//! [`EndpointSources::for_service`] combines the first two.

pub mod controller;
mod index;
pub mod select;
pub mod slices;

use std::collections::HashMap;

use foldhash::HashSet;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;

use crate::k8s::{Kind, ObjectKey, ObjectName, ObjectWarning, Snapshot};
use crate::plan::Protocol;

pub use index::{PodIndex, SliceIndex};

/// One endpoint address, as an EndpointSlice entry holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub address: Ipv4Addr,
    /// The node the endpoint runs on, if known.
    pub node_name: Option<String>,
    pub conditions: Conditions,
    /// The pod behind the endpoint, for logs.
    pub target: Option<ObjectName>,
    /// The Service ports this endpoint serves, with the resolved port
    /// number. A pod lacking a named target port lacks that entry.
    pub ports: Vec<EndpointPort>,
}

impl Endpoint {
    /// The endpoint's port for a Service port (matched by name and
    /// protocol, as kube-proxy does).
    pub fn port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }
}

/// EndpointSlice conditions, with nil already resolved (ready and serving
/// default to true, terminating to false, as the API documents).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conditions {
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EndpointPort {
    /// The Service port's name ("" when unnamed).
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// `spec.ports[].protocol` and friends: TCP when unset, as the API server
/// defaults it; `None` for anything unknown.
pub fn parse_protocol(protocol: Option<&str>) -> Option<Protocol> {
    match protocol.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

/// A port number from the API (`i32`), if it is a valid one.
pub fn port_number(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p != 0)
}

/// Where endpoints come from: the snapshot plus indexes over its pods and
/// slices, built once per plan so each Service costs only its own pods.
pub struct EndpointSources<'a> {
    nodes: HashSet<&'a str>,
    pods: PodIndex<'a>,
    slices: SliceIndex<'a>,
}

impl<'a> EndpointSources<'a> {
    pub fn new(snapshot: &'a Snapshot) -> Self {
        Self {
            nodes: snapshot.nodes.keys().map(|n| n.name.as_str()).collect(),
            pods: PodIndex::new(snapshot),
            slices: SliceIndex::new(snapshot),
        }
    }

    /// All endpoints of a Service, deduplicated by address later per port.
    ///
    /// - With a selector: computed from the Pods, as the EndpointSlice
    ///   controller would, plus any EndpointSlice for the Service that the
    ///   controller does not manage (kube-proxy reads those too). Slices
    ///   managed by `endpointslice-controller.k8s.io` are ignored: our
    ///   computation stands in for them.
    /// - Without a selector (absent or empty, as the API server stores an
    ///   empty one): every EndpointSlice labelled with the Service's name.
    pub fn for_service(
        &self,
        name: &ObjectName,
        service: &Service,
        pod_ip_overrides: &HashMap<ObjectName, Ipv4Addr>,
        warnings: &mut Vec<ObjectWarning>,
    ) -> Vec<Endpoint> {
        let selector = service
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .filter(|s| !s.is_empty());
        let service_key = || ObjectKey::new(Kind::Service, name.clone());
        let mut endpoints = Vec::new();
        if let Some(selector) = selector {
            let pods = self.pods.select(&name.namespace, selector);
            endpoints = controller::endpoints_from_pods(
                service,
                pods,
                &self.nodes,
                pod_ip_overrides,
                &mut |message| warnings.push(ObjectWarning::new(service_key(), message)),
            );
        }
        for slice in self.slices.for_service(&name.namespace, &name.name) {
            if selector.is_some() && slices::is_controller_managed(slice) {
                continue;
            }
            endpoints.extend(slices::endpoints_from_slice(slice, &mut |message| {
                let name = ObjectName::of(Kind::EndpointSlice, &slice.metadata);
                let key = ObjectKey::new(Kind::EndpointSlice, name);
                warnings.push(ObjectWarning::new(key, message))
            }));
        }
        endpoints
    }
}

#[cfg(test)]
mod tests;
