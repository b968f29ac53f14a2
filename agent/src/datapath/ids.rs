//! Stable numeric ids for map keys: backend ids (per address, port and
//! protocol) and reverse-NAT indices (per frontend).
//!
//! Ids are handed out round-robin from the last one given, skipping ids in
//! use, so a released id is not reused until the whole range has cycled:
//! state that still names an old id (an affinity entry, a conntrack entry)
//! never silently points at a different backend or frontend. A restarted
//! agent adopts the ids it finds in the pinned maps.

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
};

/// Hands out ids in `min..=max` for keys of type `K`.
#[derive(Clone, Debug)]
pub struct IdAllocator<K> {
    by_key: HashMap<K, u32>,
    by_id: HashMap<u32, K>,
    /// Ids that must not be handed out: assigned ones plus reserved ones
    /// (released in the map writer's eyes but still referenced elsewhere).
    taken: HashSet<u32>,
    min: u32,
    max: u32,
    /// The id handed out last; the search for a free id starts after it.
    last: u32,
}

impl<K: Clone + Eq + Hash> IdAllocator<K> {
    pub fn new(min: u32, max: u32) -> Self {
        Self {
            by_key: HashMap::new(),
            by_id: HashMap::new(),
            taken: HashSet::new(),
            min,
            max,
            last: max,
        }
    }

    /// Records an id found in the pinned maps. A key seen twice keeps its
    /// first id; returns false when `id` is out of range or taken.
    pub fn adopt(&mut self, key: K, id: u32) -> bool {
        if id < self.min || id > self.max || self.taken.contains(&id) {
            return false;
        }
        if self.by_key.contains_key(&key) {
            return false;
        }
        self.by_key.insert(key.clone(), id);
        self.by_id.insert(id, key);
        self.taken.insert(id);
        // Continue after the highest adopted id, as the previous run would.
        if self.last == self.max || id > self.last {
            self.last = id;
        }
        true
    }

    pub fn get(&self, key: &K) -> Option<u32> {
        self.by_key.get(key).copied()
    }

    /// The key holding `id`, if any.
    pub fn holder(&self, id: u32) -> Option<&K> {
        self.by_id.get(&id)
    }

    /// The key's id, allocating one; `None` when every id is taken.
    pub fn get_or_alloc(&mut self, key: &K) -> Option<u32> {
        if let Some(id) = self.by_key.get(key) {
            return Some(*id);
        }
        let id = self.next_free()?;
        self.by_key.insert(key.clone(), id);
        self.by_id.insert(id, key.clone());
        self.taken.insert(id);
        self.last = id;
        Some(id)
    }

    /// Forgets the key; its id stays taken until [`Self::unreserve`] when
    /// `keep_reserved`, else it becomes free (after a full cycle).
    pub fn release(&mut self, key: &K, keep_reserved: bool) -> Option<u32> {
        let id = self.by_key.remove(key)?;
        self.by_id.remove(&id);
        if !keep_reserved {
            self.taken.remove(&id);
        }
        Some(id)
    }

    /// Frees an id kept by `release(.., true)` (unless a key holds it).
    pub fn unreserve(&mut self, id: u32) {
        if !self.by_id.contains_key(&id) {
            self.taken.remove(&id);
        }
    }

    /// Keeps `id` from being handed out (e.g. an orphan entry found in a map).
    pub fn reserve(&mut self, id: u32) {
        if id >= self.min && id <= self.max {
            self.taken.insert(id);
        }
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = (&K, u32)> {
        self.by_key.iter().map(|(k, v)| (k, *v))
    }

    fn next_free(&self) -> Option<u32> {
        let span = u64::from(self.max - self.min) + 1;
        if self.taken.len() as u64 >= span {
            return None;
        }
        let mut candidate = self.last;
        for _ in 0..span {
            candidate = if candidate >= self.max {
                self.min
            } else {
                candidate + 1
            };
            if !self.taken.contains(&candidate) {
                return Some(candidate);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_are_stable_per_key_and_unique() {
        let mut ids = IdAllocator::new(1, 100);
        let a = ids.get_or_alloc(&"a").unwrap();
        let b = ids.get_or_alloc(&"b").unwrap();
        assert_ne!(a, b);
        assert_eq!(ids.get_or_alloc(&"a"), Some(a));
        assert_eq!(ids.get(&"b"), Some(b));
        assert_eq!((a, b), (1, 2));
    }

    #[test]
    fn released_ids_are_not_reused_until_the_range_cycles() {
        let mut ids = IdAllocator::new(1, 3);
        assert_eq!(ids.get_or_alloc(&"a"), Some(1));
        assert_eq!(ids.release(&"a", false), Some(1));
        assert_eq!(ids.get_or_alloc(&"b"), Some(2));
        assert_eq!(ids.get_or_alloc(&"c"), Some(3));
        // Cycled: 1 is free again.
        assert_eq!(ids.get_or_alloc(&"d"), Some(1));
        assert_eq!(ids.get_or_alloc(&"e"), None, "range exhausted");
    }

    #[test]
    fn reserved_ids_stay_taken_until_unreserved() {
        let mut ids = IdAllocator::new(1, 2);
        assert_eq!(ids.get_or_alloc(&"a"), Some(1));
        ids.release(&"a", true);
        assert_eq!(ids.get_or_alloc(&"b"), Some(2));
        assert_eq!(ids.get_or_alloc(&"c"), None);
        ids.unreserve(1);
        assert_eq!(ids.get_or_alloc(&"c"), Some(1));
    }

    #[test]
    fn adoption_restores_ids_and_continues_after_the_highest() {
        let mut ids = IdAllocator::new(1, 1000);
        assert!(ids.adopt("x", 7));
        assert!(ids.adopt("y", 3));
        assert!(!ids.adopt("z", 7), "taken");
        assert!(!ids.adopt("x", 9), "key already has an id");
        assert!(!ids.adopt("w", 0), "out of range");
        assert_eq!(ids.get(&"x"), Some(7));
        assert_eq!(ids.get_or_alloc(&"new"), Some(8));
        ids.reserve(9);
        assert_eq!(ids.get_or_alloc(&"newer"), Some(10));
        assert_eq!(ids.len(), 4);
    }

    #[test]
    fn u32_ranges_do_not_overflow() {
        let mut ids = IdAllocator::new(1, u32::MAX);
        assert!(ids.adopt("max", u32::MAX));
        assert_eq!(ids.get_or_alloc(&"next"), Some(1));
    }
}
