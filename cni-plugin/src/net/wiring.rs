//! The ptp-style routed wiring of one pod attachment:
//!
//! ```text
//! node netns                                 pod netns
//! weirXXXXXXXXXXX  <== veth ==>              eth0
//!   GATEWAY/32                                 POD_IP/32
//!   route POD_IP/32 dev weirX scope link       route GATEWAY/32 dev eth0 scope link
//!                                              route default (and ipam routes) via GATEWAY
//! ```
//!
//! The gateway address sits on every host veth (a /32 can repeat), so the
//! pod's ARP for its gateway is answered by the host side without proxy_arp.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;

use ipnetwork::Ipv4Network;
use rtnetlink::Handle;

use super::links::{self, LinkState, LiveRoute, RouteSpec};
use super::netns::{Netns, join};
use super::{NetError, errno_of, sysctl, with_netlink};
use crate::config::RouteConf;
use crate::ipam::Allocation;

/// What ADD wires for one attachment.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    pub host_name: &'a str,
    pub ifname: &'a str,
    /// One per range set; never empty.
    pub allocations: &'a [Allocation],
    /// Routes for the pod, from [`pod_routes`].
    pub routes: &'a [RouteConf],
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Wired {
    pub host: LinkState,
    pub container: LinkState,
}

/// The pod's routes: the ipam routes plus a default route when they have
/// none (every pod routes everything via its on-link gateway).
pub fn pod_routes(ipam_routes: &[RouteConf]) -> Vec<RouteConf> {
    let default: Ipv4Network = Ipv4Network::from(Ipv4Addr::UNSPECIFIED);
    let mut routes = ipam_routes.to_vec();
    let has_default = routes.iter().any(|r| r.dst.prefix() == 0);
    if !has_default {
        // "0.0.0.0/0"
        if let Ok(dst) = Ipv4Network::new(default.ip(), 0) {
            routes.insert(0, RouteConf { dst, gw: None });
        }
    }
    routes
}

/// Creates the veth pair: `host_name` here, `ifname` inside `netns`.
pub fn create_pair(netns: &Netns, plan: &Plan<'_>) -> Result<(), NetError> {
    with_netlink(|handle| async move {
        let created = links::create_veth(
            &handle,
            plan.host_name,
            plan.ifname,
            netns.file().as_fd(),
            plan.mtu,
        )
        .await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => {
                let which = if links::get_link(&handle, plan.host_name).await?.is_some() {
                    format!(
                        "host interface {} already exists (a leftover of an earlier ADD for this container and ifname? run DEL first)",
                        plan.host_name
                    )
                } else {
                    format!(
                        "interface {} already exists in netns {}",
                        plan.ifname,
                        netns.path.display()
                    )
                };
                Err(NetError::State(which))
            }
            Err(e) => Err(NetError::netlink(
                format!(
                    "create veth {} <-> {} in netns {}",
                    plan.host_name,
                    plan.ifname,
                    netns.path.display()
                ),
                e,
            )),
        }
    })
}

/// Addresses and routes on both ends, the two sides concurrently.
pub fn configure(netns: &Netns, plan: &Plan<'_>) -> Result<Wired, NetError> {
    std::thread::scope(|scope| {
        let container = netns.run_in(scope, || {
            with_netlink(|handle| async move { configure_container(&handle, plan).await })
        })?;
        let host = sysctl::enable_ip_forward().and_then(|()| {
            with_netlink(|handle| async move { configure_host(&handle, plan).await })
        });
        let container = join(container);
        Ok(Wired {
            host: host?,
            container: container.map_err(|e| in_netns(netns, e))?,
        })
    })
}

fn in_netns(netns: &Netns, err: NetError) -> NetError {
    match err {
        NetError::State(msg) => NetError::State(format!("{msg} (netns {})", netns.path.display())),
        NetError::Netlink { context, source } => NetError::Netlink {
            context: format!("{context} in netns {}", netns.path.display()),
            source,
        },
        NetError::Io { context, source } => NetError::Io {
            context: format!("{context} in netns {}", netns.path.display()),
            source,
        },
    }
}

