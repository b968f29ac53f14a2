//! Compiler tests: Kubernetes semantics checked through the verdicts a plan
//! gives (the reference model of the datapath), plus the map entries
//! themselves where their shape matters.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use weir_common::policy::{
    POLICY_PREFIX_ANY_PORT, POLICY_PREFIX_ANY_PROTO, ep_policy_flags, identity,
};

use super::diff::diff;
use super::peers::{Cidr, CidrBlock, Peer, parse_cidr, parse_ip_block};
use super::selector::Selector;
use super::*;
use crate::k8s::test_support::{node, pod, snapshot};
use crate::k8s::{Kind, ObjectKey, ObjectName};

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
use Direction::{Egress, Ingress};

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn ctx() -> PolicyContext {
    PolicyContext {
        node_name: "n1".into(),
        ..PolicyContext::default()
    }
}

fn namespace(name: &str, labels: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n"
    )
}

/// A NetworkPolicy; `spec` is a ZAML flow mapping body.
fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{namespace: {ns}, name: {name}}}\nspec: {{{spec}}}\n"
    )
}

/// The e2e netpol model, shrunk: namespaces x and z (`ns=x|z`), pods a and
/// b in each (`pod=a|b`). n1 is this node; z/a runs on n2.
const XA: &str = "10.244.1.10";
const XB: &str = "10.244.1.11";
const ZA: &str = "10.244.2.10";
const ZB: &str = "10.244.1.12";
const N1: &str = "192.168.0.1";
const N2: &str = "192.168.0.2";
const OUTSIDE: &str = "203.0.113.7";

fn model() -> String {
    let ports = ["serve-80-tcp:80", "serve-81-udp:81/UDP"];
    [
        node("n1", N1, Some("10.244.1.0/24")),
        node("n2", N2, Some("10.244.2.0/24")),
        namespace("x", "ns: x"),
        namespace("z", "ns: z"),
        pod("x", "a", "pod: a", "n1", XA, true, &ports),
        pod("x", "b", "pod: b", "n1", XB, true, &ports),
        pod("z", "a", "pod: a", "n2", ZA, true, &ports),
        pod("z", "b", "pod: b", "n1", ZB, true, &ports),
    ]
    .concat()
}

fn compile(yaml: &str) -> PolicyPlan {
    let plan = PolicyCompiler::new().compile(&snapshot(yaml), &ctx());
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    plan
}

fn allowed(
    plan: &PolicyPlan,
    endpoint: &str,
    direction: Direction,
    peer: &str,
    proto: u8,
    port: u16,
) -> bool {
    plan.verdict(ip(endpoint), direction, ip(peer), proto, port)
        .unwrap_or_else(|| panic!("{endpoint} is not a local endpoint"))
        .is_allowed()
}

/// Which of the given peers may reach `endpoint` (ingress) on port 80/TCP.
fn ingress_from<'p>(plan: &PolicyPlan, endpoint: &str, peers: &[&'p str]) -> Vec<&'p str> {
    peers
        .iter()
        .copied()
        .filter(|peer| allowed(plan, endpoint, Ingress, peer, TCP, 80))
        .collect()
}

const PODS: [&str; 4] = [XA, XB, ZA, ZB];

