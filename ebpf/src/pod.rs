//! Programs on a pod's host-side veth: `weir_from_pod` on its TC ingress
//! (packets leaving the pod) and `weir_to_pod` on its TC egress (packets
//! entering the pod).

use aya_ebpf::{macros::classifier, programs::TcContext};
use weir_common::{DropReason, metrics::Direction};

use crate::{
    parse::{self, L3},
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

/// Service translation of the pod's new flows, the pod's side of
/// established ones, and reverse NAT of replies the pod sends as a backend.
fn try_from_pod(ctx: &TcContext) -> Result<Action, DropReason> {
    match parse::packet(ctx)? {
        L3::Ipv4(mut flow) => service::process(ctx, &mut flow, Origin::Pod),
        L3::Other => Ok(Action::Pass),
    }
}

/// Validates and counts; the pod's ingress policy (next issue) goes here.
fn try_to_pod(ctx: &TcContext) -> Result<Action, DropReason> {
    parse::packet(ctx)?;
    Ok(Action::Pass)
}
