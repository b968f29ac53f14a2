//! Numeric security identities and the allocator that keeps them stable.
//!
//! Pods with the same namespace and labels share one identity. Namespace
//! labels are not part of it: they are a function of the namespace name at
//! any instant, so relabelling a namespace changes which policy entries
//! exist, never an identity or an ipcache entry.
//!
//! Identities are node-local (never on the wire), so each agent allocates
//! its own. They must stay stable across compiles: renumbering would turn
//! one label change into a rewrite of every map.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::ops::RangeInclusive;

use super::cluster::Cluster;
use super::error::{PolicyError, Problem};
use super::ports::NamedPorts;
use crate::k8s::{Kind, ObjectKey};

/// What a pod identity stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityKey {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// Hands out ids from a range, one per key, and takes back the ids of keys
/// a compile no longer used.
///
/// A released id is quarantined for one more compile before it is handed
/// out again: by then the writer has removed every map entry that meant the
/// old key, so no entry can silently change meaning.
#[derive(Clone, Debug)]
pub struct IdAllocator<K> {
    ids: HashMap<K, Slot>,
    generation: u64,
    next: u32,
    last: u32,
    reuse: bool,
    free: BTreeSet<u32>,
    quarantined: Vec<u32>,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    id: u32,
    used_in: u64,
}

impl<K: Clone + Eq + Hash> IdAllocator<K> {
    /// `reuse: false` never hands out an id twice (rule ids, which events
    /// in flight still carry).
    pub fn new(range: RangeInclusive<u32>, reuse: bool) -> Self {
        Self {
            ids: HashMap::new(),
            generation: 0,
            next: *range.start(),
            last: *range.end(),
            reuse,
            free: BTreeSet::new(),
            quarantined: Vec::new(),
        }
    }

    /// Starts a compile: ids not asked for until [`finish`](Self::finish)
    /// are released.
    pub fn begin(&mut self) {
        self.generation += 1;
    }

    /// The id of `key`, allocating one if needed; `None` when the range is
    /// exhausted.
    pub fn id(&mut self, key: &K) -> Option<u32> {
        if let Some(slot) = self.ids.get_mut(key) {
            slot.used_in = self.generation;
            return Some(slot.id);
        }
        let id = match self.free.pop_first() {
            Some(id) => id,
            None if self.next <= self.last => {
                self.next += 1;
                self.next - 1
            }
            None => return None,
        };
        let slot = Slot {
            id,
            used_in: self.generation,
        };
        self.ids.insert(key.clone(), slot);
        Some(id)
    }

    /// The id of `key` without allocating or marking it used.
    pub fn peek(&self, key: &K) -> Option<u32> {
        self.ids.get(key).map(|slot| slot.id)
    }

    /// Ends a compile: releases the ids not used since [`begin`](Self::begin).
    pub fn finish(&mut self) {
        let generation = self.generation;
        let mut released = Vec::new();
        self.ids.retain(|_, slot| {
            let keep = slot.used_in == generation;
            if !keep {
                released.push(slot.id);
            }
            keep
        });
        if self.reuse {
            self.free.extend(self.quarantined.drain(..));
            self.quarantined = released;
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The pod identities of one compile.
pub struct PodIdentities<'a> {
    /// Parallel to `Cluster::pods`; `None` when no id was left.
    pub of_pod: Vec<Option<u32>>,
    /// Distinct identities per namespace.
    pub by_namespace: HashMap<&'a str, Vec<Labelled<'a>>>,
    /// Named ports of the pods of each identity, merged.
    pub named_ports: HashMap<u32, NamedPorts>,
    pub keys: BTreeMap<u32, IdentityKey>,
}

impl<'a> PodIdentities<'a> {
    /// One identity per (namespace, labels) of the cluster's pods.
    pub fn assign(
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

    pub fn all(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }
}

/// A pod identity with its labels.
pub struct Labelled<'a> {
    pub id: u32,
    pub labels: &'a BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_released_ids_wait_one_compile() {
        let mut ids = IdAllocator::new(10..=12, true);
        ids.begin();
        assert_eq!(ids.id(&"a"), Some(10));
        assert_eq!(ids.id(&"b"), Some(11));
        assert_eq!(ids.id(&"a"), Some(10));
        ids.finish();

        ids.begin();
        assert_eq!(ids.id(&"b"), Some(11), "stable");
        ids.finish(); // releases 10 into quarantine

        ids.begin();
        assert_eq!(ids.id(&"b"), Some(11));
        assert_eq!(ids.id(&"c"), Some(12), "10 is still quarantined");
        assert_eq!(ids.id(&"d"), None, "exhausted");
        ids.finish();

        ids.begin();
        assert_eq!(ids.id(&"d"), Some(10), "reused after the quarantine");
        assert_eq!(ids.peek(&"b"), Some(11));
        ids.finish();
        assert_eq!(ids.len(), 1);
    }

    #[test]
    fn ids_without_reuse_are_never_handed_out_twice() {
        let mut ids = IdAllocator::new(1..=100, false);
        for round in 0..5 {
            ids.begin();
            assert_eq!(ids.id(&round), Some(round + 1));
            ids.finish();
            ids.begin();
            ids.finish();
        }
    }
}