mod selectors {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn selector(match_labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> Selector {
        Selector::parse(&LabelSelector {
            match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        })
        .unwrap()
    }

    #[test]
    fn the_empty_selector_selects_everything() {
        let all = selector(&[], vec![]);
        assert!(all.is_everything());
        assert!(all.matches(&labels(&[])));
        assert!(all.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn every_operator_matches_as_kubernetes_does() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db")]);
        let none = labels(&[]);
        let cases = [
            (expr("app", "In", &["web", "api"]), [true, false, false]),
            (expr("app", "NotIn", &["web"]), [false, true, true]),
            (expr("tier", "Exists", &[]), [true, false, false]),
            (expr("tier", "DoesNotExist", &[]), [false, true, true]),
        ];
        for (requirement, expected) in cases {
            let s = selector(&[], vec![requirement.clone()]);
            let got = [s.matches(&web), s.matches(&db), s.matches(&none)];
            assert_eq!(got, expected, "{requirement:?}");
        }
        // matchLabels and expressions are ANDed.
        let s = selector(&[("app", "web")], vec![expr("tier", "In", &["back"])]);
        assert!(!s.matches(&web));
        let s = selector(&[("app", "web")], vec![expr("tier", "NotIn", &["back"])]);
        assert!(s.matches(&web));
    }

    #[test]
    fn bad_requirements_are_errors_with_their_position() {
        let parse = |exprs| {
            Selector::parse(&LabelSelector {
                match_labels: None,
                match_expressions: Some(exprs),
            })
        };
        let (at, problem) = parse(vec![
            expr("a", "Exists", &[]),
            expr("app", "Equals", &["x"]),
        ])
        .unwrap_err();
        assert_eq!(at, "matchExpressions[1]");
        assert!(
            matches!(problem, Problem::UnknownOperator { ref operator, .. } if operator == "Equals")
        );
        assert!(matches!(
            parse(vec![expr("a", "In", &[])]).unwrap_err().1,
            Problem::MissingValues { .. }
        ));
        assert!(matches!(
            parse(vec![expr("a", "Exists", &["x"])]).unwrap_err().1,
            Problem::UnexpectedValues { .. }
        ));
        assert!(matches!(
            parse(vec![expr("", "Exists", &[])]).unwrap_err().1,
            Problem::EmptyKey
        ));
    }
}

mod ip_blocks {
    use super::*;

    fn block(cidr: &str, except: &[&str]) -> Result<Peer, (String, Problem)> {
        parse_ip_block(&k8s_openapi::api::networking::v1::IPBlock {
            cidr: cidr.into(),
            except: Some(except.iter().map(|e| e.to_string()).collect()),
        })
    }

    #[test]
    fn cidrs_parse_strictly_and_lose_their_host_bits() {
        assert_eq!(
            parse_cidr("10.1.2.3/8"),
            Ok(Cidr::V4("10.0.0.0/8".parse().unwrap()))
        );
        assert_eq!(
            parse_cidr("0.0.0.0/0"),
            Ok(Cidr::V4("0.0.0.0/0".parse().unwrap()))
        );
        assert_eq!(parse_cidr("fd00::/8"), Ok(Cidr::V6));
        for bad in [
            "10.0.0.1",
            "10.0.0.0/33",
            "10.0.0/8",
            "10.0.0.0/255.0.0.0",
            "10.0.0.0/",
            "/8",
            "x/8",
            "10.0.0.0/+8",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn excepts_must_be_strictly_inside() {
        let Peer::Block(ok) = block("10.0.0.0/8", &["10.1.0.0/16", "10.1.0.0/16"]).unwrap() else {
            panic!()
        };
        assert_eq!(ok.except.len(), 1, "deduplicated");
        assert!(ok.contains(ip("10.2.0.1")));
        assert!(!ok.contains(ip("10.1.0.1")));
        for bad in ["10.0.0.0/8", "11.0.0.0/16", "10.0.0.0/7", "nope"] {
            let (at, _) = block("10.0.0.0/8", &[bad]).unwrap_err();
            assert_eq!(at, "ipBlock.except[0]", "{bad}");
        }
        assert_eq!(block("fd00::/8", &[]).unwrap(), Peer::Nothing);
    }
}

#[test]
fn a_pod_no_policy_selects_is_not_isolated() {
    let plan = compile(&model());
    assert_eq!(plan.endpoints.len(), 3, "x/a, x/b and z/b run on n1");
    for peer in PODS.iter().chain(&[OUTSIDE, N2]) {
        assert_eq!(
            plan.verdict(ip(XA), Ingress, ip(peer), TCP, 80),
            Some(Verdict::NotIsolated)
        );
    }
    assert_eq!(
        plan.verdict(ip(ZA), Ingress, ip(XA), TCP, 80),
        None,
        "z/a runs on n2"
    );
    assert_eq!(plan.policy_entry_count(), 0);
}

#[test]
fn policy_types_default_to_ingress_plus_egress_when_egress_rules_exist() {
    let plan = compile(
        &(model()
            + &policy(
                "x",
                "only-ingress",
                "podSelector: {matchLabels: {pod: a}}, ingress: [{}]",
            )
            + &policy(
                "x",
                "with-egress",
                "podSelector: {matchLabels: {pod: b}}, egress: [{ports: [{port: 53, protocol: UDP}]}]",
            )
            + &policy(
                "z",
                "typed-egress",
                "podSelector: {}, policyTypes: [Egress], ingress: [{}]",
            )),
    );
    let xa = &plan.endpoints[&ip(XA)];
    assert!(xa.ingress.isolated_by.is_some() && xa.egress.isolated_by.is_none());
    let xb = &plan.endpoints[&ip(XB)];
    assert!(xb.ingress.isolated_by.is_some() && xb.egress.isolated_by.is_some());
    assert!(
        xb.ingress.allows.is_empty(),
        "isolated for ingress, nothing allowed"
    );
    assert!(allowed(&plan, XB, Egress, OUTSIDE, UDP, 53));
    assert!(!allowed(&plan, XB, Egress, OUTSIDE, TCP, 53));
    let yb = &plan.endpoints[&ip(ZB)];
    assert!(
        yb.ingress.isolated_by.is_none(),
        "policyTypes wins over present ingress rules"
    );
    assert!(yb.egress.isolated_by.is_some());
    assert!(!allowed(&plan, ZB, Egress, XA, TCP, 80));
}

#[test]
fn both_default_deny_forms_isolate_and_allow_nothing() {
    let plan = compile(
        &(model()
            + &policy(
                "x",
                "deny-ingress",
                "podSelector: {}, policyTypes: [Ingress]",
            )
            + &policy("x", "deny-egress", "podSelector: {}, policyTypes: [Egress]")),
    );
    for endpoint in [XA, XB] {
        for peer in PODS.iter().chain(&[OUTSIDE, N2]) {
            for direction in [Ingress, Egress] {
                let verdict = plan
                    .verdict(ip(endpoint), direction, ip(peer), TCP, 80)
                    .unwrap();
                let Verdict::Denied {
                    isolated_by,
                    default_deny,
                } = verdict
                else {
                    panic!("{endpoint} {direction:?} {peer}: {verdict:?}")
                };
                assert!(default_deny);
                let name = if direction == Ingress {
                    "deny-ingress"
                } else {
                    "deny-egress"
                };
                let rule = &plan.rules[&isolated_by];
                assert_eq!(
                    (rule.policy.name.as_str(), rule.direction, rule.rule),
                    (name, direction, RuleIndex::Isolation)
                );
            }
        }
        let flags = plan.endpoints[&ip(endpoint)].abi().flags;
        assert_eq!(
            flags & (ep_policy_flags::INGRESS_HAS_RULES | ep_policy_flags::EGRESS_HAS_RULES),
            0
        );
    }
    assert_eq!(
        plan.verdict(ip(ZB), Ingress, ip(XA), TCP, 80),
        Some(Verdict::NotIsolated),
        "other namespace"
    );
}

#[test]
fn the_own_node_is_always_allowed_in_and_other_nodes_are_peers_like_any_address() {
    let mut ctx = ctx();
    ctx.host_addresses = vec![ip("10.244.1.1")];
    let yaml = model()
        + &policy(
            "x",
            "deny",
            "podSelector: {}, policyTypes: [Ingress, Egress]",
        )
        + &policy(
            "z",
            "nodes",
            "podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 192.168.0.0/24}}]}]",
        );
    let plan = PolicyCompiler::new().compile(&snapshot(&yaml), &ctx);
    assert_eq!(
        plan.verdict(ip(XA), Ingress, ip(N1), TCP, 80),
        Some(Verdict::FromHost)
    );
    assert_eq!(
        plan.verdict(ip(XA), Ingress, ip("10.244.1.1"), TCP, 80),
        Some(Verdict::FromHost)
    );
    assert!(
        !allowed(&plan, XA, Ingress, N2, TCP, 80),
        "another node is not the host"
    );
    assert!(
        !allowed(&plan, XA, Egress, N1, TCP, 80),
        "egress to the node is policed"
    );
    assert!(
        allowed(&plan, ZB, Ingress, N2, TCP, 80),
        "ipBlock matches another node"
    );
    assert!(!allowed(&plan, ZB, Ingress, ZA, TCP, 80));
    assert_eq!(plan.lookup_ip(ip(N1)).identity, identity::HOST);
    assert_eq!(plan.lookup_ip(ip(N2)).identity, identity::REMOTE_NODE);
    assert_eq!(plan.lookup_ip(ip(OUTSIDE)).identity, identity::WORLD);
}

#[test]
fn a_pod_selector_alone_means_the_policy_namespace() {
    let plan = compile(
        &(model()
            + &policy(
                "x",
                "from-b",
                "podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]",
            )),
    );
    assert_eq!(
        ingress_from(&plan, XA, &PODS),
        vec![XB],
        "z/b has pod=b but lives in z"
    );
}

#[test]
fn peer_selectors_in_one_entry_are_and_in_two_entries_or() {
    let and = "podSelector: {matchLabels: {pod: a}}, ingress: [{from: [\
               {namespaceSelector: {matchLabels: {ns: z}}, podSelector: {matchLabels: {pod: b}}}]}]";
    let or = "podSelector: {matchLabels: {pod: a}}, ingress: [{from: [\
              {namespaceSelector: {matchLabels: {ns: z}}}, {podSelector: {matchLabels: {pod: b}}}]}]";
    let plan = compile(&(model() + &policy("x", "and", and)));
    assert_eq!(ingress_from(&plan, XA, &PODS), vec![ZB]);
    let plan = compile(&(model() + &policy("x", "or", or)));
    assert_eq!(ingress_from(&plan, XA, &PODS), vec![XB, ZA, ZB]);
    let all_namespaces =
        "podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {}}]}]";
    let plan = compile(&(model() + &policy("x", "all-ns", all_namespaces)));
    assert_eq!(
        ingress_from(&plan, XA, &[XB, ZA, ZB, OUTSIDE, N2]),
        vec![XB, ZA, ZB]
    );
}

#[test]
fn match_expressions_select_namespaces_and_pods() {
    let spec = "podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, b]}]}, \
                ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}, \
                podSelector: {matchExpressions: [{key: pod, operator: Exists}]}}]}]";
    let plan = compile(&(model() + &policy("x", "exprs", spec)));
    for endpoint in [XA, XB] {
        assert_eq!(ingress_from(&plan, endpoint, &PODS), vec![ZA, ZB]);
    }
    let by_name = "podSelector: {}, ingress: [{from: [{namespaceSelector: \
                   {matchLabels: {kubernetes.io/metadata.name: z}}}]}]";
    let plan = compile(&(model() + &policy("x", "by-name", by_name)));
    assert_eq!(
        ingress_from(&plan, XA, &PODS),
        vec![ZA, ZB],
        "the API's namespace name label"
    );
}

#[test]
fn empty_from_and_empty_ports_allow_everything() {
    let plan = compile(
        &(model()
            + &policy(
                "x",
                "open",
                "podSelector: {}, ingress: [{from: [], ports: []}]",
            )),
    );
    for peer in PODS.iter().chain(&[OUTSIDE, N2]) {
        for (proto, port) in [(TCP, 80), (UDP, 9999), (SCTP, 1), (1, 0)] {
            assert!(
                allowed(&plan, XA, Ingress, peer, proto, port),
                "{peer} {proto}/{port}"
            );
        }
    }
    let entries: Vec<_> = plan.policy_entries().collect();
    assert_eq!(
        entries.len(),
        2,
        "one any-peer any-proto entry per endpoint"
    );
    assert!(
        entries
            .iter()
            .all(|(k, _)| k.identity == identity::ANY && k.prefixlen == POLICY_PREFIX_ANY_PROTO)
    );
}

#[test]
fn ports_match_protocol_and_number_and_a_protocol_alone_matches_all_its_ports() {
    let spec = "podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 80}, {port: 81, protocol: UDP}, {protocol: SCTP}]}]";
    let plan = compile(&(model() + &policy("x", "ports", spec)));
    let cases = [
        (TCP, 80, true),
        (UDP, 80, false),
        (TCP, 81, false),
        (UDP, 81, true),
        (SCTP, 1, true),
        (SCTP, 65535, true),
        (TCP, 82, false),
    ];
    for (proto, port, expected) in cases {
        assert_eq!(
            allowed(&plan, XA, Ingress, ZA, proto, port),
            expected,
            "{proto}/{port}"
        );
    }
    let sctp = plan
        .policy_entries()
        .find(|(k, _)| k.proto == SCTP)
        .unwrap()
        .0;
    assert_eq!(sctp.prefixlen, POLICY_PREFIX_ANY_PORT);
}

#[test]
fn end_port_ranges_become_port_prefixes() {
    let spec =
        "podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 8080, endPort: 8090}]}]";
    let plan = compile(&(model() + &policy("x", "range", spec)));
    for port in 8070..8100 {
        assert_eq!(
            allowed(&plan, XA, Ingress, ZA, TCP, port),
            (8080..=8090).contains(&port),
            "{port}"
        );
    }
    // 8080-8087, 8088-8089, 8090: three prefixes rather than eleven ports.
    assert_eq!(plan.policy_entry_count(), 3);
    let bits: Vec<u32> = plan
        .policy_entries()
        .map(|(k, _)| k.prefixlen - POLICY_PREFIX_ANY_PORT)
        .collect();
    assert_eq!(bits, vec![13, 15, 16]);
}

#[test]
fn ip_blocks_with_except_match_addresses_and_pods_but_not_the_carved_out_part() {
    let spec = "podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{ipBlock: \
                {cidr: 10.244.0.0/16, except: [10.244.1.8/30]}}]}]";
    let plan = compile(&(model() + &policy("x", "block", spec)));
    // x/a and x/b (.10, .11) are inside the except, z/a and z/b are not.
    assert_eq!(ingress_from(&plan, XA, &PODS), vec![ZA, ZB]);
    assert!(
        allowed(&plan, XA, Ingress, "10.244.9.9", TCP, 80),
        "a non-pod address in the block"
    );
    assert!(
        !allowed(&plan, XA, Ingress, "10.244.1.9", TCP, 80),
        "a non-pod address in the except"
    );
    assert!(!allowed(&plan, XA, Ingress, OUTSIDE, TCP, 80));

    // Pods keep their label identity and gain the block's CIDR identity.
    let ya = plan.lookup_ip(ip(ZA));
    assert!(ya.identity >= identity::POD_MIN && !identity::is_cidr(ya.identity));
    assert!(identity::is_cidr(ya.cidr_identity));
    assert_eq!(
        plan.cidr_identities[&ya.cidr_identity],
        "10.244.0.0/16".parse().unwrap()
    );
    let xb = plan.lookup_ip(ip(XB));
    assert_eq!(
        plan.cidr_identities[&xb.cidr_identity],
        "10.244.1.8/30".parse().unwrap()
    );
    assert_eq!(plan.lookup_ip(ip(OUTSIDE)).cidr_identity, identity::ANY);
}

#[test]
fn nested_blocks_of_different_policies_keep_their_own_excepts() {
    let wide = "podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]}]";
    let narrow =
        "podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{ipBlock: {cidr: 10.1.2.0/24}}]}]";
    let plan = compile(&(model() + &policy("x", "wide", wide) + &policy("x", "narrow", narrow)));
    assert!(allowed(&plan, XA, Ingress, "10.2.0.1", TCP, 80), "wide");
    assert!(
        !allowed(&plan, XA, Ingress, "10.1.3.1", TCP, 80),
        "wide's except, outside narrow"
    );
    assert!(
        allowed(&plan, XA, Ingress, "10.1.2.1", TCP, 80),
        "narrow, inside wide's except"
    );
    let all = "podSelector: {matchLabels: {pod: b}}, egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]}]";
    let plan = compile(&(model() + &policy("x", "internet", all)));
    assert!(allowed(&plan, XB, Egress, OUTSIDE, TCP, 443));
    assert!(
        allowed(&plan, XB, Egress, N1, TCP, 443),
        "0.0.0.0/0 holds the nodes too"
    );
    assert!(!allowed(&plan, XB, Egress, ZA, TCP, 80));
}

#[test]
fn named_ports_resolve_per_destination_pod() {
    // Same name, different numbers: x/a serves "web" on 8080, x/b on 9090;
    // z/a on 7070.
    let yaml = [
        node("n1", N1, None),
        node("n2", N2, None),
        pod("x", "a", "app: web", "n1", XA, true, &["web:8080"]),
        pod("x", "b", "app: web, v: two", "n1", XB, true, &["web:9090"]),
        pod("x", "c", "app: client", "n1", ZB, true, &[]),
        pod("x", "d", "app: web", "n2", ZA, true, &["web:7070"]),
        policy("x", "web-in", "podSelector: {matchLabels: {app: web}}, ingress: [{ports: [{port: web}]}]"),
        policy("x", "client-out", "podSelector: {matchLabels: {app: client}}, egress: [{to: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: web}]}]"),
    ]
    .concat();
    let plan = compile(&yaml);
    // Ingress: each endpoint allows only its own number.
    assert!(allowed(&plan, XA, Ingress, ZB, TCP, 8080));
    assert!(!allowed(&plan, XA, Ingress, ZB, TCP, 9090));
    assert!(allowed(&plan, XB, Ingress, ZB, TCP, 9090));
    assert!(!allowed(&plan, XB, Ingress, ZB, TCP, 8080));
    assert!(
        !allowed(&plan, XB, Ingress, ZB, UDP, 9090),
        "the name is per protocol"
    );
    // Egress: the number of the destination.
    assert!(allowed(&plan, ZB, Egress, XB, TCP, 9090));
    assert!(!allowed(&plan, ZB, Egress, XB, TCP, 8080));
    // x/a and x/d share an identity, so their numbers are allowed towards
    // both (identity granularity; see docs/policy.md).
    assert!(allowed(&plan, ZB, Egress, ZA, TCP, 7070));
    assert!(allowed(&plan, ZB, Egress, XA, TCP, 8080));
    assert!(!allowed(&plan, ZB, Egress, OUTSIDE, TCP, 8080));
}

#[test]
fn policies_add_up_and_the_first_policy_names_a_shared_match() {
    let yaml = model()
        + &policy(
            "x",
            "b-from-x",
            "podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {}}], ports: [{port: 80}]}]",
        )
        + &policy(
            "x",
            "a-from-y",
            "podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}}]}]",
        )
        + &policy(
            "x",
            "c-udp",
            "podSelector: {}, ingress: [{ports: [{port: 81, protocol: UDP}]}, {from: [{podSelector: {}}], ports: [{port: 80}]}]",
        );
    let plan = compile(&yaml);
    assert_eq!(
        ingress_from(&plan, XA, &PODS),
        vec![XA, XB, ZA, ZB],
        "x/a is in x too"
    );
    assert_eq!(
        ingress_from(&plan, XB, &PODS),
        vec![XA, XB],
        "only c-udp selects x/b"
    );
    assert!(allowed(&plan, XB, Ingress, OUTSIDE, UDP, 81));
    let Some(Verdict::Allowed { rule_id }) = plan.verdict(ip(XA), Ingress, ip(XB), TCP, 80) else {
        panic!()
    };
    let rule = &plan.rules[&rule_id];
    assert_eq!(rule.to_string(), "x/b-from-x ingress[0]");
    let Some(Verdict::Allowed { rule_id }) = plan.verdict(ip(XA), Ingress, ip(ZA), TCP, 80) else {
        panic!()
    };
    assert_eq!(plan.rules[&rule_id].to_string(), "x/a-from-y ingress[0]");
    let Some(Verdict::Allowed { rule_id }) = plan.verdict(ip(XB), Ingress, ip(OUTSIDE), UDP, 81)
    else {
        panic!()
    };
    assert_eq!(plan.rules[&rule_id].rule, RuleIndex::Rule(0));
    let Some(Verdict::Denied {
        isolated_by,
        default_deny: false,
    }) = plan.verdict(ip(XA), Ingress, ip(OUTSIDE), TCP, 80)
    else {
        panic!()
    };
    assert_eq!(
        plan.rules[&isolated_by].to_string(),
        "x/a-from-y ingress isolation",
        "first by name"
    );
}

#[test]
fn pods_with_the_same_labels_share_an_identity_per_namespace() {
    let yaml = model() + &pod("x", "a2", "pod: a", "n2", "10.244.2.20", true, &[]);
    let plan = compile(&yaml);
    let id = |addr| plan.lookup_ip(ip(addr)).identity;
    assert_eq!(id(XA), id("10.244.2.20"));
    assert_ne!(id(XA), id(XB));
    assert_ne!(id(XA), id(ZA), "same labels, other namespace");
    assert_eq!(plan.identities.len(), 4);
}

#[test]
fn bad_parts_are_reported_per_policy_and_fail_closed() {
    let yaml = model()
        + &policy(
            "x",
            "bad-cidr",
            "podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{ipBlock: {cidr: 10.0.0/8}}]}, {from: [{podSelector: {matchLabels: {pod: b}}}]}]",
        )
        + &policy(
            "x",
            "bad-except",
            "podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]}]",
        )
        + &policy(
            "x",
            "bad-operator",
            "podSelector: {matchExpressions: [{key: pod, operator: Equals, values: [a]}]}, policyTypes: [Ingress]",
        )
        + &policy(
            "z",
            "bad-ports",
            "podSelector: {}, ingress: [{ports: [{port: 90, endPort: 80}]}, {ports: [{port: 70000}]}, {ports: [{port: http, endPort: 90}]}, {ports: [{port: 1, protocol: ICMP}]}]",
        )
        + &policy(
            "z",
            "bad-peer",
            "podSelector: {}, egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}, {to: [{}]}], policyTypes: [Egress, Sideways]",
        );
    let plan = PolicyCompiler::new().compile(&snapshot(&yaml), &ctx());
    let errors: Vec<String> = plan.errors.iter().map(ToString::to_string).collect();
    let expected = [
        "NetworkPolicy x/bad-cidr: spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR \"10.0.0/8\"",
        "NetworkPolicy x/bad-except: spec.ingress[0].from[0].ipBlock.except[0]: except 10.1.0.0/24 is not a strict subset of cidr 10.0.0.0/16",
        "NetworkPolicy x/bad-operator: spec.podSelector.matchExpressions[0]: unknown operator \"Equals\" for key \"pod\" (In, NotIn, Exists, DoesNotExist)",
        "NetworkPolicy z/bad-peer: spec.egress[0].to[0]: ipBlock cannot be combined with podSelector or namespaceSelector",
        "NetworkPolicy z/bad-peer: spec.egress[1].to[0]: a peer needs podSelector, namespaceSelector or ipBlock",
        "NetworkPolicy z/bad-peer: spec.policyTypes[1]: unknown policy type \"Sideways\" (Ingress, Egress)",
        "NetworkPolicy z/bad-ports: spec.ingress[0].ports[0].endPort: endPort 80 is below port 90",
        "NetworkPolicy z/bad-ports: spec.ingress[1].ports[0].port: port 70000 out of range 1..=65535",
        "NetworkPolicy z/bad-ports: spec.ingress[2].ports[0].endPort: endPort needs a numeric port",
        "NetworkPolicy z/bad-ports: spec.ingress[3].ports[0].protocol: unknown protocol \"ICMP\" (TCP, UDP, SCTP)",
    ];
    assert_eq!(errors, expected);
    // The good rule of bad-cidr still applies; its bad rule allows nothing
    // instead of everything.
    assert_eq!(
        ingress_from(&plan, XA, &[XB, ZA, ZB, OUTSIDE, "10.0.0.1"]),
        vec![XB]
    );
    // bad-ports and bad-peer still isolate z/b, with nothing allowed.
    for direction in [Ingress, Egress] {
        let verdict = plan.verdict(ip(ZB), direction, ip(XA), TCP, 80).unwrap();
        assert!(
            matches!(
                verdict,
                Verdict::Denied {
                    default_deny: true,
                    ..
                }
            ),
            "{direction:?}: {verdict:?}"
        );
    }
    // bad-operator cannot tell whom it selects: skipped.
    assert_eq!(
        plan.verdict(ip(XB), Ingress, ip(XA), TCP, 80),
        Some(Verdict::NotIsolated)
    );
}

#[test]
fn bad_pod_addresses_are_reported_and_the_first_pod_keeps_an_address() {
    let yaml = model()
        + &pod("x", "dup", "pod: dup", "n1", XA, true, &[])
        + &pod("x", "worse", "pod: w", "n1", "10.244.1", true, &[]);
    let plan = PolicyCompiler::new().compile(&snapshot(&yaml), &ctx());
    let errors: Vec<String> = plan.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "Pod x/dup: status.podIP: pod IP 10.244.1.10 is also used by x/a; the first by name keeps it",
            "Pod x/worse: status.podIP: unparsable pod IP \"10.244.1\"",
        ]
    );
    assert_eq!(plan.endpoints[&ip(XA)].pod, ObjectName::new("x", "a"));
}

#[test]
fn cni_registered_addresses_win_and_make_a_pod_local_before_the_api_knows() {
    let mut ctx = ctx();
    let fresh = ObjectName::new("x", "fresh");
    ctx.pod_ip_overrides
        .insert(fresh.clone(), ip("10.244.1.50"));
    let yaml = model()
        + "---\napiVersion: v1\nkind: Pod\nmetadata: {namespace: x, name: fresh, labels: {pod: a}}\nspec: {containers: [{name: c, image: x}]}\n"
        + &policy("x", "deny", "podSelector: {}, policyTypes: [Ingress]");
    let plan = PolicyCompiler::new().compile(&snapshot(&yaml), &ctx);
    let endpoint = &plan.endpoints[&ip("10.244.1.50")];
    assert_eq!(endpoint.pod, fresh);
    assert!(
        endpoint.ingress.isolated_by.is_some(),
        "policed from its first packet"
    );
}

#[test]
fn audit_comes_from_the_namespace_annotation() {
    let yaml = model().replace(
        "name: x, labels:",
        "name: x, annotations: {weir.io/policy-audit: \"true\"}, labels:",
    ) + &policy("x", "deny", "podSelector: {}, policyTypes: [Ingress]");
    let plan = compile(&yaml);
    assert!(plan.endpoints[&ip(XA)].audit);
    assert_ne!(
        plan.endpoints[&ip(XA)].abi().flags & ep_policy_flags::AUDIT,
        0
    );
    assert!(!plan.endpoints[&ip(ZB)].audit);
}

#[test]
fn the_revision_moves_only_when_the_maps_change() {
    let mut compiler = PolicyCompiler::starting_at(41);
    let yaml = model() + &policy("x", "deny", "podSelector: {}, policyTypes: [Ingress]");
    let first = compiler.compile(&snapshot(&yaml), &ctx());
    assert_eq!(first.revision, 42);
    let again = compiler.compile(&snapshot(&yaml), &ctx());
    assert_eq!(again, first);
    assert!(diff(&first, &again).is_empty());
    // A pod on another node with new labels changes the ipcache.
    let yaml = yaml + &pod("z", "c", "pod: c", "n2", "10.244.2.30", true, &[]);
    let third = compiler.compile(&snapshot(&yaml), &ctx());
    assert_eq!(third.revision, 43);
    assert_eq!(diff(&again, &third).revision, Some(43));
}

/// Every entry a diff touches, as (kind, ip-or-identity) for assertions.
fn touched(d: &PolicyDiff) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let mut ipcache: Vec<u32> = d
        .ipcache
        .upserts
        .iter()
        .map(|(k, _)| k.addr)
        .chain(d.ipcache.deletes.iter().map(|k| k.addr))
        .collect();
    let mut endpoints: Vec<u32> = d
        .endpoints
        .upserts
        .iter()
        .map(|(k, _)| *k)
        .chain(d.endpoints.deletes.iter().copied())
        .collect();
    let mut identities: Vec<u32> = d
        .policy
        .upserts
        .iter()
        .map(|(k, _)| k.identity)
        .chain(d.policy.deletes.iter().map(|k| k.identity))
        .collect();
    for list in [&mut ipcache, &mut endpoints, &mut identities] {
        list.sort_unstable();
        list.dedup();
    }
    (ipcache, endpoints, identities)
}

fn key(addr: &str) -> u32 {
    plan::ip_key(ip(addr))
}

#[test]
fn a_label_change_touches_only_that_pods_entries() {
    // x/a allows pod=b from everywhere; x/b and z/b allow pod=a. Relabel
    // z/a (remote, pod=a → pod=b): its ipcache entry and the entries naming
    // its old and new identity change, nothing else.
    let base = |ya_labels: &str| {
        let yaml = model()
            + &policy(
                "x",
                "a-from-b",
                "podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}]}]",
            )
            + &policy(
                "x",
                "b-from-a",
                "podSelector: {matchLabels: {pod: b}}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: a}}}]}]",
            )
            + &policy(
                "z",
                "b-from-a",
                "podSelector: {matchLabels: {pod: b}}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: a}}}]}]",
            );
        snapshot(&yaml.replace(
            "name: a, labels: {pod: a}}\nspec:\n  nodeName: n2",
            &format!("name: a, labels: {{{ya_labels}}}}}\nspec:\n  nodeName: n2"),
        ))
    };
    let mut compiler = PolicyCompiler::new();
    let before = compiler.compile(&base("pod: a"), &ctx());
    let old_id = before.lookup_ip(ip(ZA)).identity;
    assert_eq!(ingress_from(&before, XB, &PODS), vec![XA, ZA]);

    // A label that no selector looks at: new identity, same verdicts.
    let after = compiler.compile(&base("pod: a, extra: x"), &ctx());
    let new_id = after.lookup_ip(ip(ZA)).identity;
    assert_ne!(new_id, old_id);
    let (ipcache, endpoints, identities) = touched(&diff(&before, &after));
    assert_eq!(ipcache, vec![key(ZA)]);
    assert!(endpoints.is_empty());
    let mut expected = vec![old_id, new_id];
    expected.sort_unstable();
    assert_eq!(identities, expected, "only entries naming z/a's identities");
    assert_eq!(ingress_from(&after, XB, &PODS), vec![XA, ZA]);

    // pod=a → pod=b: z/a leaves the peers of x/b and z/b, and joins z/b's
    // identity, which x/a already allows: x/a's entries stay as they are.
    let moved = compiler.compile(&base("pod: b"), &ctx());
    let moved_id = moved.lookup_ip(ip(ZA)).identity;
    assert_eq!(moved_id, moved.lookup_ip(ip(ZB)).identity);
    let d = diff(&after, &moved);
    let (ipcache, endpoints, identities) = touched(&d);
    assert_eq!(ipcache, vec![key(ZA)]);
    assert!(endpoints.is_empty());
    assert!(
        identities.iter().all(|id| [new_id, moved_id].contains(id)),
        "{identities:?}"
    );
    assert_eq!(ingress_from(&moved, XB, &PODS), vec![XA]);
    assert_eq!(ingress_from(&moved, XA, &PODS), vec![XB, ZA, ZB]);
    // One entry each of x/b and z/b goes: the one naming z/a's old identity.
    let eps: std::collections::BTreeSet<u32> = d
        .policy
        .upserts
        .iter()
        .map(|(k, _)| k.endpoint)
        .chain(d.policy.deletes.iter().map(|k| k.endpoint))
        .collect();
    assert_eq!(eps, [key(XB), key(ZB)].into());
    assert_eq!(d.policy.deletes.len(), 2);
    assert!(d.policy.upserts.is_empty());
}

#[test]
fn relabelling_a_local_pod_rewrites_its_own_endpoint_and_entries() {
    let yaml = |labels: &str| {
        model().replace(
            "name: a, labels: {pod: a}}\nspec:\n  nodeName: n1",
            &format!("name: a, labels: {{{labels}}}}}\nspec:\n  nodeName: n1"),
        ) + &policy(
            "x",
            "a-open",
            "podSelector: {matchLabels: {pod: a}}, ingress: [{ports: [{port: 80}]}]",
        )
    };
    let mut compiler = PolicyCompiler::new();
    let before = compiler.compile(&snapshot(&yaml("pod: a")), &ctx());
    let after = compiler.compile(&snapshot(&yaml("pod: z")), &ctx());
    let d = diff(&before, &after);
    let (ipcache, endpoints, _) = touched(&d);
    assert_eq!(ipcache, vec![key(XA)]);
    assert_eq!(endpoints, vec![key(XA)]);
    assert_eq!(d.policy.deletes.len(), 1);
    assert!(d.policy.upserts.is_empty());
    assert!(d.policy.deletes.iter().all(|k| k.endpoint == key(XA)));
}

#[test]
fn a_diff_from_empty_writes_the_whole_plan_and_back_removes_it() {
    let plan = compile(
        &(model()
            + &policy(
                "x",
                "p",
                "podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.244.2.0/24]}}]}]",
            )),
    );
    let empty = PolicyPlan::default();
    let forward = diff(&empty, &plan);
    assert_eq!(forward.ipcache.upserts.len(), plan.ipcache.len());
    assert_eq!(forward.policy.upserts.len(), plan.policy_entry_count());
    assert_eq!(forward.endpoints.upserts.len(), plan.endpoints.len());
    let mut from_plan: Vec<_> = plan.policy_entries().collect();
    let mut from_diff = forward.policy.upserts.clone();
    from_plan.sort_by_key(|(k, _)| *k);
    from_diff.sort_by_key(|(k, _)| *k);
    assert_eq!(from_plan, from_diff);
    let back = diff(&plan, &empty);
    assert_eq!(back.ipcache.deletes.len(), plan.ipcache.len());
    assert_eq!(back.policy.deletes.len(), plan.policy_entry_count());
    assert_eq!(back.endpoints.deletes.len(), plan.endpoints.len());
}

#[test]
fn identity_numbers_stay_put_when_other_pods_come_and_go() {
    let mut compiler = PolicyCompiler::new();
    let plan = compiler.compile(&snapshot(&model()), &ctx());
    let ids: Vec<u32> = PODS
        .iter()
        .map(|p| plan.lookup_ip(ip(p)).identity)
        .collect();
    let yaml = pod("a", "first", "any: thing", "n2", "10.244.2.99", true, &[]) + &model();
    let plan = compiler.compile(&snapshot(&yaml), &ctx());
    let again: Vec<u32> = PODS
        .iter()
        .map(|p| plan.lookup_ip(ip(p)).identity)
        .collect();
    assert_eq!(ids, again);
}

#[test]
fn the_plan_round_trips_through_the_abi() {
    let plan = compile(
        &(model()
            + &policy(
                "x",
                "p",
                "podSelector: {}, egress: [{to: [{podSelector: {}}], ports: [{port: 80}]}]",
            )),
    );
    let (key, entry) = plan.policy_entries().next().unwrap();
    assert_eq!(key.endpoint, plan::ip_key(ip(XA)));
    assert_eq!(key.direction, weir_common::policy::POLICY_EGRESS);
    assert_eq!(key.dport, 80u16.to_be_bytes());
    assert_eq!(key.prefixlen, weir_common::policy::POLICY_PREFIX_FULL);
    assert!(plan.rules.contains_key(&entry.rule_id));
    let (ipkey, _) = plan
        .ipcache_entries()
        .find(|(k, _)| k.prefixlen == 32 && k.addr == plan::ip_key(ip(XB)))
        .unwrap();
    assert_eq!(ipkey.addr.to_ne_bytes(), [10, 244, 1, 11]);
    assert_eq!(
        plan.ipcache_entries().next().unwrap().0.prefixlen,
        0,
        "0.0.0.0/0 comes first"
    );
}

#[test]
fn deleted_objects_are_not_left_behind() {
    let yaml = model() + &policy("x", "p", "podSelector: {}, policyTypes: [Ingress]");
    let mut snapshot = snapshot(&yaml);
    let mut compiler = PolicyCompiler::new();
    let with = compiler.compile(&snapshot, &ctx());
    snapshot.remove(&ObjectKey::new(
        Kind::NetworkPolicy,
        ObjectName::new("x", "p"),
    ));
    let without = compiler.compile(&snapshot, &ctx());
    assert!(without.rules.is_empty());
    assert_eq!(
        without.verdict(ip(XA), Ingress, ip(OUTSIDE), TCP, 80),
        Some(Verdict::NotIsolated)
    );
    assert_eq!(diff(&with, &without).endpoints.upserts.len(), 2);
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn label() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("app".to_string()),
            Just("tier".to_string()),
            "[a-z]{0,3}"
        ]
    }

    proptest! {
        #[test]
        fn selectors_never_panic_and_agree_with_a_plain_reading(
            operator in prop_oneof![
                Just("In".to_string()),
                Just("NotIn".to_string()),
                Just("Exists".to_string()),
                Just("DoesNotExist".to_string()),
                "[A-Za-z]{0,8}",
            ],
            key in label(),
            values in proptest::collection::vec(label(), 0..3),
            labels in proptest::collection::btree_map(label(), label(), 0..4),
        ) {
            let requirement = LabelSelectorRequirement { key: key.clone(), operator: operator.clone(), values: Some(values.clone()) };
            let parsed = Selector::parse(&LabelSelector { match_labels: None, match_expressions: Some(vec![requirement]) });
            let have = labels.get(&key);
            let expected = match (operator.as_str(), values.is_empty(), key.is_empty()) {
                (_, _, true) => None,
                ("In", false, _) => Some(have.is_some_and(|v| values.contains(v))),
                ("NotIn", false, _) => Some(!have.is_some_and(|v| values.contains(v))),
                ("Exists", true, _) => Some(have.is_some()),
                ("DoesNotExist", true, _) => Some(have.is_none()),
                _ => None,
            };
            prop_assert_eq!(parsed.ok().map(|s| s.matches(&labels)), expected);
        }

        #[test]
        fn cidr_parsing_never_panics(text in "[0-9./:a-f]{0,24}") {
            let _ = parse_cidr(&text);
        }

        #[test]
        fn ip_blocks_hold_exactly_the_cidr_minus_the_excepts(
            base in any::<u32>(), len in 0u8..=30, excepts in proptest::collection::vec((any::<u32>(), 1u8..=32), 0..4), probe in any::<u32>(),
        ) {
            let cidr = ipnetwork::Ipv4Network::new(Ipv4Addr::from(base), len).unwrap();
            let cidr_text = format!("{}/{len}", Ipv4Addr::from(base));
            let except_texts: Vec<String> = excepts.iter().map(|(a, l)| format!("{}/{}", Ipv4Addr::from(*a), (*l).max(len + 1))).collect();
            let block = k8s_openapi::api::networking::v1::IPBlock { cidr: cidr_text, except: Some(except_texts.clone()) };
            match parse_ip_block(&block) {
                Ok(Peer::Block(CidrBlock { cidr: parsed, except })) => {
                    prop_assert_eq!(parsed.network(), cidr.network());
                    let probe = Ipv4Addr::from(probe);
                    let inside = cidr.contains(probe) && !except.iter().any(|e| e.contains(probe));
                    prop_assert_eq!(CidrBlock { cidr: parsed, except: except.clone() }.contains(probe), inside);
                    prop_assert!(except.iter().all(|e| e.is_subnet_of(parsed) && e.prefix() > parsed.prefix()));
                }
                Ok(other) => prop_assert!(false, "{other:?}"),
                Err((at, problem)) => {
                    prop_assert!(at.starts_with("ipBlock.except["), "{at}");
                    let outside = matches!(problem, Problem::ExceptOutsideCidr { .. });
                    prop_assert!(outside);
                }
            }
        }
    }
}

