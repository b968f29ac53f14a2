//! CNI_ARGS (`K=V;K=V`), parsed with libcni's `LoadArgs` rules: every pair
//! must have exactly one '=', and unknown keys are an error unless
//! `IgnoreUnknown` is true (wherever it appears in the list).

use std::net::Ipv4Addr;

use crate::error::CniError;

/// The keys we understand. Kubernetes runtimes send the `K8S_*` ones with
/// `IgnoreUnknown=1`; `IP` requests addresses like host-local's `IP=` arg.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub ignore_unknown: bool,
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_infra_container_id: String,
    pub pod_uid: String,
    /// Requested addresses (`IP=10.0.0.5` or `IP=10.0.0.5,10.0.0.6`).
    pub ips: Vec<Ipv4Addr>,
}

/// Parses CNI_ARGS. Errors are code 4: CNI_ARGS is an environment variable.
pub fn parse(raw: &str) -> Result<CniArgs, CniError> {
    let mut args = CniArgs::default();
    if raw.is_empty() {
        return Ok(args);
    }
    let mut unknown = Vec::new();
    for pair in raw.split(';') {
        let mut parts = pair.split('=');
        let (Some(key), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CniError::invalid_env(format!(
                "CNI_ARGS: invalid pair {pair:?} (want KEY=VALUE)"
            )));
        };
        match key {
            "IgnoreUnknown" => args.ignore_unknown = parse_bool(value)?,
            "K8S_POD_NAMESPACE" => args.pod_namespace = value.to_string(),
            "K8S_POD_NAME" => args.pod_name = value.to_string(),
            "K8S_POD_INFRA_CONTAINER_ID" => args.pod_infra_container_id = value.to_string(),
            "K8S_POD_UID" => args.pod_uid = value.to_string(),
            "IP" => args.ips = parse_ips(value)?,
            _ => unknown.push(pair),
        }
    }
    if !unknown.is_empty() && !args.ignore_unknown {
        return Err(CniError::invalid_env(format!(
            "CNI_ARGS: unknown args {unknown:?} (set IgnoreUnknown=1 to ignore them)"
        )));
    }
    Ok(args)
}

/// libcni's `UnmarshallableBool`: 1/0/true/false, case-insensitive.
fn parse_bool(value: &str) -> Result<bool, CniError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(CniError::invalid_env(format!(
            "CNI_ARGS: IgnoreUnknown={value:?} is not a boolean (1, 0, true or false)"
        ))),
    }
}

fn parse_ips(value: &str) -> Result<Vec<Ipv4Addr>, CniError> {
    value
        .split(',')
        .map(|item| {
            parse_requested_ip(item.trim())
                .map_err(|why| CniError::invalid_env(format!("CNI_ARGS: IP={value:?}: {why}")))
        })
        .collect()
}

/// A requested address as host-local accepts it: `A.B.C.D` or `A.B.C.D/len`
/// (the prefix is ignored; the range decides it). IPv6 is not supported.
pub fn parse_requested_ip(item: &str) -> Result<Ipv4Addr, String> {
    let addr = match item.split_once('/') {
        Some((addr, prefix)) => {
            if prefix.parse::<u8>().ok().filter(|p| *p <= 32).is_none() {
                return Err(format!("{item:?} has an invalid prefix length"));
            }
            addr
        }
        None => item,
    };
    if addr.contains(':') {
        return Err(format!("{item:?} is IPv6; weir-cni supports IPv4 only"));
    }
    addr.parse::<Ipv4Addr>()
        .map_err(|_| format!("{item:?} is not an IPv4 address"))
}

