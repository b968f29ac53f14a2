//! Programs on a pod's host-side veth: `from_pod` on its TC ingress (packets
//! leaving the pod) and `to_pod` on its TC egress (packets entering the pod).
//!
//! Today they validate and count; service translation and policy build on
//! the same `try_*` bodies.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use weir_common::{DropReason, metrics::Direction};

use crate::{metrics, parse};

#[classifier]
pub fn weir_from_pod(ctx: TcContext) -> i32 {
    verdict(&ctx, Direction::FromPod, try_from_pod(&ctx))
}

#[classifier]
pub fn weir_to_pod(ctx: TcContext) -> i32 {
    verdict(&ctx, Direction::ToPod, try_to_pod(&ctx))
}

fn try_from_pod(ctx: &TcContext) -> Result<(), DropReason> {
    parse::l3(ctx)?;
    Ok(())
}

fn try_to_pod(ctx: &TcContext) -> Result<(), DropReason> {
    parse::l3(ctx)?;
    Ok(())
}

/// The one place where a program's result becomes a TC verdict, so no error
/// is ever swallowed: every drop is counted under its reason.
#[inline(always)]
fn verdict(ctx: &TcContext, direction: Direction, result: Result<(), DropReason>) -> i32 {
    let reason = match result {
        Ok(()) => DropReason::Forwarded,
        Err(reason) => reason,
    };
    metrics::count(direction, reason, ctx.len());
    if reason.is_drop() {
        TC_ACT_SHOT
    } else {
        TC_ACT_OK
    }
}