fn distinct_gateways(allocations: &[Allocation]) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    // (gateway, first pod address behind it)
    let mut seen = BTreeSet::new();
    allocations
        .iter()
        .filter(|a| seen.insert(a.gateway))
        .map(|a| (a.gateway, a.ip))
        .collect()
}

async fn require_link(handle: &Handle, name: &str) -> Result<LinkState, NetError> {
    links::get_link(handle, name)
        .await?
        .ok_or_else(|| NetError::State(format!("interface {name} vanished while being set up")))
}

async fn configure_host(handle: &Handle, plan: &Plan<'_>) -> Result<LinkState, NetError> {
    let link = require_link(handle, plan.host_name).await?;
    if !link.up {
        links::set_up(handle, &link).await?;
    }
    for (gateway, _) in distinct_gateways(plan.allocations) {
        links::add_address(handle, &link, gateway, 32).await?;
    }
    for allocation in plan.allocations {
        let route = RouteSpec {
            dst: Ipv4Network::from(allocation.ip),
            gateway: None,
            oif: link.index,
            link_scope: true,
            src: None,
        };
        links::replace_route(handle, &route).await?;
    }
    Ok(link)
}

async fn configure_container(handle: &Handle, plan: &Plan<'_>) -> Result<LinkState, NetError> {
    let link = require_link(handle, plan.ifname).await?;
    if !link.up {
        links::set_up(handle, &link).await?;
    }
    for allocation in plan.allocations {
        links::add_address(handle, &link, allocation.ip, 32).await?;
    }
    for (gateway, src) in distinct_gateways(plan.allocations) {
        let route = RouteSpec {
            dst: Ipv4Network::from(gateway),
            gateway: None,
            oif: link.index,
            link_scope: true,
            src: Some(src),
        };
        links::replace_route(handle, &route).await?;
    }
    let Some(primary) = plan.allocations.first() else {
        return Ok(link);
    };
    for route in plan.routes {
        let spec = RouteSpec {
            dst: route.dst,
            gateway: Some(route.gw.unwrap_or(primary.gateway)),
            oif: link.index,
            link_scope: false,
            src: None,
        };
        links::replace_route(handle, &spec).await?;
    }
    Ok(link)
}

/// Deletes host-side veths by name in the current netns (the peers go with
/// them). Missing links are fine. Returns the names actually deleted.
pub fn delete_host_links(names: &[String]) -> Result<Vec<String>, NetError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    with_netlink(|handle| async move {
        let mut deleted = Vec::new();
        for name in names {
            if links::delete_link(&handle, name).await? {
                deleted.push(name.clone());
            }
        }
        Ok(deleted)
    })
}

/// What CHECK expects to find, from `prevResult`.
#[derive(Debug, Clone)]
pub struct Expected {
    pub host_name: String,
    pub ifname: String,
    /// Empty when prevResult has no MAC.
    pub mac: String,
    pub ips: Vec<Ipv4Addr>,
    pub gateways: Vec<Ipv4Addr>,
    /// `(dst, via)` routes in the pod.
    pub routes: Vec<(Ipv4Network, Ipv4Addr)>,
}

/// Compares live state with `expected`; the first drift is the error.
pub fn check(netns: &Netns, expected: &Expected) -> Result<(), NetError> {
    std::thread::scope(|scope| {
        let container = netns.run_in(scope, || {
            with_netlink(|handle| async move { check_container(&handle, expected).await })
        })?;
        let host = with_netlink(|handle| async move { check_host(&handle, expected).await });
        let container = join(container).map_err(|e| in_netns(netns, e));
        container.and(host)
    })
}

fn drift(msg: String) -> NetError {
    NetError::State(msg)
}

async fn check_link(handle: &Handle, name: &str, side: &str) -> Result<LinkState, NetError> {
    let link = links::get_link(handle, name)
        .await?
        .ok_or_else(|| drift(format!("{side} interface {name} does not exist")))?;
    if !link.up {
        return Err(drift(format!("{side} interface {name} is down")));
    }
    Ok(link)
}

