//! The main loop's NetworkPolicy step: compile the objects into a plan
//! for this node, refuse a plan the maps cannot hold, write it, and
//! publish it for event naming. Runs on every sync, before the service
//! apply, so a new backend is policed before any Service sends it traffic
//! and a registration's answer covers its pod's policy.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::events::SharedNames;
use super::seams::{Datapath, PolicyApplyStats, PolicyCounters, PolicySettings};
use crate::k8s::{ObjectName, Snapshot};
use crate::metrics::{Metrics, PolicyRecord};
use crate::policy::{PolicyCompiler, PolicyContext, PolicyPlan, RuleIndex};

/// How a policy step ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyOutcome {
    Applied(PolicyApplyStats),
    /// The plan does not fit the maps; the previous one stays in force.
    Refused(String),
    /// Writing failed; the next sync retries.
    Failed(String),
}

impl PolicyOutcome {
    /// Why a pod waiting for this step cannot be told it is policed.
    pub fn failure(&self) -> Option<&str> {
        match self {
            Self::Applied(_) => None,
            Self::Refused(m) | Self::Failed(m) => Some(m),
        }
    }
}

/// Inputs of one step besides the objects.
#[derive(Clone, Debug, Default)]
pub struct PolicyInputs {
    pub node_name: String,
    /// CNI-registered pod addresses.
    pub pod_ips: HashMap<ObjectName, Ipv4Addr>,
    /// Pods a `weirctl monitor --pod` watches.
    pub emit_allows: HashSet<ObjectName>,
}

pub struct PolicySync {
    compiler: PolicyCompiler,
    settings: PolicySettings,
    host_addresses: Vec<Ipv4Addr>,
    names: SharedNames,
    /// The plan the maps hold.
    written: Option<Arc<PolicyPlan>>,
    /// Compile errors already logged (each is logged once while it lasts).
    logged_errors: BTreeSet<String>,
}

impl PolicySync {
    pub fn new(settings: PolicySettings) -> Self {
        Self {
            compiler: PolicyCompiler::new(),
            settings,
            host_addresses: Vec::new(),
            names: SharedNames::default(),
            written: None,
            logged_errors: BTreeSet::new(),
        }
    }

    /// Continues after the revision pinned in the maps (a restart).
    pub fn seed(&mut self, pinned_revision: u32) {
        self.compiler = PolicyCompiler::starting_at(pinned_revision);
    }

    pub fn settings(&self) -> &PolicySettings {
        &self.settings
    }

    /// Addresses of this node's netns (the veth gateways among them):
    /// traffic from them is the node's own.
    pub fn set_host_addresses(&mut self, addresses: Vec<Ipv4Addr>) {
        if addresses != self.host_addresses {
            debug!(addresses = ?addresses, "host addresses for policy");
            self.host_addresses = addresses;
        }
    }

    pub fn names(&self) -> SharedNames {
        self.names.clone()
    }

    /// One compile and write.
    pub fn sync<D: Datapath>(
        &mut self,
        datapath: &mut D,
        snapshot: &Snapshot,
        inputs: PolicyInputs,
        metrics: &Metrics,
    ) -> PolicyOutcome {
        let ctx = PolicyContext {
            node_name: inputs.node_name,
            pod_ip_overrides: inputs.pod_ips,
            host_addresses: self.host_addresses.clone(),
            audit_all: self.settings.audit_all,
            emit_allows: inputs.emit_allows,
        };
        let started = Instant::now();
        let plan = self.compiler.compile(snapshot, &ctx);
        let compiled = started.elapsed();
        self.log_new_errors(&plan);
        let stats = plan.stats();
        let mut record = PolicyRecord {
            outcome: "ok",
            compile: compiled,
            apply: Duration::ZERO,
            stats,
            revision: plan.revision,
            compile_errors: plan.errors.len(),
        };
        let over = stats.over_capacity(&datapath.policy_capacities());
        if !over.is_empty() {
            let maps: Vec<String> = over
                .iter()
                .map(|(map, entries, capacity)| format!("{map} needs {entries} of {capacity}"))
                .collect();
            let message = format!(
                "the policy plan does not fit the maps ({}); the previous policy stays in force",
                maps.join(", ")
            );
            error!(revision = plan.revision, maps = ?maps, "policy plan refused");
            record.outcome = "refused";
            metrics.record_policy(&record);
            return PolicyOutcome::Refused(message);
        }
        let unchanged = self
            .written
            .as_deref()
            .is_some_and(|w| w.revision == plan.revision && *w == plan);
        let applied = if unchanged {
            // Nothing the maps hold changed (the common sync: a Service edit).
            Ok(PolicyApplyStats {
                map_writes: 0,
                revision: plan.revision,
            })
        } else {
            datapath.apply_policy(&plan)
        };
        record.apply = started.elapsed() - compiled;
        match applied {
            Ok(applied) => {
                if !unchanged {
                    info!(
                        revision = applied.revision,
                        endpoints = stats.endpoints,
                        identities = stats.identities,
                        cidr_identities = stats.cidr_identities,
                        ipcache_entries = stats.ipcache_entries,
                        policy_entries = stats.policy_entries,
                        map_writes = applied.map_writes,
                        compile_errors = plan.errors.len(),
                        compile_ms = compiled.as_secs_f64() * 1e3,
                        apply_ms = record.apply.as_secs_f64() * 1e3,
                        "policy programmed"
                    );
                    let plan = Arc::new(plan);
                    self.names.publish(plan.clone());
                    self.written = Some(plan);
                }
                metrics.record_policy(&record);
                PolicyOutcome::Applied(applied)
            }
            Err(e) => {
                let message = format!("programming policy revision {}: {e:#}", plan.revision);
                error!(error = %message, "policy write failed; retrying");
                record.outcome = "error";
                metrics.record_policy(&record);
                PolicyOutcome::Failed(message)
            }
        }
    }

    fn log_new_errors(&mut self, plan: &PolicyPlan) {
        let now: BTreeSet<String> = plan.errors.iter().map(ToString::to_string).collect();
        for e in plan.errors.iter() {
            let text = e.to_string();
            if !self.logged_errors.contains(&text) {
                warn!(object = %e.object, field = %e.path, error = %text, "NetworkPolicy not fully honoured");
            }
        }
        self.logged_errors = now;
    }

    /// Drops by (policy, direction) from the datapath's per rule id
    /// counters; ids no plan names any more are left out.
    pub fn drops_by_policy(&self, counters: &PolicyCounters) -> BTreeMap<(String, String), u64> {
        let names = self.names.get();
        let mut out: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (id, count) in &counters.drops {
            if let Some(rule) = names.rule_ref(*id)
                && rule.rule == RuleIndex::Isolation
            {
                *out.entry((rule.policy.to_string(), rule.direction.field().to_string()))
                    .or_default() += count;
            }
        }
        out
    }
}
