//! Objects → [`PolicyPlan`]: identities, the ipcache, and per local pod its
//! isolation and allow entries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::net::Ipv4Addr;
use std::rc::Rc;

use ipnetwork::Ipv4Network;
use weir_common::policy::identity;

use super::cluster::{Cluster, PodView};
use super::error::{PolicyError, Problem};
use super::identity::{IdAllocator, IdentityKey};
use super::ipcache::{self, CidrTable};
use super::peers::{Namespaces, Peer};
use super::plan::{
    Direction, DirectionPolicy, EndpointPolicy, PeerPort, PolicyPlan, RuleIndex, RuleRef,
};
use super::ports::{NamedPorts, Port, PortMatch};
use super::rules::{ParsedPolicy, Rule, parse_policy};
use crate::k8s::{Kind, ObjectKey, ObjectName, Snapshot};
use crate::plan::Protocol;

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
}

/// Rule id used when no id is left (never in practice: 2^32 - 2 ids).
pub const RULE_ID_UNNAMED: u32 = u32::MAX;

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
        let identities = Identities::assign(&cluster, &mut self.pod_ids, &mut errors);
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
            let mut resolver = Resolver {
                cluster: &cluster,
                identities: &identities,
                cidrs: &cidrs,
                policies: &policies,
                rule_ids: &mut self.rule_ids,
                rules: &mut rules,
                by_namespace: policies_by_namespace(&policies),
                selecting: HashMap::new(),
                peers: HashMap::new(),
                resolved: HashMap::new(),
            };
            for (pod, id) in cluster.pods.iter().zip(&identities.of_pod) {
                if let (true, Some(id)) = (pod.local, *id) {
                    endpoints.insert(pod.ip, resolver.endpoint(pod, id));
                }
            }
        }

        self.pod_ids.finish();
        self.cidr_ids.finish();
        self.rule_ids.finish();
        errors.sort();
        errors.dedup();
        let mut plan = PolicyPlan {
            revision: 0,
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

fn blocks(policy: &ParsedPolicy) -> impl Iterator<Item = &super::peers::CidrBlock> {
    [Direction::Ingress, Direction::Egress]
        .into_iter()
        .flat_map(|d| policy.rules(d).unwrap_or_default())
        .flat_map(|rule| rule.peers.iter().flatten())
        .filter_map(|peer| match peer {
            Peer::Block(block) => Some(block),
            _ => None,
        })
}

fn policies_by_namespace(policies: &[ParsedPolicy]) -> HashMap<&str, Vec<usize>> {
    let mut by_namespace: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, policy) in policies.iter().enumerate() {
        by_namespace
            .entry(policy.name.namespace.as_str())
            .or_default()
            .push(i);
    }
    by_namespace
}

/// Pod identities of one compile.
struct Identities<'a> {
    /// Parallel to `Cluster::pods`; `None` when no id was left.
    of_pod: Vec<Option<u32>>,
    /// Distinct identities per namespace.
    by_namespace: HashMap<&'a str, Vec<Labelled<'a>>>,
    /// Named ports of the pods of each identity, merged.
    named_ports: HashMap<u32, NamedPorts>,
    keys: BTreeMap<u32, IdentityKey>,
}

impl<'a> Identities<'a> {
    fn assign(
        cluster: &Cluster<'a>,
        ids: &mut IdAllocator<IdentityKey>,
        errors: &mut Vec<PolicyError>,
    ) -> Self {
        let mut this = Self {
            of_pod: Vec::with_capacity(cluster.pods.len()),
            by_namespace: HashMap::new(),
            named_ports: HashMap::new(),
            keys: BTreeMap::new(),
        };
        for pod in &cluster.pods {
            let key = IdentityKey {
                namespace: pod.name.namespace.clone(),
                labels: pod.labels.clone(),
            };
            let Some(id) = ids.id(&key) else {
                let object = ObjectKey::new(Kind::Pod, pod.name.clone());
                errors.push(PolicyError::new(
                    object,
                    "metadata.labels",
                    Problem::IdentitiesExhausted("label set"),
                ));
                this.of_pod.push(None);
                continue;
            };
            this.of_pod.push(Some(id));
            this.named_ports
                .entry(id)
                .or_default()
                .extend(&pod.named_ports);
            if this.keys.insert(id, key).is_none() {
                let namespace = pod.name.namespace.as_str();
                this.by_namespace
                    .entry(namespace)
                    .or_default()
                    .push(Labelled {
                        id,
                        labels: pod.labels,
                    });
            }
        }
        this
    }

