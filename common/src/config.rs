//! Node-wide datapath settings: `weir_config_v1`, an array with one
//! [`DatapathConfig`] at index 0, written by the agent at start.

/// Hairpin source address used when [`DatapathConfig::hairpin_ipv4`] is 0:
/// 169.254.42.1 (link-local, like Cilium's loopback address), network order.
pub const HAIRPIN_IPV4_DEFAULT: u32 = u32::from_ne_bytes([169, 254, 42, 1]);

/// SNAT port range used when the config leaves it 0: above Linux's default
/// `ip_local_port_range` (32768–60999), so node sockets never collide with it.
pub const SNAT_PORT_MIN_DEFAULT: u16 = 61_000;
pub const SNAT_PORT_MAX_DEFAULT: u16 = 65_535;

/// Value of `weir_config_v1[0]`. Addresses in network byte order, ports in
/// host byte order (they are ranges, not packet fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathConfig {
    /// The node's IP on its uplink: the SNAT source for traffic from outside
    /// forwarded to a backend on another node (externalTrafficPolicy=Cluster).
    /// 0: NodePort frontends SNAT to their own address, other frontends that
    /// need SNAT are dropped (`snat_no_address`).
    pub node_ipv4: u32,
    /// Source address of hairpinned flows (a pod reaching itself through a
    /// service). 0: [`HAIRPIN_IPV4_DEFAULT`].
    pub hairpin_ipv4: u32,
    /// Inclusive SNAT port range, host byte order. 0: the defaults above.
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    /// Reserved, 0.
    pub flags: u32,
}

impl DatapathConfig {
    /// The hairpin address, with the default applied.
    pub const fn hairpin_addr(&self) -> u32 {
        if self.hairpin_ipv4 == 0 {
            HAIRPIN_IPV4_DEFAULT
        } else {
            self.hairpin_ipv4
        }
    }

    /// The SNAT port range `(min, span)`, with the defaults applied and a
    /// reversed range treated as unset. `span >= 1`.
    pub const fn snat_ports(&self) -> (u16, u32) {
        let (min, max) = if self.snat_port_min == 0
            || self.snat_port_max == 0
            || self.snat_port_min > self.snat_port_max
        {
            (SNAT_PORT_MIN_DEFAULT, SNAT_PORT_MAX_DEFAULT)
        } else {
            (self.snat_port_min, self.snat_port_max)
        };
        (min, (max - min) as u32 + 1)
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, no padding.
unsafe impl aya::Pod for DatapathConfig {}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layout_has_no_implicit_padding() {
        assert_eq!(size_of::<DatapathConfig>(), 16);
    }

    #[test]
    fn defaults_apply_to_unset_fields() {
        let unset = DatapathConfig::default();
        assert_eq!(unset.hairpin_addr().to_ne_bytes(), [169, 254, 42, 1]);
        assert_eq!(unset.snat_ports(), (61_000, 4_536));
        let reversed = DatapathConfig {
            snat_port_min: 2000,
            snat_port_max: 1000,
            ..unset
        };
        assert_eq!(reversed.snat_ports(), (61_000, 4_536));
        let one = DatapathConfig {
            snat_port_min: 1000,
            snat_port_max: 1000,
            ..unset
        };
        assert_eq!(one.snat_ports(), (1000, 1));
    }
}
