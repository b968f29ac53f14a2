//! rtnetlink primitives on one handle (= one network namespace).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use futures::TryStreamExt;
use ipnetwork::Ipv4Network;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::{NetError, errno_of, format_mac};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub mac: String,
    pub up: bool,
}

impl LinkState {
    fn from_message(msg: &LinkMessage) -> Self {
        let mut state = LinkState {
            index: msg.header.index,
            name: String::new(),
            mac: String::new(),
            up: msg.header.flags.contains(LinkFlags::Up),
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => state.name.clone_from(name),
                LinkAttribute::Address(mac) => state.mac = format_mac(mac),
                _ => {}
            }
        }
        state
    }
}

/// The link called `name`, or `None` if there is none.
pub async fn get_link(handle: &Handle, name: &str) -> Result<Option<LinkState>, NetError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(LinkState::from_message(&msg))),
        Ok(None) => Ok(None),
        Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(NetError::netlink(format!("look up interface {name}"), e)),
    }
}

/// Creates a veth pair with `host` (up) in this namespace and `peer`
/// directly in the namespace `peer_netns`. One netlink request: the peer
/// never exists under a temporary name. The peer stays down here: the
/// kernel refuses IFF_UP for a peer created in another netns (ENOTCONN);
/// the netns thread brings it up.
pub async fn create_veth(
    handle: &Handle,
    host: &str,
    peer: &str,
    peer_netns: BorrowedFd<'_>,
    mtu: Option<u32>,
) -> Result<(), rtnetlink::Error> {
    let mut peer_msg = LinkUnspec::new_with_name(peer).setns_by_fd(peer_netns.as_raw_fd());
    if let Some(mtu) = mtu {
        peer_msg = peer_msg.mtu(mtu);
    }
    let mut host_msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host.to_string())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())))
        .up();
    if let Some(mtu) = mtu {
        host_msg = host_msg.mtu(mtu);
    }
    handle.link().add(host_msg.build()).execute().await
}

pub async fn set_up(handle: &Handle, link: &LinkState) -> Result<(), NetError> {
    let msg = LinkUnspec::new_with_index(link.index).up().build();
    handle
        .link()
        .set(msg)
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("set interface {} up", link.name), e))
}

/// Deletes the link called `name`; `Ok(false)` if it did not exist.
pub async fn delete_link(handle: &Handle, name: &str) -> Result<bool, NetError> {
    let Some(link) = get_link(handle, name).await? else {
        return Ok(false);
    };
    match handle.link().del(link.index).execute().await {
        Ok(()) => Ok(true),
        // Gone meanwhile (e.g. its peer's netns was just destroyed).
        Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(NetError::netlink(format!("delete interface {name}"), e)),
    }
}

/// Adds `ip/prefix` to the link; an address already present is fine.
pub async fn add_address(
    handle: &Handle,
    link: &LinkState,
    ip: Ipv4Addr,
    prefix: u8,
) -> Result<(), NetError> {
    match handle
        .address()
        .add(link.index, IpAddr::V4(ip), prefix)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if errno_of(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(NetError::netlink(
            format!("add address {ip}/{prefix} to {}", link.name),
            e,
        )),
    }
}

/// IPv4 addresses (with prefix length) on the link.
pub async fn addresses(handle: &Handle, link: &LinkState) -> Result<Vec<(Ipv4Addr, u8)>, NetError> {
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(link.index)
        .execute();
    let mut found = Vec::new();
    loop {
        let msg: Option<AddressMessage> = stream
            .try_next()
            .await
            .map_err(|e| NetError::netlink(format!("list addresses of {}", link.name), e))?;
        let Some(msg) = msg else { break };
        if msg.header.index != link.index || msg.header.family != AddressFamily::Inet {
            continue;
        }
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        let address = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        if let Some(ip) = local.or(address) {
            found.push((ip, msg.header.prefix_len));
        }
    }
    Ok(found)
}

/// A route in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: Ipv4Network,
    pub gateway: Option<Ipv4Addr>,
    pub oif: u32,
    /// On-link (scope link) rather than universe.
    pub link_scope: bool,
    pub src: Option<Ipv4Addr>,
}

impl RouteSpec {
    fn message(&self) -> RouteMessage {
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(self.dst.network(), self.dst.prefix())
            .output_interface(self.oif);
        if self.link_scope {
            builder = builder.scope(RouteScope::Link);
        }
        if let Some(gw) = self.gateway {
            builder = builder.gateway(gw);
        }
        if let Some(src) = self.src {
            builder = builder.pref_source(src);
        }
        builder.build()
    }

    fn describe(&self) -> String {
        let mut text = self.dst.to_string();
        if let Some(gw) = self.gateway {
            text.push_str(&format!(" via {gw}"));
        }
        text.push_str(&format!(" (ifindex {})", self.oif));
        text
    }
}

/// Adds or replaces a route (replace: a stale route to the same
/// destination must not block a new pod that now owns the address).
pub async fn replace_route(handle: &Handle, route: &RouteSpec) -> Result<(), NetError> {
    handle
        .route()
        .add(route.message())
        .replace()
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("add route {}", route.describe()), e))
}

/// A route as the kernel reports it (main table, IPv4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRoute {
    pub dst: Ipv4Network,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

pub async fn main_table_routes(handle: &Handle) -> Result<Vec<LiveRoute>, NetError> {
    let mut stream = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    let mut found = Vec::new();
    loop {
        let msg = stream
            .try_next()
            .await
            .map_err(|e| NetError::netlink("list IPv4 routes", e))?;
        let Some(msg) = msg else { break };
        let mut table = u32::from(msg.header.table);
        let mut dst = None;
        let mut gateway = None;
        let mut oif = None;
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
                RouteAttribute::Oif(index) => oif = Some(*index),
                _ => {}
            }
        }
        if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
            continue;
        }
        let dst = dst.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let Ok(dst) = Ipv4Network::new(dst, msg.header.destination_prefix_length) else {
            continue;
        };
        found.push(LiveRoute { dst, gateway, oif });
    }
    Ok(found)
}
