//! Incremental planning, as kube-proxy's change tracker and Cilium's
//! service cache do it: keep each Service's share of the plan and recompute
//! only the Services whose inputs changed since the last plan.
//!
//! A Service's inputs are its own object, the EndpointSlices labelled with
//! its name, and the Pods its selector matches (with their CNI address
//! overrides). Anything every Service reads — the Nodes (known nodes,
//! NodePort addresses) and the plan context — invalidates them all.
//! Merging the shares (sorting, conflicts, routes) is redone every time: it
//! is cheap next to endpoint selection and keeps the result identical to
//! [`compute_plan`](super::compute_plan). A new input to a Service's share
//! needs a place in [`dirty_services`] (and in the property test's object
//! variants).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use tracing::debug;

use super::{PlanContext, PlanResult, ServicePlan, finish, node_ips, plan_service};
use crate::endpoints::{EndpointSources, SliceIndex};
use crate::k8s::{ObjectName, Snapshot, labels};
use crate::plan::Algorithm;

/// Beyond this many changed Pods, matching them against every selector
/// costs more than recomputing everything.
const POD_CHANGES_MAX: usize = 256;

/// The plan context minus the pod overrides (diffed per pod instead).
#[derive(Clone, Debug, PartialEq)]
struct Settings {
    node_name: String,
    default_algorithm: Algorithm,
    nodeport_addresses: Option<Vec<Ipv4Addr>>,
}

impl Settings {
    fn of(ctx: &PlanContext) -> Self {
        Self {
            node_name: ctx.node_name.clone(),
            default_algorithm: ctx.default_algorithm,
            nodeport_addresses: ctx.nodeport_addresses.clone(),
        }
    }
}

/// What the last plan was computed from, besides the snapshot.
struct Last {
    settings: Settings,
    overrides: HashMap<ObjectName, Ipv4Addr>,
}

/// Which Services need their share recomputed.
#[derive(Debug, PartialEq, Eq)]
enum Dirty {
    All,
    Some(BTreeSet<ObjectName>),
}

/// Keeps every Service's share of the last plan; see the module docs.
#[derive(Default)]
pub struct IncrementalPlanner {
    last: Option<Last>,
    services: BTreeMap<ObjectName, ServicePlan>,
}

impl IncrementalPlanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// The plan for `current`; equal to `compute_plan(current, ctx)`.
    /// `previous` must be the snapshot of the last call (`None` recomputes
    /// everything).
    pub fn plan(
        &mut self,
        previous: Option<&Snapshot>,
        current: &Snapshot,
        ctx: &PlanContext,
    ) -> PlanResult {
        let settings = Settings::of(ctx);
        let dirty = match (&self.last, previous) {
            (Some(last), Some(previous)) if last.settings == settings => dirty_services(
                previous,
                current,
                &changed_overrides(&last.overrides, &ctx.pod_ip_overrides),
            ),
            _ => Dirty::All,
        };
        let mut node_warnings = Vec::new();
        let node_ips = node_ips(current, ctx, &mut node_warnings);
        match &dirty {
            Dirty::All => {
                let sources = EndpointSources::new(current);
                self.services = current
                    .services
                    .iter()
                    .map(|(name, service)| {
                        let share = plan_service(name, service, &sources, ctx, &node_ips);
                        (name.clone(), share)
                    })
                    .collect();
            }
            Dirty::Some(names) if names.is_empty() => {}
            Dirty::Some(names) => {
                let sources = EndpointSources::new(current);
                for name in names {
                    match current.services.get(name) {
                        Some(service) => {
                            let share = plan_service(name, service, &sources, ctx, &node_ips);
                            self.services.insert(name.clone(), share);
                        }
                        None => {
                            self.services.remove(name);
                        }
                    }
                }
            }
        }
        debug!(
            recomputed = match &dirty {
                Dirty::All => current.services.len(),
                Dirty::Some(names) => names.len(),
            },
            services = self.services.len(),
            "plan: services recomputed"
        );
        self.last = Some(Last {
            settings,
            overrides: ctx.pod_ip_overrides.clone(),
        });
        finish(current, ctx, self.services.values(), node_warnings)
    }
}

