//! Per local pod: which policies select it, whether that isolates it, and
//! the allow entries their rules give. Rules and peers are resolved once
//! and shared by every endpoint they apply to.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use weir_common::policy::identity;

use super::cluster::{Cluster, PodView};
use super::identity::{IdAllocator, PodIdentities};
use super::ipcache::CidrTable;
use super::peers::{Namespaces, Peer};
use super::plan::{Direction, DirectionPolicy, EndpointPolicy, PeerPort, RuleIndex, RuleRef};
use super::ports::{Port, PortMatch};
use super::rules::{ParsedPolicy, Rule};
use super::selector::Selector;
use crate::plan::Protocol;

/// Rule id used when no id is left (never in practice: 2^32 - 2 ids).
pub const RULE_ID_UNNAMED: u32 = u32::MAX;

#[derive(Default)]
struct ResolvedPeer {
    /// What the policy keys name: pod or CIDR identities.
    identities: Vec<u32>,
    /// The pod identities behind the peer: where a named egress port
    /// resolves.
    pod_identities: Vec<u32>,
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

/// Builds local endpoints' policies within one compile, caching what
/// endpoints share: the policies selecting an identity, resolved peers and
/// resolved rules.
pub struct Resolver<'c, 'a> {
    cluster: &'c Cluster<'a>,
    identities: &'c PodIdentities<'a>,
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
    pub fn new(
        cluster: &'c Cluster<'a>,
        identities: &'c PodIdentities<'a>,
        cidrs: &'c CidrTable,
        policies: &'c [ParsedPolicy],
        rule_ids: &'c mut IdAllocator<RuleRef>,
        rules: &'c mut BTreeMap<u32, RuleRef>,
    ) -> Self {
        Self {
            cluster,
            identities,
            cidrs,
            policies,
            rule_ids,
            rules,
            by_namespace: policies_by_namespace(policies),
            selecting: HashMap::new(),
            peers: HashMap::new(),
            resolved: HashMap::new(),
        }
    }

    /// One local pod's isolation and allow entries.
    pub fn endpoint(&mut self, pod: &PodView<'_>, id: u32) -> EndpointPolicy {
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
            emit_allows: false,
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
                    destinations.extend(&resolved.pod_identities);
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
                    pod_identities: ids,
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
                    pod_identities: inside,
                }
            }
            Peer::Nothing => ResolvedPeer::default(),
        };
        let resolved = Rc::new(resolved);
        self.peers.insert(peer, resolved.clone());
        resolved
    }

    fn pod_identities(&self, namespaces: &Namespaces, pods: &Selector) -> Vec<u32> {
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
