//! Programs on a pod's host-side veth: `weir_from_pod` on its TC ingress
//! (packets leaving the pod) and `weir_to_pod` on its TC egress (packets
//! entering the pod).

use aya_ebpf::{macros::classifier, programs::TcContext};
use weir_common::{DropReason, metrics::Direction};

use crate::{
    parse::{self, L3},
    policy,
    service::{self, Origin},
    verdict::{self, Action},
};

#[classifier]
pub fn weir_from_pod(ctx: TcContext) -> i32 {
    verdict::tc(&ctx, Direction::FromPod, try_from_pod(&ctx))
}

#[classifier]
pub fn weir_to_pod(ctx: TcContext) -> i32 {
    verdict::tc(&ctx, Direction::ToPod, try_to_pod(&ctx))
}

/// Anti-spoofing, the pod's egress policy (judged on the backend after
/// service DNAT), service translation of its new flows, its side of
/// established ones, and reverse NAT of replies it sends as a backend.
fn try_from_pod(ctx: &TcContext) -> Result<Action, DropReason> {
    let L3::Ipv4(mut flow) = parse::packet(ctx)? else {
        return Ok(Action::Pass);
    };
    policy::check_source(ctx, &flow)?;
    let mut gate = policy::egress(ctx, &flow)?;
    let action = service::process(ctx, &mut flow, Origin::Pod, &mut gate)?;
    // Still pending: no service translated the flow. A reject (a service
    // without backends) goes back to the pod as kube-proxy would send it.
    if !matches!(action, Action::Rejected) {
        gate.admit_untranslated(ctx)?;
    }
    Ok(action)
}

/// The pod's ingress policy: packets arrive translated (after DNAT).
fn try_to_pod(ctx: &TcContext) -> Result<Action, DropReason> {
    if let L3::Ipv4(flow) = parse::packet(ctx)? {
        policy::ingress(ctx, &flow)?;
    }
    Ok(Action::Pass)
}
