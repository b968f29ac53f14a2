//! Programs on the node's uplink: `weir_from_netdev` on its TC ingress
//! (traffic from outside: NodePort, LoadBalancer and externalIP frontends in
//! the external scope, SNAT for externalTrafficPolicy=Cluster, and reverse
//! NAT of replies from other nodes) and `weir_to_netdev` on its TC egress
//! (the node's own traffic to services, in the internal scope, for processes
//! outside the socket-LB cgroup).

use aya_ebpf::{macros::classifier, programs::TcContext};
use weir_common::{DropReason, metrics::Direction};

use crate::{
    parse::{self, L3},
    policy::Gate,
    service::{self, Origin},
    verdict::{self, Action},
};

#[classifier]
pub fn weir_from_netdev(ctx: TcContext) -> i32 {
    verdict::tc(&ctx, Direction::FromNetdev, try_from_netdev(&ctx))
}

#[classifier]
pub fn weir_to_netdev(ctx: TcContext) -> i32 {
    verdict::tc(&ctx, Direction::ToNetdev, try_to_netdev(&ctx))
}

fn try_from_netdev(ctx: &TcContext) -> Result<Action, DropReason> {
    match parse::packet(ctx)? {
        L3::Ipv4(mut flow) => service::process(ctx, &mut flow, Origin::Netdev, &mut Gate::open()),
        L3::Other => Ok(Action::Pass),
    }
}

fn try_to_netdev(ctx: &TcContext) -> Result<Action, DropReason> {
    match parse::packet(ctx)? {
        L3::Ipv4(mut flow) => service::process(ctx, &mut flow, Origin::Host, &mut Gate::open()),
        L3::Other => Ok(Action::Pass),
    }
}
