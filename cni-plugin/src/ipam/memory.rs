//! An in-memory [`Store`] for unit tests. It enforces the lock discipline
//! (mutations while unlocked are an error) so tests catch a missing lock.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use super::store::{Attachment, Reservation, Store, StoreError};

#[derive(Debug, Default)]
pub struct MemoryStore {
    held: BTreeMap<Ipv4Addr, Attachment>,
    last: HashMap<usize, Ipv4Addr>,
    locked: bool,
    /// How often the lock was taken; lets tests assert the lock is used.
    pub lock_count: usize,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_locked(&self) -> bool {
        self.locked
    }

    fn require_lock(&self, what: &str) -> Result<(), StoreError> {
        if self.locked {
            Ok(())
        } else {
            Err(StoreError::Misuse(format!(
                "{what} without holding the lock"
            )))
        }
    }
}

impl Store for MemoryStore {
    fn lock(&mut self) -> Result<(), StoreError> {
        if self.locked {
            return Err(StoreError::Misuse("lock taken twice".to_string()));
        }
        self.locked = true;
        self.lock_count += 1;
        Ok(())
    }

    fn unlock(&mut self) -> Result<(), StoreError> {
        self.locked = false;
        Ok(())
    }

    fn reserve(
        &mut self,
        owner: &Attachment,
        ip: Ipv4Addr,
        range_set: usize,
    ) -> Result<bool, StoreError> {
        self.require_lock("reserve")?;
        if self.held.contains_key(&ip) {
            return Ok(false);
        }
        self.held.insert(ip, owner.clone());
        self.last.insert(range_set, ip);
        Ok(true)
    }

    fn last_reserved_ip(&self, range_set: usize) -> Result<Option<Ipv4Addr>, StoreError> {
        Ok(self.last.get(&range_set).copied())
    }

    fn release_by_id(&mut self, owner: &Attachment) -> Result<Vec<Ipv4Addr>, StoreError> {
        self.require_lock("release")?;
        let ips = self.get_by_id(owner)?;
        for ip in &ips {
            self.held.remove(ip);
        }
        Ok(ips)
    }

    fn get_by_id(&self, owner: &Attachment) -> Result<Vec<Ipv4Addr>, StoreError> {
        Ok(self
            .held
            .iter()
            .filter(|(_, a)| *a == owner)
            .map(|(ip, _)| *ip)
            .collect())
    }

    fn reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        Ok(self
            .held
            .iter()
            .map(|(ip, owner)| Reservation {
                ip: *ip,
                owner: owner.clone(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ipam::store::lock;

    #[test]
    fn reserve_release_round_trip() {
        let mut store = MemoryStore::new();
        let a = Attachment::new("c1", "eth0");
        let b = Attachment::new("c2", "eth0");
        let ip1 = Ipv4Addr::new(10, 0, 0, 2);
        let mut locked = lock(&mut store).unwrap();
        assert!(locked.reserve(&a, ip1, 0).unwrap());
        assert!(!locked.reserve(&b, ip1, 0).unwrap());
        assert_eq!(locked.last_reserved_ip(0).unwrap(), Some(ip1));
        assert_eq!(locked.get_by_id(&a).unwrap(), vec![ip1]);
        assert!(locked.release_by_id(&b).unwrap().is_empty());
        assert_eq!(locked.release_by_id(&a).unwrap(), vec![ip1]);
        assert!(locked.reservations().unwrap().is_empty());
        drop(locked);
        assert!(!store.is_locked());
    }

    #[test]
    fn mutations_need_the_lock() {
        let mut store = MemoryStore::new();
        let a = Attachment::new("c1", "eth0");
        assert!(store.reserve(&a, Ipv4Addr::new(10, 0, 0, 2), 0).is_err());
        assert!(store.release_by_id(&a).is_err());
    }
}