    fn all(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }
}

/// A pod identity with its labels.
struct Labelled<'a> {
    id: u32,
    labels: &'a BTreeMap<String, String>,
}

/// A peer's identities, and the pod identities behind it: the destinations
/// a named egress port resolves on.
#[derive(Default)]
struct ResolvedPeer {
    identities: Vec<u32>,
    pods: Vec<u32>,
}

/// A rule with its peers and ports resolved; shared by every endpoint the
/// policy selects.
struct ResolvedRule {
    rule_id: u32,
    /// Identities to allow; `[ANY]` for every peer.
    peers: Vec<u32>,
    /// Pod identities a named egress port may resolve on.
    destinations: Vec<u32>,
    numeric: Vec<PortMatch>,
    named: Vec<(String, Protocol)>,
}

struct Resolver<'c, 'a> {
    cluster: &'c Cluster<'a>,
    identities: &'c Identities<'a>,
    cidrs: &'c CidrTable,
    policies: &'c [ParsedPolicy],
    rule_ids: &'c mut IdAllocator<RuleRef>,
    rules: &'c mut BTreeMap<u32, RuleRef>,
    by_namespace: HashMap<&'c str, Vec<usize>>,
    /// Local identity → indexes of the policies selecting it.
    selecting: HashMap<u32, Rc<[usize]>>,
    peers: HashMap<&'c Peer, Rc<ResolvedPeer>>,
    resolved: HashMap<(usize, Direction, u32), Rc<ResolvedRule>>,
}

impl<'c, 'a> Resolver<'c, 'a> {
    fn endpoint(&mut self, pod: &PodView<'_>, id: u32) -> EndpointPolicy {
        let selecting = self.selecting(pod, id);
        let audit = self
            .cluster
            .namespaces
            .get(pod.name.namespace.as_str())
            .is_some_and(|ns| ns.audit);
        EndpointPolicy {
            pod: pod.name.clone(),
            identity: id,
            audit,
            ingress: self.direction(pod, &selecting, Direction::Ingress),
            egress: self.direction(pod, &selecting, Direction::Egress),
        }
    }