/// Pods whose CNI address override came, went or changed.
fn changed_overrides(
    old: &HashMap<ObjectName, Ipv4Addr>,
    new: &HashMap<ObjectName, Ipv4Addr>,
) -> Vec<ObjectName> {
    let mut changed: Vec<ObjectName> = new
        .iter()
        .filter(|(name, ip)| old.get(*name) != Some(*ip))
        .map(|(name, _)| name.clone())
        .collect();
    changed.extend(old.keys().filter(|n| !new.contains_key(*n)).cloned());
    changed
}

/// The Services whose share may differ between `old` and `new`.
fn dirty_services(old: &Snapshot, new: &Snapshot, override_pods: &[ObjectName]) -> Dirty {
    if changed(&old.nodes, &new.nodes).next().is_some() {
        return Dirty::All;
    }
    let mut dirty: BTreeSet<ObjectName> = changed(&old.services, &new.services)
        .map(|(name, _, _)| name.clone())
        .collect();
    for (name, before, after) in changed(&old.endpoint_slices, &new.endpoint_slices) {
        for slice in [before, after].into_iter().flatten() {
            if let Some(service) = SliceIndex::service_of(slice) {
                dirty.insert(ObjectName::new(&name.namespace, service));
            }
        }
    }
    // Pods: their labels before and after, by namespace.
    let mut pods: Vec<(&str, Option<&Pod>)> = Vec::new();
    for (name, before, after) in changed(&old.pods, &new.pods) {
        pods.extend([before, after].map(|p| (name.namespace.as_str(), p)));
    }
    for name in override_pods {
        let pod = new.pods.get(name).map(Arc::as_ref);
        pods.push((name.namespace.as_str(), pod));
    }
    if pods.len() > 2 * POD_CHANGES_MAX {
        return Dirty::All;
    }
    if !pods.is_empty() {
        for (name, service) in &new.services {
            let selector = service
                .spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .filter(|s| !s.is_empty());
            let Some(selector) = selector else { continue };
            let selected = pods.iter().any(|(namespace, pod)| {
                *namespace == name.namespace
                    && pod.is_some_and(|p| labels::matches(selector, p.metadata.labels.as_ref()))
            });
            if selected {
                dirty.insert(name.clone());
            }
        }
    }
    Dirty::Some(dirty)
}

/// Entries that differ between two maps of one kind: (name, old, new).
/// Unchanged objects usually share their `Arc`, so most comparisons are a
/// pointer check.
fn changed<'a, T: PartialEq>(
    old: &'a BTreeMap<ObjectName, Arc<T>>,
    new: &'a BTreeMap<ObjectName, Arc<T>>,
) -> impl Iterator<Item = (&'a ObjectName, Option<&'a T>, Option<&'a T>)> {
    let mut old = old.iter().peekable();
    let mut new = new.iter().peekable();
    std::iter::from_fn(move || {
        loop {
            let step = match (old.peek(), new.peek()) {
                (None, None) => return None,
                (Some((o, _)), Some((n, _))) => o.cmp(n),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
            };
            match step {
                std::cmp::Ordering::Less => {
                    let (name, gone) = old.next()?;
                    return Some((name, Some(gone.as_ref()), None));
                }
                std::cmp::Ordering::Greater => {
                    let (name, came) = new.next()?;
                    return Some((name, None, Some(came.as_ref())));
                }
                std::cmp::Ordering::Equal => {
                    let (name, before) = old.next()?;
                    let (_, after) = new.next()?;
                    if !Arc::ptr_eq(before, after) && before != after {
                        return Some((name, Some(before.as_ref()), Some(after.as_ref())));
                    }
                }
            }
        }
    })
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;
