//! The network config on stdin: one plugin config with `name` and
//! `cniVersion` filled in by the runtime, host-local compatible `ipam`.
//!
//! Parsed by hand from a `serde_json::Value` so every error names the exact
//! key (`ipam.ranges[0][1].rangeStart`), and no input can panic.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnetwork::Ipv4Network;
use serde_json::{Map, Value};

use crate::cni_args::parse_requested_ip;
use crate::env::is_valid_identifier;
use crate::error::CniError;
use crate::ipam::{Attachment, Range, RangeSet};
use crate::version::CniVersion;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// A route to install in the pod, via `gw` or the range's gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConf {
    pub dst: Ipv4Network,
    pub gw: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConf {
    pub range_sets: Vec<RangeSet>,
    pub routes: Vec<RouteConf>,
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: CniVersion,
    pub name: String,
    pub ipam: IpamConf,
    /// The agent's socket; registration with it comes with the agent.
    pub agent_socket: Option<PathBuf>,
    pub mtu: Option<u32>,
    /// From `args.cni.ips` and the `ips` capability (`runtimeConfig.ips`).
    pub requested_ips: Vec<Ipv4Addr>,
    pub prev_result: Option<Value>,
    /// GC's `cni.dev/valid-attachments`, when present.
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// The stdin document as JSON. Syntax errors are code 6.
pub fn parse_document(stdin: &[u8]) -> Result<Map<String, Value>, CniError> {
    match serde_json::from_slice::<Value>(stdin) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(CniError::decoding(
            "network config on stdin must be a JSON object",
        )),
        Err(e) => Err(CniError::decoding(format!(
            "cannot decode network config on stdin: {e}"
        ))),
    }
}

/// `cniVersion` as written, for echoing in error objects.
pub fn raw_version(doc: &Map<String, Value>) -> Option<&str> {
    doc.get("cniVersion").and_then(Value::as_str)
}

/// libcni's checks before any command: a valid network name.
pub fn check_name(doc: &Map<String, Value>) -> Result<String, CniError> {
    let name = opt_str(doc, "name", "")?.unwrap_or_default();
    if name.is_empty() {
        return Err(CniError::invalid_config(
            "missing network name (key \"name\")",
        ));
    }
    if !is_valid_identifier(name) {
        return Err(CniError::invalid_config(format!(
            "invalid characters found in network name {name:?} (allowed: [a-zA-Z0-9][a-zA-Z0-9_.-]*)"
        )));
    }
    Ok(name.to_string())
}

/// The whole config; call after [`check_name`] and the version check.
pub fn parse(doc: &Map<String, Value>, cni_version: CniVersion) -> Result<NetConf, CniError> {
    let name = check_name(doc)?;
    let ipam_obj = match doc.get("ipam") {
        Some(Value::Object(obj)) => obj,
        Some(_) => return Err(type_error("ipam", "an object")),
        None => return Err(CniError::invalid_config("missing key \"ipam\"")),
    };
    let ipam = parse_ipam(ipam_obj)?;
    let agent_socket = opt_str(doc, "agentSocket", "")?.map(PathBuf::from);
    if agent_socket
        .as_ref()
        .is_some_and(|p| p.as_os_str().is_empty())
    {
        return Err(CniError::invalid_config("agentSocket must not be empty"));
    }
    let mtu = match doc.get("mtu") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let mtu = v
                .as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .filter(|m| (68..=65535).contains(m))
                .ok_or_else(|| {
                    CniError::invalid_config(format!(
                        "mtu must be an integer from 68 to 65535, got {v}"
                    ))
                })?;
            Some(mtu)
        }
    };
    let mut requested_ips = Vec::new();
    if let Some(args) = opt_object(doc, "args", "")?
        && let Some(cni) = opt_object(args, "cni", "args.")?
    {
        requested_ips.extend(ip_list(cni, "ips", "args.cni.")?);
    }
    if let Some(rc) = opt_object(doc, "runtimeConfig", "")? {
        requested_ips.extend(ip_list(rc, "ips", "runtimeConfig.")?);
    }
    let prev_result = doc.get("prevResult").filter(|v| !v.is_null()).cloned();
    let valid_attachments = match doc.get("cni.dev/valid-attachments") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_attachments(v)?),
    };
    Ok(NetConf {
        cni_version,
        name,
        ipam,
        agent_socket,
        mtu,
        requested_ips,
        prev_result,
        valid_attachments,
    })
}

