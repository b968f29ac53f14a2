//! The node netns' links, read over rtnetlink (never from /sys, whose
//! mount may belong to another netns).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::Handle;

use super::rebuild::LiveLink;

fn live_link(message: &LinkMessage) -> LiveLink {
    let name = message
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_default();
    LiveLink {
        index: message.header.index,
        name,
    }
}

/// Every link of the netns this handle's socket lives in.
pub async fn list(handle: &Handle) -> anyhow::Result<Vec<LiveLink>> {
    let mut links = Vec::new();
    let mut dump = handle.link().get().execute();
    while let Some(message) = dump
        .try_next()
        .await
        .map_err(|e| anyhow::anyhow!("listing the node's links: {e}"))?
    {
        links.push(live_link(&message));
    }
    Ok(links)
}

/// The link with `index`, if there is one.
pub async fn by_index(handle: &Handle, index: u32) -> anyhow::Result<Option<LiveLink>> {
    // Read the reply to its end (dropping it early orphans the ACK).
    let reply: Result<Vec<LinkMessage>, _> = handle
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_collect()
        .await;
    match reply {
        Ok(messages) => Ok(messages.first().map(live_link)),
        Err(rtnetlink::Error::NetlinkError(e))
            if e.code.map(|c| c.get().abs()) == Some(libc::ENODEV) =>
        {
            Ok(None)
        }
        Err(e) => Err(anyhow::anyhow!("looking up link index {index}: {e}")),
    }
}

/// Every IPv4 address of the netns, deduplicated (each pod veth carries
/// the same gateway /32).
pub async fn ipv4_addresses(handle: &Handle) -> anyhow::Result<Vec<Ipv4Addr>> {
    let mut addresses = BTreeSet::new();
    let mut dump = handle.address().get().execute();
    while let Some(message) = dump
        .try_next()
        .await
        .map_err(|e| anyhow::anyhow!("listing the node's addresses: {e}"))?
    {
        for attribute in &message.attributes {
            if let AddressAttribute::Address(IpAddr::V4(ip)) = attribute {
                addresses.insert(*ip);
            }
        }
    }
    Ok(addresses.into_iter().collect())
}
