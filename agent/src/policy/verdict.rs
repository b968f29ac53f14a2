//! The datapath's decision, computed from a plan: the reference the eBPF
//! side is tested against, and the answer to "why was this dropped".
//!
//! For a new flow at a local endpoint, in one direction, with the peer's
//! address (the source for ingress, the destination after DNAT for egress):
//!
//! 1. Not isolated in that direction: allowed.
//! 2. Ingress from [`identity::HOST`] (this node): allowed.
//! 3. The ipcache gives the peer's identity and CIDR identity (longest
//!    prefix). The policy trie is looked up with the full key under the
//!    identity, then the CIDR identity, then [`identity::ANY`]: the first
//!    hit allows, naming its rule.
//! 4. No hit: dropped, naming the isolating policy.

use std::net::Ipv4Addr;

use weir_common::policy::{IpcacheEntry, identity};

use super::plan::{Direction, PolicyPlan};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The endpoint is not isolated in this direction.
    NotIsolated,
    /// Ingress from this node.
    FromHost,
    Allowed {
        rule_id: u32,
    },
    /// `default_deny`: no policy selecting the pod allows anything in this
    /// direction.
    Denied {
        isolated_by: u32,
        default_deny: bool,
    },
}

impl Verdict {
    pub fn is_allowed(self) -> bool {
        !matches!(self, Self::Denied { .. })
    }
}

impl PolicyPlan {
    /// The ipcache entry for `ip` (longest prefix; the plan always holds
    /// `0.0.0.0/0`).
    pub fn lookup_ip(&self, ip: Ipv4Addr) -> IpcacheEntry {
        (0..=32u8)
            .rev()
            .find_map(|len| {
                let prefix = ipnetwork::Ipv4Network::new(ip, len).ok()?;
                let prefix = ipnetwork::Ipv4Network::new(prefix.network(), len).ok()?;
                self.ipcache.get(&prefix).copied()
            })
            .unwrap_or(IpcacheEntry {
                identity: identity::WORLD,
                cidr_identity: identity::ANY,
            })
    }

    /// The verdict on a new flow; `None` when `endpoint` is not a local pod
    /// (no policy applies there).
    pub fn verdict(
        &self,
        endpoint: Ipv4Addr,
        direction: Direction,
        peer: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> Option<Verdict> {
        let policy = self.endpoints.get(&endpoint)?.direction(direction);
        let Some(isolated_by) = policy.isolated_by else {
            return Some(Verdict::NotIsolated);
        };
        let peer = self.lookup_ip(peer);
        if direction == Direction::Ingress && peer.identity == identity::HOST {
            return Some(Verdict::FromHost);
        }
        let mut identities = vec![peer.identity];
        if peer.cidr_identity != identity::ANY && peer.cidr_identity != peer.identity {
            identities.push(peer.cidr_identity);
        }
        identities.push(identity::ANY);
        for id in identities {
            let hit = policy.allows.iter().find(|(key, _)| {
                let m = key.port;
                key.identity == id
                    && (m.proto == 0
                        || (m.proto == proto
                            && u32::from(port ^ m.port)
                                .checked_shr(16 - u32::from(m.port_bits))
                                .unwrap_or(0)
                                == 0))
            });
            if let Some((_, rule_id)) = hit {
                return Some(Verdict::Allowed { rule_id: *rule_id });
            }
        }
        Some(Verdict::Denied {
            isolated_by,
            default_deny: policy.allows.is_empty(),
        })
    }
}
