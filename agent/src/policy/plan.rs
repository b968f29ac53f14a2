//! The compiler's output: plain data a writer diffs into the policy maps
//! ([`super::diff`]), plus the tables `weirctl` needs to name identities
//! and rules.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use weir_common::policy::{
    self, IpcacheEntry, IpcacheKey, POLICY_EGRESS, POLICY_INGRESS, POLICY_PREFIX_ANY_PORT,
    POLICY_PREFIX_ANY_PROTO, PolicyEndpoint, PolicyEntry, PolicyKey, ep_policy_flags,
};

use super::error::PolicyError;
use super::identity::IdentityKey;
use super::ports::PortMatch;
use crate::k8s::ObjectName;

/// Everything one node's policy maps should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyPlan {
    /// Bumped whenever anything below that the datapath reads changes;
    /// written last, so conntrack re-checks flows against the new state.
    pub revision: u32,
    /// Node-wide audit mode.
    pub audit_all: bool,
    /// Pod identities in use and what they stand for.
    pub identities: BTreeMap<u32, IdentityKey>,
    /// CIDR identities in use and their prefix.
    pub cidr_identities: BTreeMap<u32, Ipv4Network>,
    pub ipcache: BTreeMap<Ipv4Network, IpcacheEntry>,
    /// Local pods by IP.
    pub endpoints: BTreeMap<Ipv4Addr, EndpointPolicy>,
    /// Every rule id the maps use.
    pub rules: BTreeMap<u32, RuleRef>,
    /// Every pod of the cluster with an address (local or not), to name
    /// peers in events.
    pub pods: BTreeMap<Ipv4Addr, ObjectName>,
    /// Sorted.
    pub errors: Vec<PolicyError>,
}

/// One local pod's policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointPolicy {
    pub pod: ObjectName,
    pub identity: u32,
    /// Its namespace has `weir.io/policy-audit: "true"`.
    pub audit: bool,
    /// Every allowed new flow emits an event (`weirctl monitor --pod`).
    pub emit_allows: bool,
    pub ingress: DirectionPolicy,
    pub egress: DirectionPolicy,
}

/// What one endpoint allows in one direction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DirectionPolicy {
    /// The isolation rule of the first policy (by namespace/name) that
    /// isolates the pod in this direction; `None`: not isolated.
    pub isolated_by: Option<u32>,
    /// Allowed (peer, port) → the first rule allowing it.
    pub allows: BTreeMap<PeerPort, u32>,
}

/// One policy-map match within an endpoint and direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerPort {
    /// Peer identity, `identity::ANY` for every peer.
    pub identity: u32,
    pub port: PortMatch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub const fn abi(self) -> u8 {
        match self {
            Self::Ingress => POLICY_INGRESS,
            Self::Egress => POLICY_EGRESS,
        }
    }

    /// The field name in a NetworkPolicy spec.
    pub const fn field(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

/// What a rule id stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleRef {
    pub policy: ObjectName,
    pub direction: Direction,
    pub rule: RuleIndex,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleIndex {
    /// The policy isolates the pod in this direction (named by drops).
    Isolation,
    /// `spec.ingress[i]` / `spec.egress[i]` (named by allows).
    Rule(u32),
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let direction = self.direction.field();
        match self.rule {
            RuleIndex::Isolation => write!(f, "{} {direction} isolation", self.policy),
            RuleIndex::Rule(i) => write!(f, "{} {direction}[{i}]", self.policy),
        }
    }
}

/// Entry counts and an upper bound of the kernel memory they take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanStats {
    pub identities: usize,
    pub cidr_identities: usize,
    pub ipcache_entries: usize,
    pub endpoints: usize,
    pub policy_entries: usize,
    pub rules: usize,
}

/// Kernel bytes per entry, upper bounds: an LPM trie entry is a
/// `lpm_trie_node` (40 bytes + key data + value, kmalloc-rounded to 64)
/// plus at most one intermediate node; a `BPF_F_NO_PREALLOC` hash element
/// is about 96 bytes with a small key and value.
pub const LPM_ENTRY_BYTES: usize = 128;
pub const HASH_ENTRY_BYTES: usize = 96;

impl PlanStats {
    pub fn map_bytes(&self) -> usize {
        (self.ipcache_entries + self.policy_entries) * LPM_ENTRY_BYTES
            + self.endpoints * HASH_ENTRY_BYTES
    }

