//! GC (spec 1.1): release the addresses and remove the host veths of every
//! attachment that is not in `cni.dev/valid-attachments`.

use std::collections::{BTreeSet, HashSet};

use super::{net_error, open_store, store_error};
use crate::agent_client;
use crate::config::NetConf;
use crate::error::CniError;
use crate::ipam::store::lock;
use crate::ipam::{Attachment, Store};
use crate::naming::host_veth_name;
use crate::net::wiring;

pub fn run(conf: &NetConf) -> Result<(), CniError> {
    let valid: HashSet<&Attachment> = conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| CniError::invalid_config("GC needs the key \"cni.dev/valid-attachments\""))?
        .iter()
        .collect();
    let mut store = open_store(conf)?;
    let mut locked = lock(&mut store).map_err(store_error)?;
    let stale = stale_attachments(&*locked, &valid)?;
    let names: Vec<String> = stale
        .iter()
        .map(|a| host_veth_name(&a.container_id, &a.ifname))
        .collect();
    wiring::delete_host_links(&names).map_err(net_error)?;
    let agent = agent_client::for_socket(conf.agent_socket.as_deref());
    for owner in &stale {
        locked.release_by_id(owner).map_err(store_error)?;
        agent.deregister(&owner.container_id, &owner.ifname)?;
    }
    Ok(())
}

/// Holders of reservations that the runtime no longer knows.
pub fn stale_attachments<S: Store + ?Sized>(
    store: &S,
    valid: &HashSet<&Attachment>,
) -> Result<BTreeSet<Attachment>, CniError> {
    Ok(store
        .reservations()
        .map_err(store_error)?
        .into_iter()
        .map(|r| r.owner)
        .filter(|owner| !valid.contains(owner))
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::net::Ipv4Addr;

    use super::*;
    use crate::ipam::MemoryStore;

    #[test]
    fn stale_are_those_not_listed() {
        let mut store = MemoryStore::new();
        let keep = Attachment::new("keep", "eth0");
        let gone = Attachment::new("gone", "eth0");
        let other_if = Attachment::new("keep", "eth1");
        {
            let mut locked = lock(&mut store).unwrap();
            locked
                .reserve(&keep, Ipv4Addr::new(10, 0, 0, 2), 0)
                .unwrap();
            locked
                .reserve(&gone, Ipv4Addr::new(10, 0, 0, 3), 0)
                .unwrap();
            locked
                .reserve(&gone, Ipv4Addr::new(10, 1, 0, 3), 1)
                .unwrap();
            locked
                .reserve(&other_if, Ipv4Addr::new(10, 0, 0, 4), 0)
                .unwrap();
        }
        let valid: HashSet<&Attachment> = [&keep].into_iter().collect();
        let stale = stale_attachments(&store, &valid).unwrap();
        assert_eq!(stale, [gone, other_if].into_iter().collect());
    }
}