    fn selecting(&mut self, pod: &PodView<'_>, id: u32) -> Rc<[usize]> {
        if let Some(found) = self.selecting.get(&id) {
            return found.clone();
        }
        let candidates = self.by_namespace.get(pod.name.namespace.as_str());
        let found: Rc<[usize]> = candidates
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| self.policies[i].selector.matches(pod.labels))
            .collect();
        self.selecting.insert(id, found.clone());
        found
    }

    fn direction(
        &mut self,
        pod: &PodView<'_>,
        selecting: &[usize],
        direction: Direction,
    ) -> DirectionPolicy {
        let mut out = DirectionPolicy::default();
        for &index in selecting {
            let Some(rules) = self.policies[index].rules(direction) else {
                continue;
            };
            if out.isolated_by.is_none() {
                out.isolated_by = Some(self.rule_id(index, direction, RuleIndex::Isolation));
            }
            for rule in rules {
                let resolved = self.resolve(index, direction, rule);
                let mut allow = |identity, port| {
                    out.allows
                        .entry(PeerPort { identity, port })
                        .or_insert(resolved.rule_id);
                };
                for &peer in &resolved.peers {
                    for &port in &resolved.numeric {
                        allow(peer, port);
                    }
                }
                for (name, protocol) in &resolved.named {
                    match direction {
                        // The destination is this pod: one number, or none.
                        Direction::Ingress => {
                            if let Some(number) = pod.named_ports.get(name, *protocol) {
                                for &peer in &resolved.peers {
                                    allow(peer, PortMatch::exact(*protocol, number));
                                }
                            }
                        }
                        // The destination is the peer: its own numbers.
                        Direction::Egress => {
                            for &peer in &resolved.destinations {
                                let Some(ports) = self.identities.named_ports.get(&peer) else {
                                    continue;
                                };
                                for number in ports.numbers(name, *protocol) {
                                    allow(peer, PortMatch::exact(*protocol, number));
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn rule_id(&mut self, policy: usize, direction: Direction, rule: RuleIndex) -> u32 {
        let reference = RuleRef {
            policy: self.policies[policy].name.clone(),
            direction,
            rule,
        };
        let id = self.rule_ids.id(&reference).unwrap_or(RULE_ID_UNNAMED);
        self.rules.insert(id, reference);
        id
    }

    fn resolve(&mut self, policy: usize, direction: Direction, rule: &'c Rule) -> Rc<ResolvedRule> {
        let key = (policy, direction, rule.index);
        if let Some(found) = self.resolved.get(&key) {
            return found.clone();
        }
        let rule_id = self.rule_id(policy, direction, RuleIndex::Rule(rule.index));
        let (peers, destinations) = match &rule.peers {
            None => (vec![identity::ANY], self.identities.all().collect()),
            Some(list) => {
                let mut peers = BTreeSet::new();
                let mut destinations = BTreeSet::new();
                for peer in list {
                    let resolved = self.peer(peer);
                    peers.extend(&resolved.identities);
                    destinations.extend(&resolved.pods);
                }
                (
                    peers.into_iter().collect(),
                    destinations.into_iter().collect(),
                )
            }
        };
        let mut numeric = Vec::new();
        let mut named = Vec::new();
        match &rule.ports {
            None => numeric.push(PortMatch::ALL),
            Some(ports) => {
                for port in ports {
                    match (&port.port, port.matches()) {
                        (Port::Named(name), _) => named.push((name.clone(), port.protocol)),
                        (_, Some(matches)) => numeric.extend(matches),
                        (_, None) => {}
                    }
                }
            }
        }
        let resolved = Rc::new(ResolvedRule {
            rule_id,
            peers,
            destinations,
            numeric,
            named,
        });
        self.resolved.insert(key, resolved.clone());
        resolved
    }

    fn peer(&mut self, peer: &'c Peer) -> Rc<ResolvedPeer> {
        if let Some(found) = self.peers.get(peer) {
            return found.clone();
        }
        let resolved = match peer {
            Peer::Pods { namespaces, pods } => {
                let ids = self.pod_identities(namespaces, pods);
                ResolvedPeer {
                    identities: ids.clone(),
                    pods: ids,
                }
            }
            Peer::Block(block) => {
                let pods = self.cluster.pods.iter().zip(&self.identities.of_pod);
                let mut inside: Vec<u32> = pods
                    .filter(|(pod, _)| block.contains(pod.ip))
                    .filter_map(|(_, id)| *id)
                    .collect();
                inside.sort_unstable();
                inside.dedup();
                ResolvedPeer {
                    identities: self.cidrs.allowed_by(block),
                    pods: inside,
                }
            }
            Peer::Nothing => ResolvedPeer::default(),
        };
        let resolved = Rc::new(resolved);
        self.peers.insert(peer, resolved.clone());
        resolved
    }

    fn pod_identities(
        &self,
        namespaces: &Namespaces,
        pods: &super::selector::Selector,
    ) -> Vec<u32> {
        let in_namespace = |ns: &str| {
            self.identities
                .by_namespace
                .get(ns)
                .into_iter()
                .flatten()
                .filter(|identity| pods.matches(identity.labels))
                .map(|identity| identity.id)
        };
        let mut ids: Vec<u32> = match namespaces {
            Namespaces::Own(ns) => in_namespace(ns).collect(),
            Namespaces::Matching(selector) => self
                .cluster
                .namespaces
                .iter()
                .filter(|(_, ns)| selector.matches(&ns.labels))
                .flat_map(|(name, _)| in_namespace(name))
                .collect(),
        };
        ids.sort_unstable();
        ids
    }
}
