//! Bad input: reported per object with its field, failing closed.
#![allow(clippy::unwrap_used)]

use super::*;

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
    let warning = crate::k8s::ObjectWarning::from(&plan.errors[0]);
    assert_eq!(warning.to_string(), errors[0], "the same text as a warning");
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
fn a_rule_whose_only_peer_is_ipv6_allows_nothing_rather_than_everyone() {
    let plan = compile(
        &(model()
            + &policy(
                "x",
                "v6",
                "podSelector: {}, ingress: [{from: [{ipBlock: {cidr: \"fd00::/8\"}}]}]",
            )),
    );
    for peer in PODS.iter().chain(&[OUTSIDE, N2]) {
        assert!(!allowed(&plan, XA, Ingress, peer, TCP, 80), "{peer}");
    }
}