fn parse_ipam(ipam: &Map<String, Value>) -> Result<IpamConf, CniError> {
    if let Some(kind) = opt_str(ipam, "type", "ipam.")?
        && !matches!(kind, "" | "host-local" | "weir-cni")
    {
        return Err(CniError::unsupported_field(format!(
            "ipam.type {kind:?} is not supported: weir-cni has built-in host-local compatible IPAM (omit ipam.type or use \"host-local\")"
        )));
    }
    let mut range_sets = Vec::new();
    // host-local's legacy single-range form: subnet/rangeStart/... at ipam level.
    if ipam.contains_key("subnet") {
        let range = parse_range(ipam, "ipam.")?;
        range_sets.push(
            RangeSet::new(vec![range])
                .map_err(|e| CniError::invalid_config(format!("ipam: {e}")))?,
        );
    }
    match ipam.get("ranges") {
        None | Some(Value::Null) => {}
        Some(Value::Array(sets)) => {
            for (i, set) in sets.iter().enumerate() {
                let Value::Array(entries) = set else {
                    return Err(type_error(
                        &format!("ipam.ranges[{i}]"),
                        "an array of ranges",
                    ));
                };
                let mut ranges = Vec::new();
                for (j, entry) in entries.iter().enumerate() {
                    let ctx = format!("ipam.ranges[{i}][{j}].");
                    let Value::Object(obj) = entry else {
                        return Err(type_error(ctx.trim_end_matches('.'), "an object"));
                    };
                    ranges.push(parse_range(obj, &ctx)?);
                }
                let set = RangeSet::new(ranges)
                    .map_err(|e| CniError::invalid_config(format!("ipam.ranges[{i}]: {e}")))?;
                range_sets.push(set);
            }
        }
        Some(_) => return Err(type_error("ipam.ranges", "an array of range sets")),
    }
    if range_sets.is_empty() {
        return Err(CniError::invalid_config(
            "ipam has no address ranges (key \"ipam.ranges\")",
        ));
    }
    for (i, a) in range_sets.iter().enumerate() {
        for (j, b) in range_sets.iter().enumerate().skip(i + 1) {
            if a.overlaps(b) {
                return Err(CniError::invalid_config(format!(
                    "ipam: range set {i} ({a}) overlaps with range set {j} ({b})"
                )));
            }
        }
    }
    let mut routes = Vec::new();
    match ipam.get("routes") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let ctx = format!("ipam.routes[{i}].");
                let Value::Object(obj) = item else {
                    return Err(type_error(ctx.trim_end_matches('.'), "an object"));
                };
                let dst = opt_str(obj, "dst", &ctx)?
                    .ok_or_else(|| CniError::invalid_config(format!("missing key \"{ctx}dst\"")))?;
                let dst = parse_network(dst, &format!("{ctx}dst"))?;
                let gw = opt_str(obj, "gw", &ctx)?
                    .map(|gw| parse_ipv4(gw, &format!("{ctx}gw")))
                    .transpose()?;
                routes.push(RouteConf { dst, gw });
            }
        }
        Some(_) => return Err(type_error("ipam.routes", "an array")),
    }
    let data_dir = opt_str(ipam, "dataDir", "ipam.")?
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    if !data_dir.is_absolute() {
        return Err(CniError::invalid_config(format!(
            "ipam.dataDir {} must be an absolute path",
            data_dir.display()
        )));
    }
    Ok(IpamConf {
        range_sets,
        routes,
        data_dir,
    })
}

fn parse_range(obj: &Map<String, Value>, ctx: &str) -> Result<Range, CniError> {
    let subnet = opt_str(obj, "subnet", ctx)?
        .ok_or_else(|| CniError::invalid_config(format!("missing key \"{ctx}subnet\"")))?;
    let subnet = parse_network(subnet, &format!("{ctx}subnet"))?;
    let ip_key = |key: &str| -> Result<Option<Ipv4Addr>, CniError> {
        opt_str(obj, key, ctx)?
            .filter(|s| !s.is_empty())
            .map(|s| parse_ipv4(s, &format!("{ctx}{key}")))
            .transpose()
    };
    let start = ip_key("rangeStart")?;
    let end = ip_key("rangeEnd")?;
    let gateway = ip_key("gateway")?;
    Range::new(subnet, start, end, gateway)
        .map_err(|e| CniError::invalid_config(format!("{}: {e}", ctx.trim_end_matches('.'))))
}

