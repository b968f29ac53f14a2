//! One Service → its frontends, as kube-proxy programs them.
//!
//! Scopes (see [`crate::plan::Scope`]): every (address, port, protocol) has
//! one `External`-scope frontend, the one the datapath looks up first. A
//! frontend whose in-cluster clients must see other backends than outside
//! clients also has an `Internal`-scope twin, and both carry `two_scopes`.
//!
//! - ClusterIP: one frontend; its backends follow internalTrafficPolicy
//!   (Local: this node's endpoints only, `local_only`).
//! - NodePort (on each of this node's addresses), LoadBalancer ingress IPs
//!   and externalIPs: with externalTrafficPolicy Cluster, one frontend with
//!   all endpoints. With Local, the External frontend has this node's
//!   endpoints only (`local_only`: keep the client address; none here but
//!   some elsewhere → drop, none anywhere → reject),
//!   and the Internal twin has all endpoints: kube-proxy sends pod and
//!   node traffic to external destinations to the cluster-wide endpoints,
//!   "subject to neither form of traffic policy" (iptables proxier,
//!   `externalTrafficChain`).

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};

use super::spec::{self, ClusterIp, ServiceType};
use crate::endpoints::{Endpoint, parse_protocol, port_number, select};
use crate::k8s::ObjectName;
use crate::plan::{Algorithm, Backend, Frontend, FrontendKind, Protocol, Scope, ServicePortRef};

/// Settings shared by every Service in one plan.
pub struct FrontendContext<'a> {
    pub node_name: &'a str,
    /// Addresses NodePorts answer on.
    pub node_ips: &'a [Ipv4Addr],
    pub default_algorithm: Algorithm,
}

/// The frontends of one Service. `warn` receives one message per problem;
/// the rest of the Service still applies.
pub fn service_frontends(
    name: &ObjectName,
    service: &Service,
    endpoints: &[Endpoint],
    ctx: &FrontendContext<'_>,
    warn: &mut dyn FnMut(String),
) -> Vec<Frontend> {
    let Some(spec) = service.spec.as_ref() else {
        warn("no spec".into());
        return Vec::new();
    };
    let service_type = match spec::service_type(spec) {
        Ok(ServiceType::ExternalName) => return Vec::new(),
        Ok(t) => t,
        Err(e) => {
            warn(e);
            return Vec::new();
        }
    };
    // kube-proxy skips a Service without a ClusterIP entirely (its
    // `ShouldSkipService`), NodePorts included.
    let cluster_ip = match spec::cluster_ip(spec) {
        Ok(ClusterIp::V4(ip)) => ip,
        Ok(ClusterIp::Headless) => return Vec::new(),
        Ok(ClusterIp::Unset) => {
            warn(
                "no spec.clusterIP: standalone mode allocates none, so the manifest must set it"
                    .into(),
            );
            return Vec::new();
        }
        Ok(ClusterIp::NoIpv4) => {
            warn("no IPv4 ClusterIP: Weir serves IPv4 only".into());
            return Vec::new();
        }
        Err(e) => {
            warn(e);
            return Vec::new();
        }
    };

    let shared = Shared {
        name,
        cluster_ip,
        service_type,
        external_local: spec::external_policy_local(spec, service_type),
        internal_local: spec::internal_policy_local(spec),
        affinity_timeout: spec::affinity_timeout(spec, warn),
        algorithm: spec::algorithm(service, ctx.default_algorithm, warn),
        external_ips: external_ips(spec, service, warn),
    };
    let mut frontends = Vec::new();
    for (index, port) in spec.ports.iter().flatten().enumerate() {
        shared.port_frontends(index, port, endpoints, ctx, &mut frontends, warn);
    }
    frontends
}

/// What every port of one Service shares.
struct Shared<'a> {
    name: &'a ObjectName,
    cluster_ip: Ipv4Addr,
    service_type: ServiceType,
    external_local: bool,
    internal_local: bool,
    affinity_timeout: Option<u32>,
    algorithm: Algorithm,
    /// LoadBalancer ingress IPs and externalIPs.
    external_ips: Vec<(Ipv4Addr, FrontendKind)>,
}

