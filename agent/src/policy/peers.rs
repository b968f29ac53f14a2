//! NetworkPolicy peers: pod/namespace selectors and ipBlocks.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::Ipv4Network;
use k8s_openapi::api::networking::v1::{IPBlock, NetworkPolicyPeer};

use super::error::Problem;
use super::selector::Selector;

/// One entry of `from`/`to`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Pods matching `pods` in the namespaces `namespaces` picks (a peer
    /// with both selectors is their AND).
    Pods {
        namespaces: Namespaces,
        pods: Selector,
    },
    Block(CidrBlock),
    /// An IPv6 ipBlock: no IPv4 address matches it.
    Nothing,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Namespaces {
    /// No namespaceSelector: the policy's own namespace.
    Own(String),
    Matching(Selector),
}

/// An ipBlock: `cidr` minus the `except` prefixes (each strictly inside).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CidrBlock {
    pub cidr: Ipv4Network,
    pub except: Vec<Ipv4Network>,
}

impl CidrBlock {
    /// Whether every address of `prefix` is in the block. Prefixes of one
    /// ipcache are nested or disjoint, so this decides whether the block
    /// allows the CIDR identity of `prefix`: addresses under an except
    /// resolve to the except's (or a longer) prefix, never to this one.
    pub fn allows_prefix(&self, prefix: Ipv4Network) -> bool {
        prefix.is_subnet_of(self.cidr) && !self.except.iter().any(|e| prefix.is_subnet_of(*e))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.cidr.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }

    /// The prefixes the ipcache needs for this block.
    pub fn prefixes(&self) -> impl Iterator<Item = Ipv4Network> + '_ {
        std::iter::once(self.cidr).chain(self.except.iter().copied())
    }
}

/// Where in the peer a problem is (`ipBlock.except[1]`), and what.
pub type PeerError = (String, Problem);

pub fn parse_peer(peer: &NetworkPolicyPeer, policy_namespace: &str) -> Result<Peer, PeerError> {
    if let Some(block) = &peer.ip_block {
        if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
            return Err((String::new(), Problem::IpBlockWithSelector));
        }
        return parse_ip_block(block);
    }
    let namespaces = match &peer.namespace_selector {
        None if peer.pod_selector.is_none() => return Err((String::new(), Problem::EmptyPeer)),
        None => Namespaces::Own(policy_namespace.to_string()),
        Some(selector) => Namespaces::Matching(
            Selector::parse(selector).map_err(|(at, p)| (format!("namespaceSelector.{at}"), p))?,
        ),
    };
    let pods = match &peer.pod_selector {
        None => Selector::everything(),
        Some(selector) => {
            Selector::parse(selector).map_err(|(at, p)| (format!("podSelector.{at}"), p))?
        }
    };
    Ok(Peer::Pods { namespaces, pods })
}

pub fn parse_ip_block(block: &IPBlock) -> Result<Peer, PeerError> {
    let cidr = match parse_cidr(&block.cidr) {
        Ok(Cidr::V4(cidr)) => cidr,
        Ok(Cidr::V6) => return Ok(Peer::Nothing),
        Err(problem) => return Err(("ipBlock.cidr".into(), problem)),
    };
    let mut except = Vec::new();
    for (i, text) in block.except.iter().flatten().enumerate() {
        let at = || format!("ipBlock.except[{i}]");
        let outside = || Problem::ExceptOutsideCidr {
            except: text.clone(),
            cidr: block.cidr.clone(),
        };
        match parse_cidr(text).map_err(|p| (at(), p))? {
            Cidr::V4(e) if e.is_subnet_of(cidr) && e.prefix() > cidr.prefix() => except.push(e),
            _ => return Err((at(), outside())),
        }
    }
    except.sort();
    except.dedup();
    Ok(Peer::Block(CidrBlock { cidr, except }))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cidr {
    V4(Ipv4Network),
    V6,
}

/// `a.b.c.d/len` with host bits cleared (Kubernetes accepts them set), or
/// an IPv6 CIDR. Stricter than `Ipv4Network::from_str`: no bare address,
/// no netmask form.
pub fn parse_cidr(text: &str) -> Result<Cidr, Problem> {
    let bad = || Problem::InvalidCidr(text.to_string());
    let (addr, len) = text.split_once('/').ok_or_else(bad)?;
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let len: u8 = len.parse().map_err(|_| bad())?;
    if let Ok(addr) = addr.parse::<Ipv4Addr>() {
        let network = Ipv4Network::new(addr, len).map_err(|_| bad())?;
        let network = Ipv4Network::new(network.network(), len).map_err(|_| bad())?;
        return Ok(Cidr::V4(network));
    }
    match addr.parse::<Ipv6Addr>() {
        Ok(_) if len <= 128 => Ok(Cidr::V6),
        _ => Err(bad()),
    }
}