fn parse_network(raw: &str, key: &str) -> Result<Ipv4Network, CniError> {
    if raw.contains(':') {
        return Err(CniError::invalid_config(format!(
            "{key} {raw:?} is IPv6; weir-cni supports IPv4 only"
        )));
    }
    let net: Ipv4Network = raw.parse().map_err(|_| {
        CniError::invalid_config(format!(
            "{key} {raw:?} is not an IPv4 CIDR (like 10.244.1.0/24)"
        ))
    })?;
    if !raw.contains('/') {
        return Err(CniError::invalid_config(format!(
            "{key} {raw:?} needs a prefix length (like 10.244.1.0/24)"
        )));
    }
    Ipv4Network::new(net.network(), net.prefix())
        .map_err(|e| CniError::invalid_config(format!("{key} {raw:?}: {e}")))
}

fn parse_ipv4(raw: &str, key: &str) -> Result<Ipv4Addr, CniError> {
    if raw.contains(':') {
        return Err(CniError::invalid_config(format!(
            "{key} {raw:?} is IPv6; weir-cni supports IPv4 only"
        )));
    }
    raw.parse()
        .map_err(|_| CniError::invalid_config(format!("{key} {raw:?} is not an IPv4 address")))
}

fn ip_list(obj: &Map<String, Value>, key: &str, ctx: &str) -> Result<Vec<Ipv4Addr>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let raw = item
                    .as_str()
                    .ok_or_else(|| type_error(&format!("{ctx}{key}[{i}]"), "a string"))?;
                parse_requested_ip(raw)
                    .map_err(|why| CniError::invalid_config(format!("{ctx}{key}[{i}]: {why}")))
            })
            .collect(),
        Some(_) => Err(type_error(&format!("{ctx}{key}"), "an array of strings")),
    }
}

fn parse_attachments(value: &Value) -> Result<Vec<Attachment>, CniError> {
    const KEY: &str = "cni.dev/valid-attachments";
    let Value::Array(items) = value else {
        return Err(type_error(KEY, "an array"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let ctx = format!("{KEY}[{i}].");
            let Value::Object(obj) = item else {
                return Err(type_error(ctx.trim_end_matches('.'), "an object"));
            };
            let id = opt_str(obj, "containerID", &ctx)?.unwrap_or_default();
            let ifname = opt_str(obj, "ifname", &ctx)?.unwrap_or_default();
            if id.is_empty() || ifname.is_empty() {
                return Err(CniError::invalid_config(format!(
                    "{ctx}containerID and {ctx}ifname are required"
                )));
            }
            Ok(Attachment::new(id, ifname))
        })
        .collect()
}

fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    ctx: &str,
) -> Result<Option<&'a str>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(type_error(&format!("{ctx}{key}"), "a string")),
    }
}

fn opt_object<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    ctx: &str,
) -> Result<Option<&'a Map<String, Value>>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(type_error(&format!("{ctx}{key}"), "an object")),
    }
}

