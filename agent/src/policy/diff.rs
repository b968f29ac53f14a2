//! The map operations that turn one plan into the next.
//!
//! A writer applies them in this order, so a reader never sees an
//! endpoint isolated before its allow entries exist, nor an entry whose
//! identity the ipcache does not hand out yet:
//!
//! 1. ipcache upserts, 2. policy upserts, 3. endpoint upserts,
//! 4. endpoint, policy and ipcache deletes, 5. the revision.
//!
//! Writing the revision last makes conntrack re-check every flow against
//! the finished state.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use weir_common::policy::{IpcacheEntry, IpcacheKey, PolicyEndpoint, PolicyEntry, PolicyKey};

use super::plan::{
    Direction, DirectionPolicy, EndpointPolicy, PolicyPlan, ip_key, ipcache_key, policy_entry,
};

/// Upserts and deletes for one map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapChanges<K, V> {
    pub upserts: Vec<(K, V)>,
    pub deletes: Vec<K>,
}

impl<K, V> Default for MapChanges<K, V> {
    fn default() -> Self {
        Self {
            upserts: Vec::new(),
            deletes: Vec::new(),
        }
    }
}

impl<K, V> MapChanges<K, V> {
    pub fn len(&self) -> usize {
        self.upserts.len() + self.deletes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyDiff {
    pub ipcache: MapChanges<IpcacheKey, IpcacheEntry>,
    pub policy: MapChanges<PolicyKey, PolicyEntry>,
    pub endpoints: MapChanges<u32, PolicyEndpoint>,
    /// The revision to write last, when it changed.
    pub revision: Option<u32>,
}

impl PolicyDiff {
    /// The map operations, not counting the revision.
    pub fn len(&self) -> usize {
        self.ipcache.len() + self.policy.len() + self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.revision.is_none()
    }
}

/// What turns the maps holding `old` into maps holding `new`. Pass
/// `PolicyPlan::default()` as `old` for empty maps.
pub fn diff(old: &PolicyPlan, new: &PolicyPlan) -> PolicyDiff {
    let mut out = PolicyDiff {
        revision: (old.revision != new.revision).then_some(new.revision),
        ..PolicyDiff::default()
    };
    merge(&old.ipcache, &new.ipcache, |prefix, change| match change {
        Change::Upsert(entry) => out.ipcache.upserts.push((ipcache_key(*prefix), *entry)),
        Change::Delete(_) => out.ipcache.deletes.push(ipcache_key(*prefix)),
        Change::Update(_, entry) => out.ipcache.upserts.push((ipcache_key(*prefix), *entry)),
    });
    merge(&old.endpoints, &new.endpoints, |ip, change| {
        let empty = EndpointPolicy::default();
        let (before, after) = match change {
            Change::Upsert(e) => (&empty, e),
            Change::Delete(e) => (e, &empty),
            Change::Update(b, a) => (b, a),
        };
        for direction in [Direction::Ingress, Direction::Egress] {
            let (b, a) = (before.direction(direction), after.direction(direction));
            allows(*ip, direction, b, a, &mut out.policy);
        }
        match change {
            Change::Delete(_) => out.endpoints.deletes.push(ip_key(*ip)),
            Change::Upsert(e) | Change::Update(_, e) => {
                if !matches!(change, Change::Update(b, _) if b.abi() == e.abi()) {
                    out.endpoints.upserts.push((ip_key(*ip), e.abi()));
                }
            }
        }
    });
    out
}

fn allows(
    ip: Ipv4Addr,
    direction: Direction,
    before: &DirectionPolicy,
    after: &DirectionPolicy,
    out: &mut MapChanges<PolicyKey, PolicyEntry>,
) {
    merge(&before.allows, &after.allows, |peer, change| match change {
        Change::Upsert(rule) | Change::Update(_, rule) => {
            out.upserts.push(policy_entry(ip, direction, *peer, *rule))
        }
        Change::Delete(rule) => out
            .deletes
            .push(policy_entry(ip, direction, *peer, *rule).0),
    });
}

enum Change<'v, V> {
    Upsert(&'v V),
    Update(&'v V, &'v V),
    Delete(&'v V),
}

/// Calls `f` for every key whose value differs between two sorted maps.
fn merge<'v, K: Ord, V: PartialEq>(
    old: &'v BTreeMap<K, V>,
    new: &'v BTreeMap<K, V>,
    mut f: impl FnMut(&'v K, Change<'v, V>),
) {
    let mut old = old.iter().peekable();
    let mut new = new.iter().peekable();
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => return,
            (Some((k, v)), None) => {
                f(k, Change::Delete(v));
                old.next();
            }
            (None, Some((k, v))) => {
                f(k, Change::Upsert(v));
                new.next();
            }
            (Some((ko, vo)), Some((kn, vn))) => match ko.cmp(kn) {
                std::cmp::Ordering::Less => {
                    f(ko, Change::Delete(vo));
                    old.next();
                }
                std::cmp::Ordering::Greater => {
                    f(kn, Change::Upsert(vn));
                    new.next();
                }
                std::cmp::Ordering::Equal => {
                    if vo != vn {
                        f(kn, Change::Update(vo, vn));
                    }
                    old.next();
                    new.next();
                }
            },
        }
    }
}
