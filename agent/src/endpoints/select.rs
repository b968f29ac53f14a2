//! Which endpoints a frontend uses, as kube-proxy decides it
//! (`pkg/proxy/topology.go`, `CategorizeEndpoints`; topology hints are not
//! implemented):
//!
//! - cluster endpoints: the ready ones; if there are none, the ones that
//!   are serving and terminating; else none (new flows are rejected);
//! - local endpoints (a traffic policy of Local): the same rule applied to
//!   the endpoints on this node only, so a node with only terminating local
//!   endpoints uses those even when other nodes have ready ones.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::{Conditions, Endpoint};
use crate::plan::{Backend, Protocol};

/// One endpoint address for one Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub address: Ipv4Addr,
    pub port: u16,
    pub conditions: Conditions,
    /// The endpoint runs on this node.
    pub local: bool,
}

/// The endpoints serving Service port (`port_name`, `protocol`), one per
/// (address, port), sorted. Of duplicates (the same address in several
/// slices) the first is kept, unless a later one is local, as kube-proxy
/// does.
pub fn candidates(
    endpoints: &[Endpoint],
    port_name: &str,
    protocol: Protocol,
    node_name: &str,
) -> Vec<Candidate> {
    let mut unique: BTreeMap<(Ipv4Addr, u16), Candidate> = BTreeMap::new();
    for endpoint in endpoints {
        let Some(port) = endpoint.port(port_name, protocol) else {
            continue;
        };
        let candidate = Candidate {
            address: endpoint.address,
            port,
            conditions: endpoint.conditions,
            local: endpoint.node_name.as_deref() == Some(node_name),
        };
        unique
            .entry((candidate.address, candidate.port))
            .and_modify(|kept| {
                if candidate.local {
                    *kept = candidate;
                }
            })
            .or_insert(candidate);
    }
    unique.into_values().collect()
}

/// Backends for a Cluster traffic policy.
pub fn cluster(candidates: &[Candidate]) -> Vec<Backend> {
    choose(candidates.iter())
}

/// Backends for a Local traffic policy: this node's endpoints only.
pub fn local(candidates: &[Candidate]) -> Vec<Backend> {
    choose(candidates.iter().filter(|c| c.local))
}

/// Ready ones; else serving and terminating ones (flagged terminating).
fn choose<'c>(candidates: impl Iterator<Item = &'c Candidate> + Clone) -> Vec<Backend> {
    let ready: Vec<Backend> = candidates
        .clone()
        .filter(|c| c.conditions.ready)
        .map(|c| backend(c, false))
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    candidates
        .filter(|c| c.conditions.serving && c.conditions.terminating)
        .map(|c| backend(c, true))
        .collect()
}

fn backend(c: &Candidate, terminating: bool) -> Backend {
    Backend {
        address: c.address,
        port: c.port,
        terminating,
        local: c.local,
    }
}
