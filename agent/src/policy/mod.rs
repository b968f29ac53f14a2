//! NetworkPolicy compiler: Kubernetes objects → a [`PolicyPlan`] of
//! identities, ipcache entries and per-endpoint allow entries, which a
//! writer diffs ([`diff`]) into the maps of `weir_common::policy`.
//! `docs/policy.md` describes the datapath model.
//!
//! Pure and panic-free: bad input is reported per object
//! ([`PolicyError`]) and fails closed, and the rest still compiles.

mod cluster;
mod compile;
pub mod diff;
mod endpoints;
pub mod error;
pub mod identity;
mod ipcache;
pub mod peers;
pub mod plan;
pub mod ports;
mod rules;
pub mod selector;
mod verdict;

#[cfg(test)]
mod tests;

pub use cluster::{AUDIT_ANNOTATION, NAMESPACE_NAME_LABEL};
pub use compile::{PolicyCompiler, PolicyContext};
pub use diff::{MapChanges, PolicyDiff};
pub use endpoints::RULE_ID_UNNAMED;
pub use error::{PolicyError, Problem};
pub use plan::{
    Capacities, Direction, DirectionPolicy, EndpointPolicy, PeerPort, PlanStats, PolicyPlan,
    RuleIndex, RuleRef,
};
pub use verdict::Verdict;
