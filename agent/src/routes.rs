//! Native routing: the plan's routes to other nodes' pod CIDRs, programmed
//! in the node's netns over rtnetlink.
//!
//! Ownership: every route the agent adds carries the protocol number
//! [`ROUTE_PROTOCOL`] (`ip route` shows `proto 87`). The agent adds,
//! replaces and deletes only routes with that number in the main table;
//! a route someone else put on a pod CIDR is reported as a conflict and
//! left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use ipnetwork::Ipv4Network;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use tracing::{info, warn};

use crate::plan::NodeRoute;

/// `proto` of the agent's routes (unassigned in the kernel's
/// `rtnetlink.h` and iproute2's `rt_protos`; 87 is `W`).
pub const ROUTE_PROTOCOL: u8 = 87;

const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// An IPv4 unicast route of the main table as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelRoute {
    pub dst: Ipv4Network,
    pub gateway: Option<Ipv4Addr>,
    pub protocol: u8,
    pub priority: u32,
}

impl KernelRoute {
    pub fn owned(&self) -> bool {
        self.protocol == ROUTE_PROTOCOL
    }
}

/// What to change so the owned routes equal the desired ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteDiff {
    pub add: Vec<NodeRoute>,
    /// Owned routes whose gateway changed.
    pub replace: Vec<NodeRoute>,
    /// Owned routes no longer desired.
    pub remove: Vec<KernelRoute>,
    /// Desired routes whose CIDR carries a route the agent does not own.
    pub conflicts: Vec<(NodeRoute, KernelRoute)>,
    /// Desired routes already in place.
    pub unchanged: usize,
}

/// Compares the desired routes with the main table's IPv4 unicast routes.
pub fn diff(desired: &[NodeRoute], existing: &[KernelRoute]) -> RouteDiff {
    let mut by_dst: BTreeMap<Ipv4Network, Vec<&KernelRoute>> = BTreeMap::new();
    for route in existing {
        by_dst.entry(route.dst).or_default().push(route);
    }
    let mut out = RouteDiff::default();
    let mut wanted: BTreeSet<Ipv4Network> = BTreeSet::new();
    for route in desired {
        wanted.insert(route.pod_cidr);
        let present = by_dst
            .get(&route.pod_cidr)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let owned = present.iter().find(|r| r.owned());
        let foreign = present.iter().find(|r| !r.owned());
        match (owned, foreign) {
            (Some(mine), _) if mine.gateway == Some(route.via) => out.unchanged += 1,
            (Some(_), _) => out.replace.push(route.clone()),
            (None, Some(theirs)) => out.conflicts.push((route.clone(), (*theirs).clone())),
            (None, None) => out.add.push(route.clone()),
        }
    }
    for route in existing {
        if route.owned() && !wanted.contains(&route.dst) {
            out.remove.push(route.clone());
        }
    }
    // Two owned routes on one CIDR (e.g. another metric): keep one.
    for routes in by_dst.values() {
        let owned: Vec<&&KernelRoute> = routes.iter().filter(|r| r.owned()).collect();
        if owned.len() > 1 && wanted.contains(&owned[0].dst) {
            out.remove.extend(owned[1..].iter().map(|r| (**r).clone()));
        }
    }
    out
}

/// The outcome of one [`RouteProgrammer::sync`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteReport {
    pub added: usize,
    pub replaced: usize,
    pub removed: usize,
    pub conflicts: usize,
    pub failed: usize,
    /// Desired routes now in place (the agent's own).
    pub programmed: usize,
}

/// Keeps the node's owned routes equal to the plan's.
pub struct RouteProgrammer {
    handle: Handle,
    /// Conflicts already logged, so a standing one is logged once.
    reported: BTreeSet<Ipv4Network>,
}

impl RouteProgrammer {
    /// `handle` must be a connection in the node's netns.
    pub fn new(handle: Handle) -> Self {
        Self {
            handle,
            reported: BTreeSet::new(),
        }
    }

