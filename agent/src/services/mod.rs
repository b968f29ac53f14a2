//! The control plane's one entry point: Kubernetes objects → the desired
//! datapath state ([`compute_plan`]).

pub mod frontends;
mod incremental;
pub mod routes;
pub mod spec;

use std::collections::HashMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;

use crate::endpoints::EndpointSources;
use crate::k8s::{Kind, ObjectKey, ObjectName, ObjectWarning, Snapshot};
use crate::plan::{Algorithm, DesiredState, Frontend};

pub use incremental::IncrementalPlanner;
pub use spec::LB_ALGORITHM_ANNOTATION;

/// What the plan needs besides the objects.
#[derive(Clone, Debug, Default)]
pub struct PlanContext {
    /// This node's name (`--node-name`): decides which endpoints are local
    /// and which Node's addresses NodePorts answer on.
    pub node_name: String,
    /// Backend selection for Services without the `weir.io/lb-algorithm`
    /// annotation (the agent-wide flag).
    pub default_algorithm: Algorithm,
    /// Pod addresses from CNI registrations on this node, by pod
    /// namespace/name; they win over `status.podIP`.
    pub pod_ip_overrides: HashMap<ObjectName, Ipv4Addr>,
    /// Addresses NodePorts answer on, instead of the local Node object's
    /// InternalIPs (like kube-proxy's `--nodeport-addresses`).
    pub nodeport_addresses: Option<Vec<Ipv4Addr>>,
}

/// A computed plan and what could not be honoured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanResult {
    pub state: DesiredState,
    /// Sorted and deduplicated.
    pub warnings: Vec<ObjectWarning>,
    /// Endpoints seen across all Services (before per-port selection).
    pub endpoints: usize,
}

/// The desired datapath state for this node: a frontend per Service
/// address/port/scope with its chosen backends, and routes to the other
/// nodes' pod CIDRs. Pure and deterministic: the same snapshot and context
/// give the same plan.
///
/// Two Services claiming the same (address, port, protocol, scope): the
/// first by namespace/name keeps it, the other gets a warning.
pub fn compute_plan(snapshot: &Snapshot, ctx: &PlanContext) -> PlanResult {
    let mut node_warnings = Vec::new();
    let node_ips = node_ips(snapshot, ctx, &mut node_warnings);
    let sources = EndpointSources::new(snapshot);
    let services: Vec<ServicePlan> = snapshot
        .services
        .iter()
        .map(|(name, service)| plan_service(name, service, &sources, ctx, &node_ips))
        .collect();
    finish(snapshot, ctx, &services, node_warnings)
}

/// One Service's share of a plan: what [`IncrementalPlanner`] keeps per
/// Service between syncs.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ServicePlan {
    frontends: Vec<Frontend>,
    warnings: Vec<ObjectWarning>,
    endpoints: usize,
}

/// Addresses NodePorts answer on: the flag, else the local Node's
/// InternalIPs.
fn node_ips(
    snapshot: &Snapshot,
    ctx: &PlanContext,
    warnings: &mut Vec<ObjectWarning>,
) -> Vec<Ipv4Addr> {
    match &ctx.nodeport_addresses {
        Some(ips) => ips.clone(),
        None => routes::local_node_ips(snapshot, &ctx.node_name, warnings),
    }
}

fn plan_service(
    name: &ObjectName,
    service: &Service,
    sources: &EndpointSources<'_>,
    ctx: &PlanContext,
    node_ips: &[Ipv4Addr],
) -> ServicePlan {
    let frontend_ctx = frontends::FrontendContext {
        node_name: &ctx.node_name,
        node_ips,
        default_algorithm: ctx.default_algorithm,
    };
    let mut warnings = Vec::new();
    let endpoints = sources.for_service(name, service, &ctx.pod_ip_overrides, &mut warnings);
    let frontends =
        frontends::service_frontends(name, service, &endpoints, &frontend_ctx, &mut |message| {
            let key = ObjectKey::new(Kind::Service, name.clone());
            warnings.push(ObjectWarning::new(key, message))
        });
    ServicePlan {
        frontends,
        warnings,
        endpoints: endpoints.len(),
    }
}

/// The plan from every Service's share (in Service name order): frontends
/// sorted and deduplicated, routes, all warnings.
fn finish<'a>(
    snapshot: &Snapshot,
    ctx: &PlanContext,
    services: impl IntoIterator<Item = &'a ServicePlan>,
    mut warnings: Vec<ObjectWarning>,
) -> PlanResult {
    let mut all: Vec<Frontend> = Vec::new();
    let mut endpoint_count = 0;
    for service in services {
        endpoint_count += service.endpoints;
        all.extend(service.frontends.iter().cloned());
        warnings.extend(service.warnings.iter().cloned());
    }
    let frontends = resolve_conflicts(all, &mut warnings);
    let routes = routes::node_routes(snapshot, &ctx.node_name, &mut warnings);
    warnings.sort();
    warnings.dedup();
    PlanResult {
        state: DesiredState { frontends, routes },
        warnings,
        endpoints: endpoint_count,
    }
}

/// Sorts by (address, port, proto, scope) and keeps the first claim of
/// each; `all` is in Service name order, so the first Service wins.
fn resolve_conflicts(mut all: Vec<Frontend>, warnings: &mut Vec<ObjectWarning>) -> Vec<Frontend> {
    // Stable sort: among equal keys the first Service (map order) stays first.
    all.sort_by_key(|f| (f.address, f.port, f.proto, f.scope));
    let mut frontends: Vec<Frontend> = Vec::with_capacity(all.len());
    for frontend in all {
        match frontends.last() {
            Some(kept)
                if (kept.address, kept.port, kept.proto, kept.scope)
                    == (
                        frontend.address,
                        frontend.port,
                        frontend.proto,
                        frontend.scope,
                    ) =>
            {
                let loser = ObjectName::new(&frontend.service.namespace, &frontend.service.name);
                warnings.push(ObjectWarning::new(
                    ObjectKey::new(Kind::Service, loser),
                    format!(
                        "{} is already Service {}/{}'s; ignored here",
                        frontends::describe(&frontend),
                        kept.service.namespace,
                        kept.service.name
                    ),
                ));
            }
            _ => frontends.push(frontend),
        }
    }
    frontends
}

#[cfg(test)]
mod tests;
