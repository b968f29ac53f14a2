//! Kubernetes NetworkPolicy semantics, as truth tables over the model.
#![allow(clippy::unwrap_used)]

use super::*;

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
fn host_network_and_finished_pods_are_not_endpoints_or_peers() {
    let host_network = pod("x", "hn", "pod: a", "n1", N1, true, &[]).replace(
        "spec:\n  nodeName: n1",
        "spec:\n  hostNetwork: true\n  nodeName: n1",
    );
    let done = pod("x", "done", "pod: a", "n1", "10.244.1.77", true, &[])
        .replace("phase: Running", "phase: Succeeded");
    let plan = compile(&(model() + &host_network + &done));
    assert_eq!(plan.lookup_ip(ip(N1)).identity, identity::HOST);
    assert!(!plan.endpoints.contains_key(&ip("10.244.1.77")));
    assert_eq!(plan.lookup_ip(ip("10.244.1.77")).identity, identity::WORLD);
    assert_eq!(plan.endpoints.len(), 3);
}