impl Shared<'_> {
    fn port_frontends(
        &self,
        index: usize,
        port: &ServicePort,
        endpoints: &[Endpoint],
        ctx: &FrontendContext<'_>,
        out: &mut Vec<Frontend>,
        warn: &mut dyn FnMut(String),
    ) {
        let port_name = port.name.clone().unwrap_or_default();
        let Some(proto) = parse_protocol(port.protocol.as_deref()) else {
            warn(format!(
                "spec.ports[{index}]: unsupported protocol {:?}",
                port.protocol
            ));
            return;
        };
        let Some(service_port) = port_number(port.port) else {
            warn(format!("spec.ports[{index}]: invalid port {}", port.port));
            return;
        };

        let candidates = select::candidates(endpoints, &port_name, proto, ctx.node_name);
        let cluster = select::cluster(&candidates);
        let local = select::local(&candidates);
        let frontend =
            |address, port, scope, kind, local_only, two_scopes, backends: &Vec<Backend>| {
                Frontend {
                    service: ServicePortRef {
                        namespace: self.name.namespace.clone(),
                        name: self.name.name.clone(),
                        port_name: port_name.clone(),
                    },
                    address,
                    port,
                    proto,
                    scope,
                    kind,
                    local_only,
                    two_scopes,
                    affinity_timeout: self.affinity_timeout,
                    algorithm: self.algorithm,
                    backends: backends.clone(),
                }
            };

        let internal = if self.internal_local {
            &local
        } else {
            &cluster
        };
        out.push(frontend(
            self.cluster_ip,
            service_port,
            Scope::External,
            FrontendKind::ClusterIp,
            // With no endpoint anywhere kube-proxy rejects; it drops only
            // when endpoints exist on other nodes.
            self.internal_local && !cluster.is_empty(),
            false,
            internal,
        ));

        let mut external: Vec<(Ipv4Addr, u16, FrontendKind)> = Vec::new();
        if let Some(node_port) = self.node_port(index, port, warn) {
            external.extend(
                ctx.node_ips
                    .iter()
                    .map(|ip| (*ip, node_port, FrontendKind::NodePort)),
            );
        }
        external.extend(
            self.external_ips
                .iter()
                .map(|(ip, kind)| (*ip, service_port, *kind)),
        );
        for (address, port, kind) in external {
            if self.external_local {
                out.push(frontend(
                    address,
                    port,
                    Scope::External,
                    kind,
                    !cluster.is_empty(),
                    true,
                    &local,
                ));
                out.push(frontend(
                    address,
                    port,
                    Scope::Internal,
                    kind,
                    false,
                    true,
                    &cluster,
                ));
            } else {
                out.push(frontend(
                    address,
                    port,
                    Scope::External,
                    kind,
                    false,
                    false,
                    &cluster,
                ));
            }
        }
    }

    /// The port's NodePort, for NodePort and LoadBalancer Services.
    fn node_port(
        &self,
        index: usize,
        port: &ServicePort,
        warn: &mut dyn FnMut(String),
    ) -> Option<u16> {
        match (self.service_type, port.node_port) {
            (ServiceType::NodePort | ServiceType::LoadBalancer, Some(n)) => {
                let valid = port_number(n);
                if valid.is_none() {
                    warn(format!("spec.ports[{index}]: invalid nodePort {n}"));
                }
                valid
            }
            (ServiceType::NodePort, None) => {
                warn(format!(
                    "spec.ports[{index}]: no nodePort: standalone mode allocates none, so the manifest must set it"
                ));
                None
            }
            // LoadBalancer with allocateLoadBalancerNodePorts: false, or a
            // ClusterIP Service (the API server would have refused a
            // nodePort there).
            _ => None,
        }
    }
}

/// IPv4 `status.loadBalancer.ingress[].ip` (skipping `ipMode: Proxy`, which
/// kube-proxy leaves to the load balancer) and `spec.externalIPs`.
fn external_ips(
    spec: &ServiceSpec,
    service: &Service,
    warn: &mut dyn FnMut(String),
) -> Vec<(Ipv4Addr, FrontendKind)> {
    let mut out = Vec::new();
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    for entry in ingress.into_iter().flatten() {
        if entry.ip_mode.as_deref() == Some("Proxy") {
            continue;
        }
        if let Some(ip) = entry.ip.as_deref() {
            push_ipv4(
                &mut out,
                ip,
                FrontendKind::LoadBalancer,
                "status.loadBalancer.ingress",
                warn,
            );
        }
    }
    for ip in spec.external_ips.iter().flatten() {
        push_ipv4(
            &mut out,
            ip,
            FrontendKind::ExternalIp,
            "spec.externalIPs",
            warn,
        );
    }
    out
}

fn push_ipv4(
    out: &mut Vec<(Ipv4Addr, FrontendKind)>,
    ip: &str,
    kind: FrontendKind,
    field: &str,
    warn: &mut dyn FnMut(String),
) {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => out.push((v4, kind)),
        Ok(std::net::IpAddr::V6(_)) => {}
        Err(_) => warn(format!("{field}: unparsable address {ip:?}")),
    }
}

/// The protocol and port of a frontend, for conflict messages.
pub fn describe(f: &Frontend) -> String {
    let proto = match f.proto {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    };
    format!(
        "{}:{}/{proto} ({:?}, {:?} scope)",
        f.address, f.port, f.kind, f.scope
    )
}
