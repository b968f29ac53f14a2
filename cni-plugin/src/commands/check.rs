//! CHECK: the live interface, addresses and routes (and the IPAM
//! reservation) must still match `prevResult`.

use std::net::Ipv4Addr;

use super::{Invocation, open_netns, open_store, store_error};
use crate::error::CniError;
use crate::ipam::{Attachment, Store};
use crate::naming::host_veth_name;
use crate::net::wiring::{self, Expected};
use crate::result::CniResult;

pub fn run(inv: &Invocation) -> Result<(), CniError> {
    let env = &inv.env;
    let prev = inv.conf.prev_result.as_ref().ok_or_else(|| {
        CniError::invalid_config("CHECK needs the ADD result in key \"prevResult\"")
    })?;
    let prev = CniResult::parse_prev(prev)?;
    let expected = expected_state(&prev, &env.container_id, &env.ifname)?;
    let netns = open_netns(&env.netns)?;

    let owner = Attachment::new(&env.container_id, &env.ifname);
    let held = open_store(&inv.conf)?
        .get_by_id(&owner)
        .map_err(store_error)?;
    for ip in &expected.ips {
        if !held.contains(ip) {
            return Err(CniError::internal(format!(
                "CHECK: IPAM has no reservation of {ip} for container {} ifname {}",
                env.container_id, env.ifname
            )));
        }
    }
    wiring::check(&netns, &expected).map_err(|e| CniError::internal(format!("CHECK: {e}")))
}

/// What prevResult says this attachment should look like.
pub fn expected_state(
    prev: &CniResult,
    container_id: &str,
    ifname: &str,
) -> Result<Expected, CniError> {
    let (index, iface) = prev
        .interfaces
        .iter()
        .enumerate()
        .find(|(_, i)| i.name == ifname && i.sandbox.is_some())
        .ok_or_else(|| {
            CniError::invalid_config(format!(
                "prevResult has no interface {ifname} inside a sandbox"
            ))
        })?;
    let ips: Vec<_> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none_or(|i| i == index))
        .collect();
    let Some(primary) = ips.first() else {
        return Err(CniError::invalid_config(format!(
            "prevResult has no IPv4 address for interface {ifname}"
        )));
    };
    let mut gateways: Vec<Ipv4Addr> = Vec::new();
    for gw in ips.iter().filter_map(|ip| ip.gateway) {
        if !gateways.contains(&gw) {
            gateways.push(gw);
        }
    }
    let mut routes = Vec::new();
    for route in &prev.routes {
        let via = route.gw.or(primary.gateway).ok_or_else(|| {
            CniError::invalid_config(format!(
                "prevResult route {} has no gateway and {} has none either",
                route.dst, primary.address
            ))
        })?;
        routes.push((route.dst, via));
    }
    Ok(Expected {
        host_name: host_veth_name(container_id, ifname),
        ifname: ifname.to_string(),
        mac: iface.mac.clone(),
        ips: ips.iter().map(|ip| ip.address.ip()).collect(),
        gateways,
        routes,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;
    use crate::error::ErrorCode;

    fn prev() -> CniResult {
        CniResult::parse_prev(&json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "weird35ac051242", "mac": "aa:aa:aa:aa:aa:01"},
                {"name": "eth0", "mac": "aa:aa:aa:aa:aa:02", "sandbox": "/run/netns/p"}
            ],
            "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.244.1.254"}],
            "dns": {}
        }))
        .unwrap()
    }

    #[test]
    fn expected_state_from_prev_result() {
        let e = expected_state(&prev(), "abc123", "eth0").unwrap();
        assert_eq!(e.host_name, "weird35ac051242");
        assert_eq!(e.mac, "aa:aa:aa:aa:aa:02");
        assert_eq!(e.ips, vec![Ipv4Addr::new(10, 244, 1, 5)]);
        assert_eq!(e.gateways, vec![Ipv4Addr::new(10, 244, 1, 1)]);
        assert_eq!(
            e.routes,
            vec![
                ("0.0.0.0/0".parse().unwrap(), Ipv4Addr::new(10, 244, 1, 1)),
                (
                    "192.168.0.0/16".parse().unwrap(),
                    Ipv4Addr::new(10, 244, 1, 254)
                ),
            ]
        );
    }

    #[test]
    fn prev_result_without_our_interface_is_rejected() {
        let err = expected_state(&prev(), "abc123", "eth1").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidNetworkConfig);
        assert!(err.msg.contains("eth1"));
    }

    #[test]
    fn prev_result_without_addresses_is_rejected() {
        let mut p = prev();
        p.ips.clear();
        assert!(expected_state(&p, "abc123", "eth0").is_err());
    }
}
