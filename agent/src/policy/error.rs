//! What the compiler could not honour, per object, with where and why.

use std::fmt;
use std::net::Ipv4Addr;

use crate::k8s::{ObjectKey, ObjectWarning};

/// One problem in one object. The rest of the object, and every other
/// object, still compiles; see [`super`] for what a bad part turns into.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyError {
    pub object: ObjectKey,
    /// The field, as in `kubectl explain`: `spec.ingress[0].from[1].ipBlock`.
    pub path: String,
    pub problem: Problem,
}

impl PolicyError {
    pub fn new(object: ObjectKey, path: impl Into<String>, problem: Problem) -> Self {
        Self {
            object,
            path: path.into(),
            problem,
        }
    }
}

impl From<&PolicyError> for ObjectWarning {
    /// For the daemon's per-object warning log, next to the Service ones.
    fn from(error: &PolicyError) -> Self {
        ObjectWarning::new(
            error.object.clone(),
            format!("{}: {}", error.path, error.problem),
        )
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.path, self.problem)
    }
}

impl std::error::Error for PolicyError {}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub enum Problem {
    #[error("unknown operator {operator:?} for key {key:?} (In, NotIn, Exists, DoesNotExist)")]
    UnknownOperator { key: String, operator: String },
    #[error("operator {operator} for key {key:?} needs at least one value")]
    MissingValues { key: String, operator: String },
    #[error("operator {operator} for key {key:?} takes no values")]
    UnexpectedValues { key: String, operator: String },
    #[error("empty label key")]
    EmptyKey,
    #[error("invalid CIDR {0:?}")]
    InvalidCidr(String),
    #[error("except {except} is not a strict subset of cidr {cidr}")]
    ExceptOutsideCidr { except: String, cidr: String },
    #[error("a peer needs podSelector, namespaceSelector or ipBlock")]
    EmptyPeer,
    #[error("ipBlock cannot be combined with podSelector or namespaceSelector")]
    IpBlockWithSelector,
    #[error("unknown protocol {0:?} (TCP, UDP, SCTP)")]
    UnknownProtocol(String),
    #[error("port {0} out of range 1..=65535")]
    PortOutOfRange(i32),
    #[error("empty port name")]
    EmptyPortName,
    #[error("endPort {end_port} is below port {port}")]
    EndPortBelowPort { port: i32, end_port: i32 },
    #[error("endPort needs a numeric port")]
    EndPortWithoutNumericPort,
    #[error("unknown policy type {0:?} (Ingress, Egress)")]
    UnknownPolicyType(String),
    #[error("unparsable pod IP {0:?}")]
    InvalidPodIp(String),
    #[error("pod IP {ip} is also used by {other}; the first by name keeps it")]
    DuplicatePodIp { ip: Ipv4Addr, other: String },
    #[error("no identity left for this {0}")]
    IdentitiesExhausted(&'static str),
}
