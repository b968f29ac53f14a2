//! Objects → [`PolicyPlan`]: reads the cluster, parses the policies,
//! assigns identities, builds the ipcache, then each local pod's entries
//! ([`super::endpoints`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use weir_common::policy::identity;

use super::cluster::Cluster;
use super::endpoints::{RULE_ID_UNNAMED, Resolver};
use super::error::{PolicyError, Problem};
use super::identity::{IdAllocator, IdentityKey, PodIdentities};
use super::ipcache::{self, CidrTable};
use super::peers::{CidrBlock, Peer};
use super::plan::{Direction, PolicyPlan, RuleRef};
use super::rules::{ParsedPolicy, parse_policy};
use crate::k8s::{Kind, ObjectKey, ObjectName, Snapshot};

/// What the compile needs besides the objects.
#[derive(Clone, Debug, Default)]
pub struct PolicyContext {
    /// This node: its pods are the endpoints, its addresses the host.
    pub node_name: String,
    /// Pod addresses from CNI registrations on this node; they win over
    /// `status.podIP` (a new pod is policed before the API knows its IP).
    pub pod_ip_overrides: HashMap<ObjectName, Ipv4Addr>,
    /// More addresses of this node than its Node object lists, e.g. the
    /// host side of the pod veths: traffic from them is the node's own.
    pub host_addresses: Vec<Ipv4Addr>,
    /// Audit mode for the whole node.
    pub audit_all: bool,
    /// Local pods whose allowed new flows all emit an event (someone runs
    /// `weirctl monitor --pod` on them).
    pub emit_allows: HashSet<ObjectName>,
}

/// Compiles snapshots into plans, keeping identity and rule ids stable from
/// one compile to the next, and bumping the revision when the maps change.
#[derive(Clone, Debug)]
pub struct PolicyCompiler {
    pod_ids: IdAllocator<IdentityKey>,
    cidr_ids: IdAllocator<Ipv4Network>,
    rule_ids: IdAllocator<RuleRef>,
    revision: u32,
    fingerprint: Option<u64>,
}

impl Default for PolicyCompiler {
    fn default() -> Self {
        Self::starting_at(0)
    }
}

impl PolicyCompiler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Continues after `revision` (the one pinned in the maps, after a
    /// restart): the first plan gets a newer one.
    pub fn starting_at(revision: u32) -> Self {
        Self {
            pod_ids: IdAllocator::new(identity::POD_MIN..=identity::CIDR_MIN - 1, true),
            cidr_ids: IdAllocator::new(identity::CIDR_MIN..=identity::MAX, true),
            rule_ids: IdAllocator::new(1..=RULE_ID_UNNAMED - 1, false),
            revision,
            fingerprint: None,
        }
    }

    pub fn compile(&mut self, snapshot: &Snapshot, ctx: &PolicyContext) -> PolicyPlan {
        self.pod_ids.begin();
        self.cidr_ids.begin();
        self.rule_ids.begin();
        let mut errors = Vec::new();

        let cluster = Cluster::read(snapshot, &ctx.node_name, &ctx.pod_ip_overrides, &mut errors);
        let policies: Vec<ParsedPolicy> = snapshot
            .network_policies
            .iter()
            .filter_map(|(name, policy)| parse_policy(name, policy, &mut errors))
            .collect();
        let identities = PodIdentities::assign(&cluster, &mut self.pod_ids, &mut errors);
        let cidrs = self.cidr_table(&policies, &mut errors);

        let mut host_ips = cluster.host_ips.clone();
        host_ips.extend(&ctx.host_addresses);
        let pods = cluster
            .pods
            .iter()
            .zip(&identities.of_pod)
            .filter_map(|(pod, id)| Some((pod.ip, (*id)?)));
        let ipcache = ipcache::build(&cidrs, &host_ips, &cluster.remote_node_ips, pods);

        let mut endpoints = BTreeMap::new();
        let mut rules = BTreeMap::new();
        {
            let mut resolver = Resolver::new(
                &cluster,
                &identities,
                &cidrs,
                &policies,
                &mut self.rule_ids,
                &mut rules,
            );
            for (pod, id) in cluster.pods.iter().zip(&identities.of_pod) {
                if let (true, Some(id)) = (pod.local, *id) {
                    let mut endpoint = resolver.endpoint(pod, id);
                    endpoint.emit_allows = ctx.emit_allows.contains(pod.name);
                    endpoints.insert(pod.ip, endpoint);
                }
            }
        }

        self.pod_ids.finish();
        self.cidr_ids.finish();
        self.rule_ids.finish();
        errors.sort();
        errors.dedup();
        let pods = cluster
            .pods
            .iter()
            .map(|p| (p.ip, p.name.clone()))
            .collect();
        let mut plan = PolicyPlan {
            revision: 0,
            pods,
            audit_all: ctx.audit_all,
            identities: identities.keys,
            cidr_identities: cidrs.identities().collect(),
            ipcache,
            endpoints,
            rules,
            errors,
        };
        plan.revision = self.next_revision(&plan);
        plan
    }

    /// Every ipBlock prefix of every policy gets a CIDR identity.
    fn cidr_table(
        &mut self,
        policies: &[ParsedPolicy],
        errors: &mut Vec<PolicyError>,
    ) -> CidrTable {
        let mut first_user: BTreeMap<Ipv4Network, &ObjectName> = BTreeMap::new();
        for policy in policies {
            for block in blocks(policy) {
                for prefix in block.prefixes() {
                    first_user.entry(prefix).or_insert(&policy.name);
                }
            }
        }
        let (table, exhausted) =
            CidrTable::new(first_user.keys().copied().collect(), &mut self.cidr_ids);
        for prefix in exhausted {
            let key = ObjectKey::new(Kind::NetworkPolicy, first_user[&prefix].clone());
            errors.push(PolicyError::new(
                key,
                format!("ipBlock {prefix}"),
                Problem::IdentitiesExhausted("prefix"),
            ));
        }
        table
    }

    /// A new revision when what the datapath reads changed (and on the
    /// first compile). Never 0, the revision of flows admitted before any.
    fn next_revision(&mut self, plan: &PolicyPlan) -> u32 {
        let hasher = foldhash::quality::FixedState::with_seed(0x5745_4952);
        let fingerprint = hasher.hash_one((&plan.ipcache, &plan.endpoints, plan.audit_all));
        if self.fingerprint != Some(fingerprint) {
            self.fingerprint = Some(fingerprint);
            self.revision = self.revision.wrapping_add(1).max(1);
        }
        self.revision
    }
}

fn blocks(policy: &ParsedPolicy) -> impl Iterator<Item = &CidrBlock> {
    [Direction::Ingress, Direction::Egress]
        .into_iter()
        .flat_map(|d| policy.rules(d).unwrap_or_default())
        .flat_map(|rule| rule.peers.iter().flatten())
        .filter_map(|peer| match peer {
            Peer::Block(block) => Some(block),
            _ => None,
        })
}
