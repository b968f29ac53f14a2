//! The scale: 1,000 pods, 3 nodes, 200 policies.
#![allow(clippy::unwrap_used)]

use super::*;

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
        assert_eq!(stats.over_capacity(&Capacities::default()), vec![]);
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
