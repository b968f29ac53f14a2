//! The desired datapath state: what the control plane computes from the
//! Kubernetes objects and what the datapath writer makes the BPF maps equal
//! to. Plain data, deterministic order, no kernel types, so both sides are
//! unit-testable on their own.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

/// Everything one node's datapath should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    /// Sorted by (address, port, proto, scope); unique in that tuple.
    pub frontends: Vec<Frontend>,
    /// Routes to other nodes' pod CIDRs (native routing), sorted by CIDR.
    pub routes: Vec<NodeRoute>,
}

/// IP protocols a Service port can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The IP protocol number, as the datapath sees it.
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }
}

/// Who a frontend answers: traffic from outside the cluster, or from pods
/// and nodes inside it. Only services with xTP=Local have both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    External,
    Internal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrontendKind {
    ClusterIp,
    NodePort,
    LoadBalancer,
    ExternalIp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    #[default]
    Random,
    Maglev,
}

/// `namespace/name` and the port's name, for logs, metrics and events.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortRef {
    pub namespace: String,
    pub name: String,
    /// The Service port's `name` ("" when unnamed).
    pub port_name: String,
}

/// One (address, port, protocol, scope) a service answers on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontend {
    pub service: ServicePortRef,
    pub address: Ipv4Addr,
    pub port: u16,
    pub proto: Protocol,
    pub scope: Scope,
    pub kind: FrontendKind,
    /// Backends are node-local only (xTP=Local for this scope): keep the
    /// client address, never SNAT.
    pub local_only: bool,
    /// The service has a frontend in each scope with different backends.
    pub two_scopes: bool,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub affinity_timeout: Option<u32>,
    pub algorithm: Algorithm,
    /// The backends to use, already filtered (ready ones; serving and
    /// terminating ones only when no ready one exists; local ones only for
    /// `local_only`). Sorted by (address, port). Empty: reject new flows.
    pub backends: Vec<Backend>,
}

/// One endpoint address and its resolved target port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    pub address: Ipv4Addr,
    pub port: u16,
    /// Serving but terminating (used only because no ready endpoint exists).
    pub terminating: bool,
    /// A pod on this node.
    pub local: bool,
}

/// A route to another node's pod CIDR via that node's IP.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeRoute {
    pub node: String,
    pub pod_cidr: Ipv4Network,
    pub via: Ipv4Addr,
}