    /// Reads the main table and makes the owned routes match `desired`.
    /// One failing route does not stop the others; the error names every
    /// route that failed.
    pub async fn sync(&mut self, desired: &[NodeRoute]) -> anyhow::Result<RouteReport> {
        let existing = self.dump().await?;
        let plan = diff(desired, &existing);
        let mut report = RouteReport {
            conflicts: plan.conflicts.len(),
            programmed: plan.unchanged,
            ..RouteReport::default()
        };
        let mut failures = Vec::new();

        let conflicting: BTreeSet<Ipv4Network> =
            plan.conflicts.iter().map(|(r, _)| r.pod_cidr).collect();
        for (route, theirs) in &plan.conflicts {
            if !self.reported.contains(&route.pod_cidr) {
                warn!(
                    node = %route.node, cidr = %route.pod_cidr, via = %route.via,
                    existing_gateway = ?theirs.gateway, existing_proto = theirs.protocol,
                    "a route the agent does not own covers this pod CIDR; leaving it alone"
                );
            }
        }
        self.reported = conflicting;

        for route in &plan.remove {
            match self
                .handle
                .route()
                .del(delete_message(route))
                .execute()
                .await
            {
                Ok(()) => {
                    report.removed += 1;
                    info!(cidr = %route.dst, gateway = ?route.gateway, "removed a stale node route");
                }
                Err(e) => failures.push(format!("removing the route to {}: {e}", route.dst)),
            }
        }
        for (route, replace) in plan
            .add
            .iter()
            .map(|r| (r, false))
            .chain(plan.replace.iter().map(|r| (r, true)))
        {
            let request = self.handle.route().add(add_message(route));
            let request = if replace { request.replace() } else { request };
            match request.execute().await {
                Ok(()) => {
                    report.programmed += 1;
                    if replace {
                        report.replaced += 1;
                    } else {
                        report.added += 1;
                    }
                    info!(node = %route.node, cidr = %route.pod_cidr, via = %route.via, replaced = replace, "programmed a node route");
                }
                Err(e) => failures.push(format!(
                    "route to node {}'s pod CIDR {} via {}: {e}",
                    route.node, route.pod_cidr, route.via
                )),
            }
        }
        report.failed = failures.len();
        if failures.is_empty() {
            Ok(report)
        } else {
            Err(anyhow::anyhow!("{}", failures.join("; ")))
        }
    }

    /// The main table's IPv4 unicast routes.
    async fn dump(&self) -> anyhow::Result<Vec<KernelRoute>> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut stream = self.handle.route().get(query).execute();
        let mut routes = Vec::new();
        while let Some(message) = stream
            .try_next()
            .await
            .map_err(|e| anyhow::anyhow!("listing the node's routes: {e}"))?
        {
            if let Some(route) = kernel_route(&message) {
                routes.push(route);
            }
        }
        Ok(routes)
    }
}

fn kernel_route(message: &RouteMessage) -> Option<KernelRoute> {
    if message.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(message.header.table);
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut priority = 0;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(*a),
            RouteAttribute::Priority(p) => priority = *p,
            _ => {}
        }
    }
    if table != MAIN_TABLE {
        return None;
    }
    let dst = Ipv4Network::new(dst, message.header.destination_prefix_length).ok()?;
    Some(KernelRoute {
        dst,
        gateway,
        protocol: u8::from(message.header.protocol),
        priority,
    })
}

fn add_message(route: &NodeRoute) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.pod_cidr.network(), route.pod_cidr.prefix())
        .gateway(route.via)
        .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
        .build()
}