impl CniArgs {
    /// Back to CNI_ARGS form (set fields only), for tests and logs.
    pub fn encode(&self) -> String {
        let mut pairs = Vec::new();
        if self.ignore_unknown {
            pairs.push("IgnoreUnknown=1".to_string());
        }
        for (key, value) in [
            ("K8S_POD_NAMESPACE", &self.pod_namespace),
            ("K8S_POD_NAME", &self.pod_name),
            ("K8S_POD_INFRA_CONTAINER_ID", &self.pod_infra_container_id),
            ("K8S_POD_UID", &self.pod_uid),
        ] {
            if !value.is_empty() {
                pairs.push(format!("{key}={value}"));
            }
        }
        if !self.ips.is_empty() {
            let ips: Vec<String> = self.ips.iter().map(Ipv4Addr::to_string).collect();
            pairs.push(format!("IP={}", ips.join(",")));
        }
        pairs.join(";")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;

    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn empty_is_default() {
        assert_eq!(parse("").unwrap(), CniArgs::default());
    }

    #[test]
    fn kubernetes_args_parse() {
        let args = parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1",
        )
        .unwrap();
        assert!(args.ignore_unknown);
        assert_eq!(args.pod_namespace, "default");
        assert_eq!(args.pod_name, "web-0");
        assert_eq!(args.pod_infra_container_id, "abc");
        assert_eq!(args.pod_uid, "u-1");
    }

    #[test]
    fn unknown_keys_fail_without_ignore_unknown() {
        let err = parse("K8S_POD_NAME=a;FOO=bar").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEnvironment);
        assert!(err.msg.contains("FOO=bar"), "{}", err.msg);
    }

    #[test]
    fn ignore_unknown_applies_wherever_it_is() {
        let args = parse("FOO=bar;K8S_POD_NAME=a;IgnoreUnknown=true").unwrap();
        assert_eq!(args.pod_name, "a");
        let err = parse("FOO=bar;IgnoreUnknown=0").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEnvironment);
    }

    #[test]
    fn bad_pairs_fail() {
        for raw in ["novalue", "a=b=c", "K8S_POD_NAME=a;", ";", "=x=y"] {
            let err = parse(raw).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidEnvironment, "{raw}");
        }
    }

    #[test]
    fn bad_bool_fails() {
        assert!(parse("IgnoreUnknown=yes").is_err());
        assert!(parse("IgnoreUnknown=TRUE").unwrap().ignore_unknown);
    }

    #[test]
    fn ip_arg_parses_lists_and_prefixes() {
        let args = parse("IP=10.244.1.7").unwrap();
        assert_eq!(args.ips, vec![Ipv4Addr::new(10, 244, 1, 7)]);
        let args = parse("IP=10.244.1.7/24,10.244.2.9").unwrap();
        assert_eq!(
            args.ips,
            vec![Ipv4Addr::new(10, 244, 1, 7), Ipv4Addr::new(10, 244, 2, 9)]
        );
    }

    #[test]
    fn ip_arg_rejects_garbage_and_ipv6() {
        for raw in ["IP=banana", "IP=10.0.0.1/40", "IP=fd00::1", "IP="] {
            let err = parse(raw).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidEnvironment, "{raw}");
        }
    }

    fn value_strategy() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.-]{0,12}"
    }

    fn args_strategy() -> impl Strategy<Value = CniArgs> {
        (
            any::<bool>(),
            value_strategy(),
            value_strategy(),
            value_strategy(),
            value_strategy(),
            proptest::collection::vec(any::<u32>().prop_map(Ipv4Addr::from), 0..3),
        )
            .prop_map(|(ignore_unknown, ns, name, infra, uid, ips)| CniArgs {
                ignore_unknown,
                pod_namespace: ns,
                pod_name: name,
                pod_infra_container_id: infra,
                pod_uid: uid,
                ips,
            })
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(raw in any::<String>()) {
            let _ = parse(&raw);
        }

        #[test]
        fn pair_shaped_strings_never_panic(raw in "([A-Za-z_=;,./0-9:]{0,10};?){0,6}") {
            let _ = parse(&raw);
        }

        #[test]
        fn valid_args_round_trip(args in args_strategy()) {
            let encoded = args.encode();
            prop_assert_eq!(parse(&encoded).unwrap(), args);
        }
    }
}
