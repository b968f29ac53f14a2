//! The ipcache: IPv4 prefix → (identity, CIDR identity), and the CIDR
//! identities of the ipBlock prefixes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use weir_common::policy::{IpcacheEntry, identity};

use super::identity::IdAllocator;
use super::peers::CidrBlock;

/// Every ipBlock prefix (CIDRs and excepts of all policies) with its
/// identity.
#[derive(Clone, Debug, Default)]
pub struct CidrTable {
    ids: BTreeMap<Ipv4Network, u32>,
    /// (prefix length, network) → identity, for longest-prefix lookups.
    by_prefix: HashMap<(u8, u32), u32>,
    /// Prefix lengths in use, longest first.
    lengths: Vec<u8>,
}

impl CidrTable {
    /// Prefixes the allocator has no identity left for are left out (and
    /// returned), so blocks naming them match less, never more.
    pub fn new(
        prefixes: BTreeSet<Ipv4Network>,
        ids: &mut IdAllocator<Ipv4Network>,
    ) -> (Self, Vec<Ipv4Network>) {
        let mut table = Self::default();
        let mut exhausted = Vec::new();
        for prefix in prefixes {
            let Some(id) = ids.id(&prefix) else {
                exhausted.push(prefix);
                continue;
            };
            table.ids.insert(prefix, id);
            table
                .by_prefix
                .insert((prefix.prefix(), u32::from(prefix.network())), id);
        }
        let lengths: BTreeSet<u8> = table.ids.keys().map(|p| p.prefix()).collect();
        table.lengths = lengths.into_iter().rev().collect();
        (table, exhausted)
    }

    /// The identity of the longest prefix holding `ip`.
    pub fn longest(&self, ip: Ipv4Addr) -> Option<u32> {
        let ip = u32::from(ip);
        self.lengths.iter().find_map(|&len| {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            self.by_prefix.get(&(len, ip & mask)).copied()
        })
    }

    /// The CIDR identities `block` allows.
    pub fn allowed_by(&self, block: &CidrBlock) -> Vec<u32> {
        self.ids
            .range(block.cidr..)
            .take_while(|(prefix, _)| prefix.is_subnet_of(block.cidr))
            .filter(|(prefix, _)| block.allows_prefix(**prefix))
            .map(|(_, id)| *id)
            .collect()
    }

    pub fn identities(&self) -> impl Iterator<Item = (u32, Ipv4Network)> + '_ {
        self.ids.iter().map(|(prefix, id)| (*id, *prefix))
    }
}

/// `0.0.0.0/0`: the ipcache never misses.
pub const EVERYTHING: Ipv4Network = match Ipv4Network::new_checked(Ipv4Addr::UNSPECIFIED, 0) {
    Some(network) => network,
    None => panic!("0.0.0.0/0 is a valid prefix"),
};

/// The ipcache for the given addresses. Earlier kinds win a shared
/// address: this node, then other nodes, then pods.
pub fn build(
    cidrs: &CidrTable,
    host_ips: &[Ipv4Addr],
    remote_node_ips: &[Ipv4Addr],
    pods: impl IntoIterator<Item = (Ipv4Addr, u32)>,
) -> BTreeMap<Ipv4Network, IpcacheEntry> {
    let mut cache = BTreeMap::new();
    let world = entry(identity::WORLD, cidrs.ids.get(&EVERYTHING).copied());
    cache.insert(EVERYTHING, world);
    for (prefix, id) in &cidrs.ids {
        cache.insert(*prefix, entry(identity::WORLD, Some(*id)));
    }
    let hosts = host_ips.iter().map(|ip| (*ip, identity::HOST));
    let remotes = remote_node_ips
        .iter()
        .map(|ip| (*ip, identity::REMOTE_NODE));
    let mut taken = BTreeSet::new();
    for (ip, id) in hosts.chain(remotes).chain(pods) {
        if taken.insert(ip) {
            cache.insert(Ipv4Network::from(ip), entry(id, cidrs.longest(ip)));
        }
    }
    cache
}

fn entry(identity: u32, cidr_identity: Option<u32>) -> IpcacheEntry {
    IpcacheEntry {
        identity,
        cidr_identity: cidr_identity.unwrap_or(identity::ANY),
    }
}