fn delete_message(route: &KernelRoute) -> RouteMessage {
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.dst.network(), route.dst.prefix())
        .protocol(RouteProtocol::from(route.protocol))
        .priority(route.priority);
    if let Some(gateway) = route.gateway {
        builder = builder.gateway(gateway);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cidr(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    fn want(node: &str, c: &str, via: [u8; 4]) -> NodeRoute {
        NodeRoute {
            node: node.into(),
            pod_cidr: cidr(c),
            via: Ipv4Addr::from(via),
        }
    }

    fn have(c: &str, via: Option<[u8; 4]>, protocol: u8) -> KernelRoute {
        KernelRoute {
            dst: cidr(c),
            gateway: via.map(Ipv4Addr::from),
            protocol,
            priority: 0,
        }
    }

    #[test]
    fn adds_replaces_removes_and_leaves_foreign_routes() {
        let desired = [
            want("n2", "10.244.2.0/24", [192, 168, 100, 12]),
            want("n3", "10.244.3.0/24", [192, 168, 100, 13]),
            want("n4", "10.244.4.0/24", [192, 168, 100, 14]),
            want("n5", "10.244.5.0/24", [192, 168, 100, 15]),
        ];
        let existing = [
            have("0.0.0.0/0", Some([192, 168, 100, 1]), 3),
            have("192.168.100.0/24", None, 2),
            have("10.244.2.0/24", Some([192, 168, 100, 12]), ROUTE_PROTOCOL),
            have("10.244.3.0/24", Some([192, 168, 100, 99]), ROUTE_PROTOCOL),
            have("10.244.5.0/24", Some([192, 168, 100, 50]), 4),
            have("10.244.9.0/24", Some([192, 168, 100, 19]), ROUTE_PROTOCOL),
            have("10.244.8.0/24", Some([192, 168, 100, 18]), 4),
        ];
        let d = diff(&desired, &existing);
        assert_eq!(d.unchanged, 1);
        assert_eq!(d.replace, vec![desired[1].clone()]);
        assert_eq!(d.add, vec![desired[2].clone()]);
        assert_eq!(d.conflicts, vec![(desired[3].clone(), existing[4].clone())]);
        assert_eq!(
            d.remove,
            vec![existing[5].clone()],
            "only owned routes are removed"
        );
    }

    #[test]
    fn nothing_desired_removes_every_owned_route_only() {
        let existing = [
            have("10.244.2.0/24", Some([1, 1, 1, 1]), ROUTE_PROTOCOL),
            have("10.244.3.0/24", Some([1, 1, 1, 2]), 4),
        ];
        let d = diff(&[], &existing);
        assert_eq!(d.remove, vec![existing[0].clone()]);
        assert!(d.add.is_empty() && d.replace.is_empty() && d.conflicts.is_empty());
    }

    #[test]
    fn duplicate_owned_routes_collapse_to_one() {
        let mut second = have("10.244.2.0/24", Some([1, 1, 1, 1]), ROUTE_PROTOCOL);
        second.priority = 100;
        let existing = [
            have("10.244.2.0/24", Some([1, 1, 1, 1]), ROUTE_PROTOCOL),
            second.clone(),
        ];
        let d = diff(&[want("n2", "10.244.2.0/24", [1, 1, 1, 1])], &existing);
        assert_eq!(d.unchanged, 1);
        assert_eq!(d.remove, vec![second]);
    }

    #[test]
    fn kernel_messages_parse_and_filter_tables() {
        let mut message = add_message(&want("n2", "10.244.2.0/24", [192, 168, 100, 12]));
        let parsed = kernel_route(&message).unwrap();
        assert_eq!(
            parsed,
            have("10.244.2.0/24", Some([192, 168, 100, 12]), ROUTE_PROTOCOL)
        );
        assert!(parsed.owned());
        message.header.table = 255;
        assert_eq!(kernel_route(&message), None, "local table");
        message.header.table = 0;
        message.attributes.push(RouteAttribute::Table(MAIN_TABLE));
        assert!(kernel_route(&message).is_some(), "table as an attribute");
        message.header.kind = RouteType::Local;
        assert_eq!(kernel_route(&message), None);
    }
}