/// 1,000 pods over 3 nodes in 10 namespaces, 200 policies in the shapes
/// real clusters use; checks every local pod got its entries. Prints the
/// time (never asserted).
#[test]
fn scale_1000_pods_200_policies() {
    let mut yaml = String::new();
    for n in 0..3 {
        yaml += &node(
            &format!("n{}", n + 1),
            &format!("192.168.0.{}", n + 1),
            None,
        );
    }
    for ns in 0..10 {
        yaml += &namespace(&format!("ns{ns}"), &format!("team: t{}", ns % 3));
    }
    for i in 0..1000 {
        let labels = format!("app: app{}, tier: t{}, idx: i{}", i % 20, i % 3, i % 50);
        let ip = format!("10.{}.{}.{}", 100 + i % 3, i / 250, i % 250 + 1);
        yaml += &pod(
            &format!("ns{}", i % 10),
            &format!("p{i}"),
            &labels,
            &format!("n{}", i % 3 + 1),
            &ip,
            true,
            &["http:8080", "metrics:9090"],
        );
    }
    for p in 0..200 {
        let ns = format!("ns{}", p % 10);
        let app = p % 20;
        let spec = match p % 5 {
            0 => format!(
                "podSelector: {{matchLabels: {{app: app{app}}}}}, ingress: [{{from: [{{podSelector: {{matchLabels: {{app: app{}}}}}}}], ports: [{{port: http}}]}}]",
                (app + 1) % 20
            ),
            1 => format!(
                "podSelector: {{matchLabels: {{app: app{app}}}}}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{team: t{}}}}}}}], ports: [{{port: 8000, endPort: 8100}}]}}]",
                p % 3
            ),
            2 => format!(
                "podSelector: {{matchExpressions: [{{key: tier, operator: In, values: [t{}]}}]}}, egress: [{{to: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: app{app}}}}}}}], ports: [{{port: metrics}}]}}]",
                p % 3
            ),
            3 => format!(
                "podSelector: {{matchLabels: {{app: app{app}}}}}, ingress: [{{from: [{{ipBlock: {{cidr: 10.{}.0.0/16, except: [10.{}.{}.0/24]}}}}]}}]",
                100 + p % 3,
                100 + p % 3,
                p % 4
            ),
            _ => "podSelector: {}, policyTypes: [Ingress]".to_string(),
        };
        yaml += &policy(&ns, &format!("pol{p}"), &spec);
    }
    let snapshot = snapshot(&yaml);
    let mut compiler = PolicyCompiler::new();
    let mut totals = PlanStats::default();
    let started = std::time::Instant::now();
    for n in 1..=3 {
        let ctx = PolicyContext {
            node_name: format!("n{n}"),
            ..PolicyContext::default()
        };
        let node_started = std::time::Instant::now();
        let plan = compiler.compile(&snapshot, &ctx);
        let elapsed = node_started.elapsed();
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        let stats = plan.stats();
        println!(
            "policy scale n{n}: {elapsed:?} for {} endpoints, {} identities, {} ipcache, {} policy entries, {} rules, ~{} KiB of map memory",
            stats.endpoints,
            stats.identities,
            stats.ipcache_entries,
            stats.policy_entries,
            stats.rules,
            stats.map_bytes() / 1024
        );
        assert!(stats.endpoints >= 333);
        assert!(stats.ipcache_entries >= 1000 + 3);
        assert!(stats.policy_entries as u32 <= weir_common::policy::POLICY_ENTRIES);
        // Every namespace has a default deny, so every local pod is
        // isolated for ingress and names it.
        for endpoint in plan.endpoints.values() {
            assert!(endpoint.ingress.isolated_by.is_some(), "{}", endpoint.pod);
        }
        // Spot-check that entries are there: ns0's app1 pods allow app0?
        // Policy 0 (ns0, app0 ← app1 on http): a local app0 pod in ns0
        // allows an app1 pod of ns0 on 8080.
        let app0 = plan.endpoints.iter().find(|(_, e)| {
            e.pod.namespace == "ns0"
                && snapshot.pods[&e.pod].metadata.labels.as_ref().unwrap()["app"] == "app0"
        });
        let app1 = snapshot.pods.iter().find(|(name, p)| {
            name.namespace == "ns0" && p.metadata.labels.as_ref().unwrap()["app"] == "app1"
        });
        if let (Some((app0_ip, _)), Some((_, app1))) = (app0, app1) {
            let peer: Ipv4Addr = app1
                .status
                .as_ref()
                .unwrap()
                .pod_ip
                .as_ref()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                plan.verdict(*app0_ip, Ingress, peer, TCP, 8080)
                    .unwrap()
                    .is_allowed()
            );
            assert!(
                !plan
                    .verdict(*app0_ip, Ingress, peer, TCP, 9090)
                    .unwrap()
                    .is_allowed()
            );
        }
        totals.policy_entries += stats.policy_entries;
    }
    println!(
        "policy scale: 3 nodes compiled in {:?}, {} policy entries in all",
        started.elapsed(),
        totals.policy_entries
    );
}