fn has_route(routes: &[LiveRoute], dst: Ipv4Network, gateway: Option<Ipv4Addr>, oif: u32) -> bool {
    routes
        .iter()
        .any(|r| r.dst == dst && r.gateway == gateway && r.oif == Some(oif))
}

async fn check_container(handle: &Handle, expected: &Expected) -> Result<(), NetError> {
    let link = check_link(handle, &expected.ifname, "container").await?;
    if !expected.mac.is_empty() && !link.mac.eq_ignore_ascii_case(&expected.mac) {
        return Err(drift(format!(
            "container interface {} has MAC {}, prevResult says {}",
            expected.ifname, link.mac, expected.mac
        )));
    }
    let addresses = links::addresses(handle, &link).await?;
    for ip in &expected.ips {
        if !addresses.iter().any(|(a, _)| a == ip) {
            return Err(drift(format!(
                "container interface {} lacks address {ip}",
                expected.ifname
            )));
        }
    }
    let routes = links::main_table_routes(handle).await?;
    for gateway in &expected.gateways {
        if !has_route(&routes, Ipv4Network::from(*gateway), None, link.index) {
            return Err(drift(format!(
                "container lacks the on-link route {gateway}/32 dev {}",
                expected.ifname
            )));
        }
    }
    for (dst, via) in &expected.routes {
        if !has_route(&routes, *dst, Some(*via), link.index) {
            return Err(drift(format!(
                "container lacks route {dst} via {via} dev {}",
                expected.ifname
            )));
        }
    }
    Ok(())
}

async fn check_host(handle: &Handle, expected: &Expected) -> Result<(), NetError> {
    let link = check_link(handle, &expected.host_name, "host").await?;
    let addresses = links::addresses(handle, &link).await?;
    for gateway in &expected.gateways {
        if !addresses.iter().any(|(a, p)| a == gateway && *p == 32) {
            return Err(drift(format!(
                "host interface {} lacks gateway address {gateway}/32",
                expected.host_name
            )));
        }
    }
    let routes = links::main_table_routes(handle).await?;
    for ip in &expected.ips {
        if !has_route(&routes, Ipv4Network::from(*ip), None, link.index) {
            return Err(drift(format!(
                "host lacks route {ip}/32 dev {}",
                expected.host_name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn route(dst: &str, gw: Option<&str>) -> RouteConf {
        RouteConf {
            dst: dst.parse().unwrap(),
            gw: gw.map(|g| g.parse().unwrap()),
        }
    }

    #[test]
    fn default_route_is_added_when_missing() {
        let routes = pod_routes(&[route("192.168.0.0/16", None)]);
        assert_eq!(
            routes,
            vec![route("0.0.0.0/0", None), route("192.168.0.0/16", None)]
        );
        assert_eq!(pod_routes(&[]), vec![route("0.0.0.0/0", None)]);
    }

    #[test]
    fn configured_default_route_is_kept_as_is() {
        let configured = [route("0.0.0.0/0", Some("10.0.0.254"))];
        assert_eq!(pod_routes(&configured), configured.to_vec());
    }

    #[test]
    fn gateways_are_deduplicated_in_order() {
        let alloc = |ip: [u8; 4], gw: [u8; 4], set| Allocation {
            ip: Ipv4Addr::from(ip),
            prefix: 24,
            gateway: Ipv4Addr::from(gw),
            range_set: set,
        };
        let got = distinct_gateways(&[
            alloc([10, 0, 0, 5], [10, 0, 0, 1], 0),
            alloc([10, 0, 0, 6], [10, 0, 0, 1], 1),
            alloc([10, 1, 0, 5], [10, 1, 0, 1], 2),
        ]);
        assert_eq!(
            got,
            vec![
                (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 5)),
                (Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 1, 0, 5)),
            ]
        );
    }
}
