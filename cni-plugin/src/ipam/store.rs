//! The IPAM store interface: who holds which address, behind a lock.

use std::net::Ipv4Addr;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;

/// One attachment of a container to the network (CNI's unit of ADD/DEL).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

impl Attachment {
    pub fn new(container_id: impl Into<String>, ifname: impl Into<String>) -> Self {
        Self {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reservation {
    pub ip: Ipv4Addr,
    pub owner: Attachment,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("IPAM store: cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("IPAM store: {0}")]
    Misuse(String),
}

impl StoreError {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Persistent address reservations of one network, host-local compatible.
///
/// Callers take the lock around any read-modify-write sequence (read
/// last reserved -> reserve -> record last reserved), see [`lock`].
pub trait Store {
    fn lock(&mut self) -> Result<(), StoreError>;
    fn unlock(&mut self) -> Result<(), StoreError>;
    /// Records `ip` for the attachment; `Ok(false)` if `ip` is already taken.
    /// Also records `ip` as the last reserved address of `range_set`.
    fn reserve(
        &mut self,
        owner: &Attachment,
        ip: Ipv4Addr,
        range_set: usize,
    ) -> Result<bool, StoreError>;
    fn last_reserved_ip(&self, range_set: usize) -> Result<Option<Ipv4Addr>, StoreError>;
    /// Frees every address held by the attachment; returns them.
    fn release_by_id(&mut self, owner: &Attachment) -> Result<Vec<Ipv4Addr>, StoreError>;
    fn get_by_id(&self, owner: &Attachment) -> Result<Vec<Ipv4Addr>, StoreError>;
    /// Every reservation, sorted by address.
    fn reservations(&self) -> Result<Vec<Reservation>, StoreError>;
}

/// A locked store; unlocks when dropped, also on early returns.
pub struct Locked<'a, S: Store + ?Sized> {
    store: &'a mut S,
}

pub fn lock<S: Store + ?Sized>(store: &mut S) -> Result<Locked<'_, S>, StoreError> {
    store.lock()?;
    Ok(Locked { store })
}

impl<S: Store + ?Sized> Deref for Locked<'_, S> {
    type Target = S;
    fn deref(&self) -> &S {
        self.store
    }
}

impl<S: Store + ?Sized> DerefMut for Locked<'_, S> {
    fn deref_mut(&mut self) -> &mut S {
        self.store
    }
}

impl<S: Store + ?Sized> Drop for Locked<'_, S> {
    fn drop(&mut self) {
        // Closing the process releases an flock anyway; nothing to add here.
        let _ = self.store.unlock();
    }
}
