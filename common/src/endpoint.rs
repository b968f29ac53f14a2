//! Endpoint map ABI: `weir_endpoints_v1`, pod IP (`u32`, network byte order)
//! → [`EndpointInfo`]. The agent writes one entry per local pod when the CNI
//! registers it, and deletes it on DEL.
//!
//! The datapath uses it for local delivery: a packet whose (translated)
//! destination is a local pod is redirected straight to the egress of that
//! pod's host-side veth, with the MAC addresses below, so `weir_to_pod` still
//! sees it.

/// Bits of [`EndpointInfo::flags`].
pub mod ep_flags {
    /// A pod on this node, reachable through `ifindex`.
    pub const LOCAL_POD: u16 = 1 << 0;
    /// An address of the node itself (no `ifindex`); reserved for policy.
    pub const HOST: u16 = 1 << 1;
}

/// Value of `weir_endpoints_v1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Index of the pod's host-side veth, in the node's netns.
    pub ifindex: u32,
    /// [`ep_flags`] bits.
    pub flags: u16,
    pub pad: u16,
    /// Reserved for policy (next issue): the pod's identity. 0 today.
    pub identity: u32,
    /// MAC of the pod's `eth0` (the destination MAC of delivered frames).
    /// All zero: the datapath leaves delivery to the kernel's stack.
    pub mac: [u8; 6],
    /// MAC of the host-side veth (the source MAC of delivered frames).
    pub node_mac: [u8; 6],
}

#[cfg(feature = "user")]
// SAFETY: repr(C), integers and byte arrays with an explicit padding field,
// so every byte pattern is valid and none is uninit.
unsafe impl aya::Pod for EndpointInfo {}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layout_has_no_implicit_padding() {
        assert_eq!(size_of::<EndpointInfo>(), 24);
        assert_eq!(offset_of!(EndpointInfo, identity), 8);
        assert_eq!(offset_of!(EndpointInfo, mac), 12);
        assert_eq!(offset_of!(EndpointInfo, node_mac), 18);
    }
}
