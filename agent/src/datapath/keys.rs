//! The identities the writer allocates ids for, and their encoding into the
//! ABI's network-byte-order fields.

use std::net::Ipv4Addr;

use weir_common::lb::{Lb4Backend, Lb4Key, SCOPE_EXTERNAL, SCOPE_INTERNAL};

use crate::plan::{Frontend, Scope};

/// An IPv4 address as the datapath stores it: the octets in memory order.
pub fn addr_to_abi(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

pub fn addr_from_abi(addr: u32) -> Ipv4Addr {
    Ipv4Addr::from(addr.to_ne_bytes())
}

/// A port as the datapath stores it: network byte order.
pub fn port_to_abi(port: u16) -> u16 {
    port.to_be()
}

pub fn port_from_abi(port: u16) -> u16 {
    u16::from_be(port)
}

pub fn scope_to_abi(scope: Scope) -> u8 {
    match scope {
        Scope::External => SCOPE_EXTERNAL,
        Scope::Internal => SCOPE_INTERNAL,
    }
}

/// A backend's identity in `weir_lb4_backends_v1`: one id per (address,
/// port, protocol), shared by every frontend that uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey {
    pub address: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
}

impl BackendKey {
    pub fn from_abi(backend: &Lb4Backend) -> Self {
        Self {
            address: addr_from_abi(backend.address),
            port: port_from_abi(backend.port),
            proto: backend.proto,
        }
    }
}

/// A frontend's identity: one service-map entry set and one reverse-NAT
/// index per (address, port, protocol, scope). The scope is part of it
/// because the two scopes of a service have different backend sets, and
/// Maglev tables and affinity entries are keyed by the reverse-NAT index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrontendKey {
    pub address: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
    pub scope: u8,
}

impl FrontendKey {
    pub fn of(frontend: &Frontend) -> Self {
        Self {
            address: frontend.address,
            port: frontend.port,
            proto: frontend.proto.number(),
            scope: scope_to_abi(frontend.scope),
        }
    }

    pub fn from_abi(key: &Lb4Key) -> Self {
        Self {
            address: addr_from_abi(key.address),
            port: port_from_abi(key.dport),
            proto: key.proto,
            scope: key.scope,
        }
    }

    /// The service-map key of `slot` (0: the frontend entry).
    pub fn slot(&self, slot: u16) -> Lb4Key {
        Lb4Key {
            address: addr_to_abi(self.address),
            dport: port_to_abi(self.port),
            backend_slot: slot,
            proto: self.proto,
            scope: self.scope,
            pad: [0; 2],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_fields_are_in_network_byte_order() {
        let key = FrontendKey {
            address: Ipv4Addr::new(10, 96, 0, 1),
            port: 80,
            proto: 6,
            scope: SCOPE_INTERNAL,
        }
        .slot(3);
        assert_eq!(key.address.to_ne_bytes(), [10, 96, 0, 1]);
        assert_eq!(key.dport.to_ne_bytes(), [0, 80]);
        assert_eq!(key.backend_slot, 3);
        assert_eq!(FrontendKey::from_abi(&key).slot(3), key);
        assert_eq!(
            addr_from_abi(addr_to_abi(Ipv4Addr::new(1, 2, 3, 4))),
            Ipv4Addr::new(1, 2, 3, 4)
        );
        assert_eq!(port_from_abi(port_to_abi(8080)), 8080);
    }
}
