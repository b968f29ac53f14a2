//! Change over time: revisions, diffs, stable ids, deletions.
#![allow(clippy::unwrap_used)]

use super::*;

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

#[test]
fn a_plan_too_big_for_the_maps_is_named() {
    let plan = compile(&(model() + &policy("x", "open", "podSelector: {}, ingress: [{}]")));
    let stats = plan.stats();
    assert_eq!(stats.over_capacity(&Capacities::default()), vec![]);
    let tiny = Capacities {
        policy: 1,
        ..Capacities::default()
    };
    assert_eq!(
        stats.over_capacity(&tiny),
        vec![(weir_common::policy::POLICY, 2, 1)]
    );
}

#[test]
fn emit_allows_flags_only_the_watched_pod() {
    let yaml = model() + &policy("x", "deny", "podSelector: {}, policyTypes: [Ingress]");
    let mut compiler = PolicyCompiler::new();
    let plain = compiler.compile(&snapshot(&yaml), &ctx());
    let mut watched = ctx();
    watched.emit_allows.insert(ObjectName::new("x", "a"));
    let plan = compiler.compile(&snapshot(&yaml), &watched);
    let flags = |plan: &PolicyPlan, pod: &str| plan.endpoints[&ip(pod)].abi().flags;
    let emit = weir_common::policy::ep_policy_flags::EMIT_ALLOWS;
    assert_eq!(flags(&plain, XA) & emit, 0);
    assert_eq!(flags(&plan, XA) & emit, emit);
    assert_eq!(flags(&plan, XB) & emit, 0);
    let d = diff(&plain, &plan);
    assert_eq!(d.endpoints.upserts.len(), 1, "{d:?}");
    assert!(d.policy.is_empty() && d.ipcache.is_empty());
    // Every pod with an address is named, local or not.
    assert_eq!(plan.pods[&ip(ZA)], ObjectName::new("z", "a"));
    assert_eq!(plan.pods.len(), 4);
}