fn type_error(key: &str, want: &str) -> CniError {
    CniError::invalid_config(format!("key \"{key}\" must be {want}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::error::ErrorCode;

    fn parse_value(v: Value) -> Result<NetConf, CniError> {
        let doc = parse_document(v.to_string().as_bytes())?;
        parse(&doc, CniVersion::V1_1_0)
    }

    fn base() -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": "weir",
            "type": "weir-cni",
            "ipam": {"ranges": [[{"subnet": "10.244.1.0/24"}]]}
        })
    }

    /// Sets the value at a JSON pointer, creating the last key if needed.
    fn with(mut v: Value, pointer: &str, value: Value) -> Value {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = v.pointer_mut(parent).unwrap();
        match parent {
            Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
            other => other[key] = value,
        }
        v
    }

    fn with_key(mut v: Value, key: &str, value: Value) -> Value {
        v[key] = value;
        v
    }

    fn err_of(v: Value) -> CniError {
        parse_value(v).unwrap_err()
    }

    #[test]
    fn full_example_parses() {
        let conf = parse_value(json!({
            "cniVersion": "1.1.0", "name": "weir", "type": "weir-cni",
            "ipam": {
                "ranges": [[{"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.10",
                             "rangeEnd": "10.244.1.20", "gateway": "10.244.1.1"}]],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.244.1.254"}],
                "dataDir": "/tmp/x"
            },
            "agentSocket": "/run/weir/agent.sock",
            "mtu": 1450,
            "args": {"cni": {"ips": ["10.244.1.15"]}},
            "runtimeConfig": {"ips": ["10.244.1.16/24"], "portMappings": []},
            "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
            "unknownKey": {"ignored": true}
        }))
        .unwrap();
        assert_eq!(conf.name, "weir");
        let r = &conf.ipam.range_sets[0].ranges[0];
        assert_eq!(r.start, Ipv4Addr::new(10, 244, 1, 10));
        assert_eq!(r.end, Ipv4Addr::new(10, 244, 1, 20));
        assert_eq!(conf.ipam.routes.len(), 2);
        assert_eq!(conf.ipam.routes[1].gw, Some(Ipv4Addr::new(10, 244, 1, 254)));
        assert_eq!(conf.ipam.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(
            conf.agent_socket,
            Some(PathBuf::from("/run/weir/agent.sock"))
        );
        assert_eq!(conf.mtu, Some(1450));
        assert_eq!(
            conf.requested_ips,
            vec![Ipv4Addr::new(10, 244, 1, 15), Ipv4Addr::new(10, 244, 1, 16)]
        );
        assert_eq!(
            conf.valid_attachments,
            Some(vec![Attachment::new("a", "eth0")])
        );
    }

    #[test]
    fn defaults() {
        let conf = parse_value(base()).unwrap();
        assert_eq!(conf.ipam.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(conf.agent_socket, None);
        assert_eq!(conf.mtu, None);
        assert!(conf.requested_ips.is_empty());
        assert!(conf.ipam.routes.is_empty());
        assert_eq!(conf.valid_attachments, None);
    }

    #[test]
    fn legacy_single_subnet_form() {
        let v = with(base(), "/ipam", json!({"subnet": "10.9.0.0/16"}));
        let conf = parse_value(v).unwrap();
        assert_eq!(conf.ipam.range_sets.len(), 1);
    }

    #[test]
    fn syntax_errors_are_code_6() {
        for raw in [&b"{"[..], b"", b"[1]", b"\"x\"", b"\xff"] {
            assert_eq!(parse_document(raw).unwrap_err().code, ErrorCode::Decoding);
        }
    }

    #[test]
    fn name_is_required_and_checked() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("name");
        assert_eq!(err_of(v).code, ErrorCode::InvalidNetworkConfig);
        let e = err_of(with(base(), "/name", json!("../etc")));
        assert_eq!(e.code, ErrorCode::InvalidNetworkConfig);
        assert!(e.msg.contains("../etc"));
    }

    #[test]
    fn invalid_configs_are_code_7_and_name_the_key() {
        let cases = [
            (with(base(), "/ipam", json!({})), "ipam.ranges"),
            (with(base(), "/ipam/ranges", json!([])), "ipam.ranges"),
            (with(base(), "/ipam/ranges", json!([[]])), "ipam.ranges[0]"),
            (with(base(), "/ipam/ranges", json!("x")), "ipam.ranges"),
            (
                with(base(), "/ipam/ranges/0/0/subnet", json!("10.244.1.0")),
                "ipam.ranges[0][0].subnet",
            ),
            (
                with(base(), "/ipam/ranges/0/0/subnet", json!("fd00::/64")),
                "IPv6",
            ),
            (
                with(base(), "/ipam/ranges/0/0/subnet", json!(12)),
                "ipam.ranges[0][0].subnet",
            ),
            (
                with(base(), "/ipam/ranges/0/0/subnet", json!("10.0.0.0/31")),
                "too small",
            ),
            (
                with(
                    base(),
                    "/ipam/ranges/0/0",
                    json!({"subnet": "10.244.1.0/24", "rangeStart": "10.244.2.1"}),
                ),
                "rangeStart",
            ),
            (
                with(
                    base(),
                    "/ipam/ranges/0/0",
                    json!({"subnet": "10.244.1.0/24", "gateway": "nope"}),
                ),
                "ipam.ranges[0][0].gateway",
            ),
            (
                with(
                    base(),
                    "/ipam/ranges",
                    json!([[{"subnet": "10.244.1.0/24"}], [{"subnet": "10.244.0.0/16"}]]),
                ),
                "overlaps",
            ),
            (
                with(
                    base(),
                    "/ipam/ranges",
                    json!([[{"subnet": "10.244.1.0/24"}, {"subnet": "10.244.1.0/25"}]]),
                ),
                "overlaps",
            ),
            (
                with(base(), "/ipam/routes", json!([{"gw": "10.0.0.1"}])),
                "ipam.routes[0].dst",
            ),
            (
                with(base(), "/ipam/routes", json!([{"dst": "::/0"}])),
                "IPv6",
            ),
            (
                with(base(), "/ipam/dataDir", json!("relative/dir")),
                "dataDir",
            ),
            (with(base(), "/ipam", json!(7)), "ipam"),
            (with(base(), "/mtu", json!(20)), "mtu"),
            (with(base(), "/mtu", json!("1500")), "mtu"),
            (with(base(), "/agentSocket", json!(1)), "agentSocket"),
            (
                with(base(), "/runtimeConfig", json!({"ips": ["x"]})),
                "runtimeConfig.ips[0]",
            ),
            (
                with(base(), "/runtimeConfig", json!({"ips": "10.0.0.1"})),
                "runtimeConfig.ips",
            ),
            (
                with(base(), "/args", json!({"cni": {"ips": [3]}})),
                "args.cni.ips[0]",
            ),
            (
                with_key(
                    base(),
                    "cni.dev/valid-attachments",
                    json!([{"containerID": "a"}]),
                ),
                "valid-attachments",
            ),
            (
                with_key(base(), "cni.dev/valid-attachments", json!({})),
                "valid-attachments",
            ),
        ];
        for (v, needle) in cases {
            let e = err_of(v.clone());
            assert_eq!(e.code, ErrorCode::InvalidNetworkConfig, "{v}: {e}");
            assert!(e.msg.contains(needle), "{v}: {} lacks {needle}", e.msg);
        }
        let mut no_ipam = base();
        no_ipam.as_object_mut().unwrap().remove("ipam");
        assert!(err_of(no_ipam).msg.contains("ipam"));
    }

    #[test]
    fn foreign_ipam_type_is_code_2() {
        let e = err_of(with(base(), "/ipam/type", json!("dhcp")));
        assert_eq!(e.code, ErrorCode::UnsupportedField);
        let mut v = base();
        v["ipam"]["type"] = json!("host-local");
        parse_value(v).unwrap();
    }

    fn json_strategy() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z0-9./:]{0,20}".prop_map(Value::String),
            Just(json!("10.244.1.0/24")),
            Just(json!("10.244.1.7")),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("ipam".to_string()),
                        Just("ranges".to_string()),
                        Just("subnet".to_string()),
                        Just("rangeStart".to_string()),
                        Just("rangeEnd".to_string()),
                        Just("gateway".to_string()),
                        Just("routes".to_string()),
                        Just("dst".to_string()),
                        Just("mtu".to_string()),
                        Just("name".to_string()),
                        Just("args".to_string()),
                        Just("cni".to_string()),
                        Just("ips".to_string()),
                        "[a-z]{1,5}",
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn valid_conf_strategy() -> impl Strategy<Value = (u8, u8, u8, u8, Option<u32>, bool)> {
        (
            0u8..=255,
            8u8..=30,
            0u8..=255,
            0u8..=255,
            proptest::option::of(68u32..=65535),
            any::<bool>(),
        )
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(doc) = parse_document(&raw) {
                let _ = check_name(&doc);
                let _ = parse(&doc, CniVersion::V1_0_0);
            }
        }

        #[test]
        fn arbitrary_json_never_panics(v in json_strategy()) {
            if let Ok(doc) = parse_document(v.to_string().as_bytes()) {
                let _ = parse(&doc, CniVersion::V1_1_0);
            }
        }

        #[test]
        fn arbitrary_ipam_sections_never_panic(ipam in json_strategy()) {
            let _ = parse_value(with(base(), "/ipam", ipam));
        }

        #[test]
        fn valid_configs_round_trip((a, prefix, b, c, mtu, with_route) in valid_conf_strategy()) {
            let subnet = Ipv4Network::new(Ipv4Addr::new(10, a, b, c), prefix).unwrap();
            let subnet = Ipv4Network::new(subnet.network(), prefix).unwrap();
            let mut v = json!({
                "cniVersion": "1.1.0", "name": "net-1", "type": "weir-cni",
                "ipam": {"ranges": [[{"subnet": subnet.to_string()}]], "dataDir": "/d"}
            });
            if let Some(mtu) = mtu { v["mtu"] = json!(mtu); }
            if with_route { v["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}]); }
            let conf = parse_value(v).unwrap();
            let range = &conf.ipam.range_sets[0].ranges[0];
            prop_assert_eq!(range.subnet, subnet);
            prop_assert_eq!(u32::from(range.start), u32::from(subnet.network()) + 1);
            prop_assert_eq!(u32::from(range.end), u32::from(subnet.broadcast()) - 1);
            prop_assert_eq!(range.gateway, range.start);
            prop_assert_eq!(conf.mtu, mtu);
            prop_assert_eq!(conf.ipam.routes.len(), usize::from(with_route));
        }
    }
}
