//! The one place where a TC program's result becomes a verdict, so no error
//! is ever swallowed: every packet is counted under exactly one reason.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    programs::TcContext,
};
use weir_common::{DropReason, metrics::Direction};

use crate::metrics;

/// What a program decided for a packet it did not drop.
pub enum Action {
    /// Continue in the stack (possibly translated).
    Pass,
    /// A redirect helper was called successfully; TC must redirect.
    Redirect,
    /// The packet was turned into a reject reply (TCP RST / ICMP port
    /// unreachable) and redirected back: counted under `NoBackend`.
    Rejected,
}

#[inline(always)]
pub fn tc(ctx: &TcContext, direction: Direction, result: Result<Action, DropReason>) -> i32 {
    let (reason, code) = match result {
        Ok(Action::Pass) => (DropReason::Forwarded, TC_ACT_OK),
        Ok(Action::Redirect) => (DropReason::Forwarded, TC_ACT_REDIRECT),
        Ok(Action::Rejected) => (DropReason::NoBackend, TC_ACT_REDIRECT),
        Err(reason) => (reason, TC_ACT_SHOT),
    };
    metrics::count(direction, reason, ctx.len());
    code
}
