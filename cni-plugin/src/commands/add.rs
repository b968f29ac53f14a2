//! ADD: reserve addresses, wire the veth pair, print the result. Any
//! failure after the reservation undoes everything ([`Rollback`]).

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use super::{Invocation, alloc_error, net_error, open_netns, open_store};
use crate::agent_client::{self, PodEndpoint};
use crate::error::CniError;
use crate::ipam::store::lock;
use crate::ipam::{Allocation, Attachment, Store, allocate};
use crate::naming::host_veth_name;
use crate::net::wiring::{self, Plan};
use crate::result::{CniResult, Interface, IpConfig, Route};

pub fn run(inv: &Invocation) -> Result<String, CniError> {
    let env = &inv.env;
    let conf = &inv.conf;
    // Open the netns first: a bad CNI_NETNS must fail before any state.
    let netns = open_netns(&env.netns)?;
    let owner = Attachment::new(&env.container_id, &env.ifname);
    let mut store = open_store(conf)?;
    let requested: Vec<Ipv4Addr> = inv
        .args
        .ips
        .iter()
        .chain(&conf.requested_ips)
        .copied()
        .collect();
    let allocations =
        allocate(&mut store, &conf.ipam.range_sets, &owner, &requested).map_err(alloc_error)?;
    let mut rollback = Rollback::new(&mut store, &owner);

    let host_name = host_veth_name(&env.container_id, &env.ifname);
    let routes = wiring::pod_routes(&conf.ipam.routes);
    let plan = Plan {
        host_name: &host_name,
        ifname: &env.ifname,
        allocations: &allocations,
        routes: &routes,
        mtu: conf.mtu,
    };
    wiring::create_pair(&netns, &plan).map_err(net_error)?;
    rollback.host_link = Some(host_name.clone());
    let wired = wiring::configure(&netns, &plan).map_err(net_error)?;

    let agent = agent_client::for_socket(conf.agent_socket.as_deref());
    agent.register(&PodEndpoint {
        container_id: &env.container_id,
        netns: &env.netns,
        ifname: &env.ifname,
        host_ifname: &host_name,
        host_ifindex: wired.host.index,
        ips: allocations.iter().map(|a| a.ip).collect(),
        mac: Some(wired.container.mac.as_str()).filter(|m| !m.is_empty()),
        host_mac: Some(wired.host.mac.as_str()).filter(|m| !m.is_empty()),
        pod_namespace: &inv.args.pod_namespace,
        pod_name: &inv.args.pod_name,
    })?;
    rollback.disarm();

    let result = CniResult {
        interfaces: vec![
            Interface {
                name: host_name,
                mac: wired.host.mac,
                sandbox: None,
            },
            Interface {
                name: env.ifname.clone(),
                mac: wired.container.mac,
                sandbox: Some(env.netns.clone()),
            },
        ],
        ips: allocations.iter().map(ip_config).collect(),
        routes: routes
            .iter()
            .map(|r| Route {
                dst: r.dst,
                gw: r.gw,
            })
            .collect(),
    };
    Ok(result.to_json(conf.cni_version))
}

/// The result reports the range's prefix length, as ptp does, although the
/// interface carries a /32.
fn ip_config(allocation: &Allocation) -> IpConfig {
    let address = Ipv4Network::new(allocation.ip, allocation.prefix)
        .unwrap_or_else(|_| Ipv4Network::from(allocation.ip));
    IpConfig {
        address,
        gateway: Some(allocation.gateway),
        interface: Some(1),
    }
}

/// Undoes a half-done ADD when dropped while armed: deletes the host veth
/// (its peer goes with it) and releases the attachment's addresses.
struct Rollback<'a, S: Store> {
    store: &'a mut S,
    owner: &'a Attachment,
    host_link: Option<String>,
    armed: bool,
}

impl<'a, S: Store> Rollback<'a, S> {
    fn new(store: &'a mut S, owner: &'a Attachment) -> Self {
        Self {
            store,
            owner,
            host_link: None,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl<S: Store> Drop for Rollback<'_, S> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Best effort: the original error is what the runtime must see; a
        // rollback failure goes to stderr, which runtimes log.
        if let Some(name) = self.host_link.take()
            && let Err(e) = wiring::delete_host_links(std::slice::from_ref(&name))
        {
            eprintln!("weir-cni: rollback: cannot delete {name}: {e}");
        }
        let released = lock(&mut *self.store).and_then(|mut s| s.release_by_id(self.owner));
        if let Err(e) = released {
            eprintln!(
                "weir-cni: rollback: cannot release addresses of {} {}: {e}",
                self.owner.container_id, self.owner.ifname
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ipam::MemoryStore;

    #[test]
    fn rollback_releases_reservations_when_armed() {
        let mut store = MemoryStore::new();
        let owner = Attachment::new("c1", "eth0");
        lock(&mut store)
            .unwrap()
            .reserve(&owner, Ipv4Addr::new(10, 0, 0, 2), 0)
            .unwrap();
        drop(Rollback::new(&mut store, &owner));
        assert!(store.get_by_id(&owner).unwrap().is_empty());
        assert!(!store.is_locked());
    }

    #[test]
    fn disarmed_rollback_keeps_reservations() {
        let mut store = MemoryStore::new();
        let owner = Attachment::new("c1", "eth0");
        lock(&mut store)
            .unwrap()
            .reserve(&owner, Ipv4Addr::new(10, 0, 0, 2), 0)
            .unwrap();
        let mut rollback = Rollback::new(&mut store, &owner);
        rollback.disarm();
        drop(rollback);
        assert_eq!(store.get_by_id(&owner).unwrap().len(), 1);
    }

    #[test]
    fn result_address_has_the_range_prefix() {
        let got = ip_config(&Allocation {
            ip: Ipv4Addr::new(10, 244, 1, 7),
            prefix: 24,
            gateway: Ipv4Addr::new(10, 244, 1, 1),
            range_set: 0,
        });
        assert_eq!(got.address.to_string(), "10.244.1.7/24");
        assert_eq!(got.interface, Some(1));
    }
}
