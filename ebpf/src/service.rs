//! The service pipeline shared by the TC programs: replies and established
//! flows on conntrack, new flows through service lookup, backend choice,
//! conntrack creation, translation and delivery.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TcContext};
use weir_common::{
    DropReason,
    config::DatapathConfig,
    ct::{Ct4Entry, ct_flags, nat_flags},
    lb::svc_flags,
};

use crate::{
    ct, icmp, lb,
    maps::CONFIG,
    nat,
    parse::{Flow, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    policy::Gate,
    redirect, reject,
    verdict::Action,
};

/// Where the packet came from, which decides the frontend scope, SNAT and
/// how the result is delivered.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A local pod (TC ingress of its host-side veth).
    Pod,
    /// Outside the node (TC ingress of the uplink).
    Netdev,
    /// The node itself (TC egress of the uplink).
    Host,
}

impl Origin {
    #[inline(always)]
    fn internal(self) -> bool {
        !matches!(self, Self::Netdev)
    }

    #[inline(always)]
    fn ct_flag(self) -> u8 {
        match self {
            Self::Pod => ct_flags::FROM_POD,
            Self::Netdev => ct_flags::FROM_NETDEV,
            Self::Host => ct_flags::FROM_HOST,
        }
    }

    /// Whether a packet from here crosses the node as a routed hop.
    #[inline(always)]
    fn routed(self) -> bool {
        !matches!(self, Self::Host)
    }
}

#[inline(always)]
fn config() -> DatapathConfig {
    CONFIG.get(0).copied().unwrap_or_default()
}

/// Runs a parsed IPv4 packet through the service datapath. `gate` holds a
/// pod's new egress flow awaiting its policy verdict: it is admitted on the
/// backend before a service flow is created or an established one
/// translated; replies of tracked flows open it.
#[inline(always)]
pub fn process(
    ctx: &TcContext,
    flow: &mut Flow,
    origin: Origin,
    gate: &mut Gate,
) -> Result<Action, DropReason> {
    if flow.proto == IPPROTO_ICMP {
        return match icmp::reverse_error(ctx, flow)? {
            Some(entry) => {
                let via_fib = entry.flags & ct_flags::FROM_NETDEV != 0;
                deliver(ctx, flow, origin, via_fib)
            }
            None => Ok(Action::Pass),
        };
    }
    if !flow.has_ports || (flow.proto != IPPROTO_TCP && flow.proto != IPPROTO_UDP) {
        return Ok(Action::Pass);
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };

    if let Some(entry) = ct::track(flow, ct::REPLY, now) {
        gate.reply();
        nat::reverse(ctx, flow, &entry)?;
        // The reply's new source is the frontend, which for traffic from
        // outside may be a node address: the stack would call it a martian.
        let via_fib = entry.flags & ct_flags::FROM_NETDEV != 0;
        return deliver(ctx, flow, origin, via_fib);
    }
    if let Some(entry) = ct::track(flow, ct::FORWARD, now)
        && !ct::reopens(flow, &entry)
    {
        gate.admit(ctx, entry.backend_addr, entry.backend_port)?;
        return translate(ctx, flow, origin, &entry);
    }
    if !flow.has_l4 {
        // Later fragments never open flows.
        return Ok(Action::Pass);
    }
    let Some(fe) = lb::frontend(flow.daddr, flow.dport, flow.proto, origin.internal()) else {
        return Ok(Action::Pass);
    };
    if fe.svc.count == 0 {
        if fe.has(svc_flags::LOCAL_ONLY) {
            return Err(DropReason::NoLocalBackend);
        }
        return reject::reply(ctx, flow, origin != Origin::Host);
    }
    let choice = lb::select(&fe, flow.saddr, lb::hash(flow), now)?;
    // Policy judges the backend, never the VIP; a denied flow gets no
    // conntrack entries.
    gate.admit(ctx, choice.backend.address, choice.backend.port)?;
    let config = config();

    let mut entry = Ct4Entry {
        last_seen_ns: now,
        created_ns: now,
        orig_saddr: flow.saddr,
        orig_daddr: flow.daddr,
        orig_sport: flow.sport,
        orig_dport: flow.dport,
        backend_addr: choice.backend.address,
        backend_port: choice.backend.port,
        backend_id: choice.id,
        // SAFETY: the skb pointer is the program's context.
        ifindex: unsafe { (*ctx.skb.skb).ifindex },
        rev_nat_index: fe.svc.rev_nat_index,
        nat_flags: nat_flags::DNAT,
        flags: origin.ct_flag(),
        proto: flow.proto,
        ..Ct4Entry::default()
    };
    if choice.backend.local != 0 {
        entry.flags |= ct_flags::LOCAL_BACKEND;
    }
    if fe.key.scope == weir_common::lb::SCOPE_INTERNAL {
        entry.flags |= ct_flags::INTERNAL_SCOPE;
    }
    let mut first_port = 0;
    if origin == Origin::Pod && choice.backend.address == flow.saddr {
        // Hairpin: the pod reaches itself. It must not see a packet from its
        // own address, so the source becomes the hairpin address (keeping
        // the client port when it is free).
        entry.nat_flags |= nat_flags::SNAT | nat_flags::HAIRPIN;
        entry.snat_addr = config.hairpin_addr();
        first_port = flow.sport;
    } else if origin == Origin::Netdev
        && !fe.has(svc_flags::LOCAL_ONLY)
        && choice.backend.local == 0
    {
        // externalTrafficPolicy=Cluster to another node: SNAT to this node
        // so the replies come back here for reverse NAT.
        entry.nat_flags |= nat_flags::SNAT;
        entry.snat_addr = if config.node_ipv4 != 0 {
            config.node_ipv4
        } else if fe.has(svc_flags::NODE_PORT) {
            flow.daddr
        } else {
            return Err(DropReason::SnatNoAddress);
        };
    }
    let entry = ct::create(entry, flow, &config, first_port)?;
    translate(ctx, flow, origin, &entry)
}

/// Applies a flow's forward translation and delivers the packet.
#[inline(always)]
fn translate(
    ctx: &TcContext,
    flow: &mut Flow,
    origin: Origin,
    entry: &Ct4Entry,
) -> Result<Action, DropReason> {
    nat::forward(ctx, flow, entry)?;
    let snat_to_node =
        entry.nat_flags & nat_flags::SNAT != 0 && entry.nat_flags & nat_flags::HAIRPIN == 0;
    deliver(ctx, flow, origin, snat_to_node || origin == Origin::Host)
}

/// Delivers a translated packet: to a local pod directly, through the FIB
/// when the stack must not see it (`via_fib`), a pod's packet for another
/// node by host routing where the stack would forward it unchanged, else
/// up the stack.
#[inline(always)]
fn deliver(
    ctx: &TcContext,
    flow: &Flow,
    origin: Origin,
    via_fib: bool,
) -> Result<Action, DropReason> {
    if let Some(ep) = redirect::local_endpoint(flow.daddr) {
        return redirect::to_endpoint(ctx, flow, &ep, origin.routed());
    }
    if via_fib {
        return redirect::via_fib(ctx, flow, origin.routed());
    }
    if origin == Origin::Pod {
        return redirect::host_route(ctx, flow);
    }
    Ok(Action::Pass)
}
