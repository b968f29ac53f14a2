//! The Kubernetes object model the control plane works on: the kinds the
//! agent knows, a [`Snapshot`] of them keyed by kind/namespace/name, and the
//! [`ObjectEvent`]s that sources feed into it.
//!
//! Two sources produce objects: the standalone manifest directory
//! ([`crate::manifests`], whole snapshots) and, later, the in-cluster
//! watcher (kube reflectors, mapped onto [`ObjectEvent`]s).

pub mod labels;
mod object;
mod snapshot;
mod warning;

pub use object::{Kind, Object, ObjectEvent, ObjectKey, ObjectName};
pub use snapshot::{ObjectCounts, Snapshot};
pub use warning::ObjectWarning;

#[cfg(test)]
pub(crate) mod test_support;
