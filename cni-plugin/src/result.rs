//! The ADD result, serialised per spec version, and `prevResult` parsing.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde_json::{Map, Value, json};

use crate::error::CniError;
use crate::version::CniVersion;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    /// The netns path for interfaces inside the container; `None` on the host.
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// The pod address with its range's prefix length (as ptp reports it;
    /// the interface itself carries a /32).
    pub address: Ipv4Network,
    pub gateway: Option<Ipv4Addr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Network,
    pub gw: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
}

impl CniResult {
    pub fn to_value(&self, version: CniVersion) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut obj = Map::new();
                obj.insert("name".into(), json!(i.name));
                obj.insert("mac".into(), json!(i.mac));
                if let Some(sandbox) = &i.sandbox {
                    obj.insert("sandbox".into(), json!(sandbox));
                }
                Value::Object(obj)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut obj = Map::new();
                // 0.4.0 results carry the IP family; 1.0.0 dropped it.
                if version == CniVersion::V0_4_0 {
                    obj.insert("version".into(), json!("4"));
                }
                obj.insert("address".into(), json!(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    obj.insert("gateway".into(), json!(gw.to_string()));
                }
                if let Some(idx) = ip.interface {
                    obj.insert("interface".into(), json!(idx));
                }
                Value::Object(obj)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut obj = Map::new();
                obj.insert("dst".into(), json!(r.dst.to_string()));
                if let Some(gw) = r.gw {
                    obj.insert("gw".into(), json!(gw.to_string()));
                }
                Value::Object(obj)
            })
            .collect();
        json!({
            "cniVersion": version.as_str(),
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": {},
        })
    }

    pub fn to_json(&self, version: CniVersion) -> String {
        serde_json::to_string_pretty(&self.to_value(version)).unwrap_or_default()
    }

    /// Reads a `prevResult` of any supported version. IPv6 entries (from
    /// another plugin in a chain) are skipped: they are not ours to check.
    pub fn parse_prev(value: &Value) -> Result<Self, CniError> {
        let Value::Object(obj) = value else {
            return Err(CniError::decoding("prevResult must be a JSON object"));
        };
        let mut result = CniResult::default();
        for (i, item) in array(obj, "interfaces")?.iter().enumerate() {
            let ctx = format!("prevResult.interfaces[{i}]");
            let name = string(item, "name", &ctx)?
                .ok_or_else(|| CniError::decoding(format!("{ctx}.name is missing")))?;
            result.interfaces.push(Interface {
                name: name.to_string(),
                mac: string(item, "mac", &ctx)?.unwrap_or_default().to_string(),
                sandbox: string(item, "sandbox", &ctx)?
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            });
        }
        for (i, item) in array(obj, "ips")?.iter().enumerate() {
            let ctx = format!("prevResult.ips[{i}]");
            let address = string(item, "address", &ctx)?
                .ok_or_else(|| CniError::decoding(format!("{ctx}.address is missing")))?;
            if address.contains(':') {
                continue;
            }
            let address: Ipv4Network = address.parse().map_err(|_| {
                CniError::decoding(format!("{ctx}.address {address:?} is not an IPv4 CIDR"))
            })?;
            let gateway = string(item, "gateway", &ctx)?
                .filter(|g| !g.is_empty())
                .map(|g| {
                    g.parse::<Ipv4Addr>().map_err(|_| {
                        CniError::decoding(format!("{ctx}.gateway {g:?} is not an IPv4 address"))
                    })
                })
                .transpose()?;
            let interface = match item.get("interface") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| {
                            CniError::decoding(format!("{ctx}.interface must be an index"))
                        })?,
                ),
            };
            result.ips.push(IpConfig {
                address,
                gateway,
                interface,
            });
        }
        for (i, item) in array(obj, "routes")?.iter().enumerate() {
            let ctx = format!("prevResult.routes[{i}]");
            let dst = string(item, "dst", &ctx)?
                .ok_or_else(|| CniError::decoding(format!("{ctx}.dst is missing")))?;
            if dst.contains(':') {
                continue;
            }
            let dst: Ipv4Network = dst.parse().map_err(|_| {
                CniError::decoding(format!("{ctx}.dst {dst:?} is not an IPv4 CIDR"))
            })?;
            let gw = string(item, "gw", &ctx)?
                .filter(|g| !g.is_empty())
                .map(|g| {
                    g.parse::<Ipv4Addr>().map_err(|_| {
                        CniError::decoding(format!("{ctx}.gw {g:?} is not an IPv4 address"))
                    })
                })
                .transpose()?;
            result.routes.push(Route { dst, gw });
        }
        Ok(result)
    }
}

fn array<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(CniError::decoding(format!(
            "prevResult.{key} must be an array"
        ))),
    }
}

fn string<'a>(item: &'a Value, key: &str, ctx: &str) -> Result<Option<&'a str>, CniError> {
    match item.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(CniError::decoding(format!("{ctx}.{key} must be a string"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::error::ErrorCode;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "weir0123456789a".into(),
                    mac: "aa:bb:cc:dd:ee:01".into(),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "aa:bb:cc:dd:ee:02".into(),
                    sandbox: Some("/run/netns/pod".into()),
                },
            ],
            ips: vec![IpConfig {
                address: "10.244.1.5/24".parse().unwrap(),
                gateway: Some(Ipv4Addr::new(10, 244, 1, 1)),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: None,
            }],
        }
    }

    #[test]
    fn v1_result_shape() {
        for version in [CniVersion::V1_0_0, CniVersion::V1_1_0] {
            let v = sample().to_value(version);
            assert_eq!(v["cniVersion"], version.as_str());
            assert_eq!(v["interfaces"][0]["name"], "weir0123456789a");
            assert!(v["interfaces"][0].get("sandbox").is_none());
            assert_eq!(v["interfaces"][1]["sandbox"], "/run/netns/pod");
            assert_eq!(v["interfaces"][1]["mac"], "aa:bb:cc:dd:ee:02");
            assert_eq!(v["ips"][0]["address"], "10.244.1.5/24");
            assert_eq!(v["ips"][0]["gateway"], "10.244.1.1");
            assert_eq!(v["ips"][0]["interface"], 1);
            assert!(v["ips"][0].get("version").is_none());
            assert_eq!(v["routes"][0]["dst"], "0.0.0.0/0");
            assert!(v["routes"][0].get("gw").is_none());
            assert_eq!(v["dns"], json!({}));
        }
    }

    #[test]
    fn v0_4_result_has_ip_version() {
        let v = sample().to_value(CniVersion::V0_4_0);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][0]["interface"], 1);
    }

    #[test]
    fn prev_result_round_trips_for_every_version() {
        for version in [CniVersion::V0_4_0, CniVersion::V1_0_0, CniVersion::V1_1_0] {
            let parsed = CniResult::parse_prev(&sample().to_value(version)).unwrap();
            assert_eq!(parsed, sample());
        }
    }

    #[test]
    fn prev_result_skips_ipv6_and_rejects_garbage() {
        let v = json!({"ips": [{"address": "fd00::5/64"}], "routes": [{"dst": "::/0"}]});
        assert_eq!(CniResult::parse_prev(&v).unwrap(), CniResult::default());
        for bad in [
            json!([]),
            json!({"ips": [{"address": "banana"}]}),
            json!({"ips": [{"address": "10.0.0.1/24", "interface": -1}]}),
            json!({"ips": {}}),
            json!({"interfaces": [{"mac": "x"}]}),
            json!({"routes": [{"dst": "10.0.0.0/8", "gw": 5}]}),
        ] {
            let e = CniResult::parse_prev(&bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::Decoding, "{bad}");
        }
    }
}