    /// The maps this plan does not fit in: (map name, entries, capacity).
    /// A writer refuses such a plan rather than half-write it.
    pub fn over_capacity(&self, capacities: &Capacities) -> Vec<(&'static str, usize, u32)> {
        [
            (policy::IPCACHE, self.ipcache_entries, capacities.ipcache),
            (policy::POLICY, self.policy_entries, capacities.policy),
            (
                policy::POLICY_ENDPOINTS,
                self.endpoints,
                capacities.endpoints,
            ),
        ]
        .into_iter()
        .filter(|(_, entries, capacity)| *entries > *capacity as usize)
        .collect()
    }
}

/// `max_entries` of the policy maps, as loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    pub ipcache: u32,
    pub policy: u32,
    pub endpoints: u32,
}

impl Default for Capacities {
    /// The object's defaults.
    fn default() -> Self {
        Self {
            ipcache: policy::IPCACHE_ENTRIES,
            policy: policy::POLICY_ENTRIES,
            endpoints: policy::POLICY_ENDPOINTS_ENTRIES,
        }
    }
}

impl PolicyPlan {
    pub fn stats(&self) -> PlanStats {
        PlanStats {
            identities: self.identities.len(),
            cidr_identities: self.cidr_identities.len(),
            ipcache_entries: self.ipcache.len(),
            endpoints: self.endpoints.len(),
            policy_entries: self.policy_entry_count(),
            rules: self.rules.len(),
        }
    }

    pub fn policy_entry_count(&self) -> usize {
        self.endpoints
            .values()
            .map(|e| e.ingress.allows.len() + e.egress.allows.len())
            .sum()
    }

    /// `weir_ipcache4_v1` as key/value pairs.
    pub fn ipcache_entries(&self) -> impl Iterator<Item = (IpcacheKey, IpcacheEntry)> + '_ {
        self.ipcache
            .iter()
            .map(|(prefix, entry)| (ipcache_key(*prefix), *entry))
    }

    /// `weir_policy_ep_v1` as key/value pairs.
    pub fn endpoint_entries(&self) -> impl Iterator<Item = (u32, PolicyEndpoint)> + '_ {
        self.endpoints.iter().map(|(ip, e)| (ip_key(*ip), e.abi()))
    }

    /// `weir_policy_v1` as key/value pairs.
    pub fn policy_entries(&self) -> impl Iterator<Item = (PolicyKey, PolicyEntry)> + '_ {
        self.endpoints.iter().flat_map(|(ip, e)| {
            [
                (Direction::Ingress, &e.ingress),
                (Direction::Egress, &e.egress),
            ]
            .into_iter()
            .flat_map(move |(direction, policy)| {
                policy
                    .allows
                    .iter()
                    .map(move |(peer, rule)| policy_entry(*ip, direction, *peer, *rule))
            })
        })
    }
}

impl EndpointPolicy {
    pub fn abi(&self) -> PolicyEndpoint {
        let mut flags = 0;
        if self.audit {
            flags |= ep_policy_flags::AUDIT;
        }
        if self.emit_allows {
            flags |= ep_policy_flags::EMIT_ALLOWS;
        }
        if !self.ingress.allows.is_empty() {
            flags |= ep_policy_flags::INGRESS_HAS_RULES;
        }
        if !self.egress.allows.is_empty() {
            flags |= ep_policy_flags::EGRESS_HAS_RULES;
        }
        PolicyEndpoint {
            identity: self.identity,
            ingress_isolated_by: self.ingress.isolated_by.unwrap_or(0),
            egress_isolated_by: self.egress.isolated_by.unwrap_or(0),
            flags,
            pad: 0,
        }
    }

    pub fn direction(&self, direction: Direction) -> &DirectionPolicy {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// An address as the datapath holds it (network byte order in a `u32`).
pub fn ip_key(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

pub fn ipcache_key(prefix: Ipv4Network) -> IpcacheKey {
    IpcacheKey {
        prefixlen: u32::from(prefix.prefix()),
        addr: ip_key(prefix.network()),
    }
}

pub fn policy_entry(
    endpoint: Ipv4Addr,
    direction: Direction,
    peer: PeerPort,
    rule_id: u32,
) -> (PolicyKey, PolicyEntry) {
    let PortMatch {
        proto,
        port,
        port_bits,
    } = peer.port;
    let prefixlen = if proto == 0 {
        POLICY_PREFIX_ANY_PROTO
    } else {
        POLICY_PREFIX_ANY_PORT + u32::from(port_bits)
    };
    let key = PolicyKey {
        prefixlen,
        endpoint: ip_key(endpoint),
        identity: peer.identity,
        direction: direction.abi(),
        proto,
        dport: port.to_be_bytes(),
    };
    let entry = PolicyEntry { rule_id, flags: 0 };
    (key, entry)
}
