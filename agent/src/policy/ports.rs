//! NetworkPolicy ports: numeric, named and `endPort` ranges, and how they
//! become policy-map matches (protocol plus port prefix).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicyPort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weir_common::policy::port_prefixes;

use super::error::Problem;
use crate::endpoints::{parse_protocol, port_number};
use crate::plan::Protocol;

/// One entry of `ports`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortSpec {
    pub protocol: Protocol,
    pub port: Port,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Port {
    /// No `port`: every port of the protocol.
    Any,
    /// `port` alone (`first == last`) or `port..=endPort`.
    Range(u16, u16),
    /// A container port name, resolved per destination pod.
    Named(String),
}

/// A policy-map match: `proto` 0 is any protocol (and any port); otherwise
/// the top `port_bits` bits of `port` must match (0: any port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortMatch {
    pub proto: u8,
    pub port: u16,
    pub port_bits: u8,
}

impl PortMatch {
    /// An empty `ports`: everything.
    pub const ALL: PortMatch = PortMatch {
        proto: 0,
        port: 0,
        port_bits: 0,
    };

    pub const fn exact(protocol: Protocol, port: u16) -> Self {
        Self {
            proto: protocol.number(),
            port,
            port_bits: 16,
        }
    }
}

/// Where in the port a problem is (`endPort`), and what.
pub type PortError = (String, Problem);

pub fn parse_port(port: &NetworkPolicyPort) -> Result<PortSpec, PortError> {
    let protocol = match port.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(text) => parse_protocol(Some(text))
            .ok_or_else(|| ("protocol".into(), Problem::UnknownProtocol(text.into())))?,
    };
    let number = |n: i32| port_number(n).ok_or(Problem::PortOutOfRange(n));
    let spec = match (&port.port, port.end_port) {
        (None, None) => Port::Any,
        (None, Some(_)) | (Some(IntOrString::String(_)), Some(_)) => {
            return Err(("endPort".into(), Problem::EndPortWithoutNumericPort));
        }
        (Some(IntOrString::String(name)), None) if name.is_empty() => {
            return Err(("port".into(), Problem::EmptyPortName));
        }
        (Some(IntOrString::String(name)), None) => Port::Named(name.clone()),
        (Some(IntOrString::Int(first)), end) => {
            let first_port = number(*first).map_err(|p| ("port".to_string(), p))?;
            let last_port = match end {
                None => first_port,
                Some(end) if end < *first => {
                    let problem = Problem::EndPortBelowPort {
                        port: *first,
                        end_port: end,
                    };
                    return Err(("endPort".into(), problem));
                }
                Some(end) => number(end).map_err(|p| ("endPort".to_string(), p))?,
            };
            Port::Range(first_port, last_port)
        }
    };
    Ok(PortSpec {
        protocol,
        port: spec,
    })
}

impl PortSpec {
    /// The matches of a numeric or any-port spec; `None` for a named port,
    /// which needs the destination pod ([`NamedPorts`]).
    pub fn matches(&self) -> Option<Vec<PortMatch>> {
        let proto = self.protocol.number();
        match &self.port {
            Port::Any => Some(vec![PortMatch {
                proto,
                port: 0,
                port_bits: 0,
            }]),
            Port::Range(first, last) => Some(range_matches(proto, *first, *last).collect()),
            Port::Named(_) => None,
        }
    }
}

/// A port range as aligned prefixes: at most 30 entries for any range,
/// where expanding it would cost up to 65,535.
pub fn range_matches(proto: u8, first: u16, last: u16) -> impl Iterator<Item = PortMatch> {
    port_prefixes(first, last).map(move |(port, port_bits)| PortMatch {
        proto,
        port,
        port_bits,
    })
}

/// A pod's named container ports: (name, protocol) → number.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedPorts(Vec<(String, Protocol, u16)>);

impl NamedPorts {
    /// From the pod's containers and init containers (restartable init
    /// containers, i.e. sidecars, serve ports too).
    pub fn of(pod: &Pod) -> Self {
        let Some(spec) = pod.spec.as_ref() else {
            return Self::default();
        };
        let containers = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten());
        let mut ports: Vec<_> = containers
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let name = p.name.clone().filter(|n| !n.is_empty())?;
                let protocol = parse_protocol(p.protocol.as_deref())?;
                Some((name, protocol, port_number(p.container_port)?))
            })
            .collect();
        ports.sort();
        ports.dedup();
        Self(ports)
    }

    /// The number of `name` on one pod (names are unique per pod).
    pub fn get(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.numbers(name, protocol).next()
    }

    /// Every number of `name`: more than one when pods sharing an identity
    /// disagree ([`extend`](Self::extend)).
    pub fn numbers<'s>(
        &'s self,
        name: &'s str,
        protocol: Protocol,
    ) -> impl Iterator<Item = u16> + 's {
        self.0
            .iter()
            .filter(move |(n, p, _)| n == name && *p == protocol)
            .map(|(_, _, port)| *port)
    }

    /// Adds another pod's ports.
    pub fn extend(&mut self, other: &NamedPorts) {
        self.0.extend(other.0.iter().cloned());
        self.0.sort();
        self.0.dedup();
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
