//! The policy maps through the real, pinned datapath: a plan written by
//! `Datapath::apply_policy`, diffed on the next apply, adopted after a
//! restart (nothing rewritten, nothing flushed), the revision and settings
//! kept in the pinned config, and a plan over capacity refused whole.
//! Needs root and the real eBPF object.
#![allow(clippy::unwrap_used)]

mod datapath_runtime_support;

use std::{collections::BTreeMap, path::Path};

use datapath_runtime_support::*;
use weir_agent::{
    datapath::Datapath,
    k8s::Snapshot,
    policy::{PolicyCompiler, PolicyContext, PolicyPlan},
};
use weir_common::policy::{self as names, policy_config_flags};

fn objects(with_policy: bool) -> String {
    let mut yaml = String::from(
        "---\napiVersion: v1\nkind: Node\nmetadata: {name: n1}\n\
         status: {addresses: [{type: InternalIP, address: 192.168.0.1}]}\n\
         ---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {ns: x}}\n",
    );
    for (name, ip) in [("a", "10.244.1.10"), ("b", "10.244.1.11")] {
        yaml += &format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{namespace: x, name: {name}, labels: {{pod: {name}}}}}\n\
             spec: {{nodeName: n1, containers: [{{name: c, image: x}}]}}\n\
             status: {{phase: Running, podIP: {ip}}}\n"
        );
    }
    if with_policy {
        yaml += "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
                 metadata: {namespace: x, name: web}\n\
                 spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {}}], \
                 ports: [{port: 80}, {port: 8000, endPort: 8100}]}]}\n";
    }
    yaml
}

fn compile(compiler: &mut PolicyCompiler, with_policy: bool) -> PolicyPlan {
    let parsed = weir_agent::manifests::parse_yaml(Path::new("t.yaml"), &objects(with_policy));
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let snapshot = Snapshot::from_objects(parsed.objects.into_iter().map(|p| p.object));
    let ctx = PolicyContext {
        node_name: "n1".into(),
        ..PolicyContext::default()
    };
    let plan = compiler.compile(&snapshot, &ctx);
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    plan
}

fn fill(dp: &Datapath, name: &str) -> u64 {
    let maps = dp.map_fill().unwrap();
    maps.iter().find(|m| m.name == name).unwrap().entries
}

#[test]
fn policy_maps_are_written_diffed_and_adopted_after_a_restart() {
    require_root_and_object();
    let root = TestBpffs::new();
    let mut compiler = PolicyCompiler::new();
    let plan = compile(&mut compiler, true);
    let entries = plan.ipcache.len() + plan.policy_entries().count() + plan.endpoints.len();
    assert!(
        plan.policy_entries().count() > 2,
        "a port range is several prefixes"
    );

    let mut dp = root.load();
    assert_eq!(dp.policy_config().unwrap().revision, 0, "fresh maps");
    let first = dp.apply_policy(&plan).unwrap();
    assert!(first.adopted);
    assert_eq!(first.written() as usize, entries);
    assert_eq!((first.deleted(), first.failed), (0, 0));
    assert_eq!(first.revision, plan.revision);
    assert!(first.map_bytes > 0);
    assert_eq!(
        fill(&dp, names::POLICY) as usize,
        plan.policy_entries().count()
    );
    assert_eq!(fill(&dp, names::IPCACHE) as usize, plan.ipcache.len());

    let again = dp.apply_policy(&plan).unwrap();
    assert!(!again.adopted);
    assert_eq!(again.written() + again.deleted(), 0, "nothing changed");
    dp.set_policy_settings(true, 100, 10).unwrap();
    drop(dp);

    // A restarted agent finds the revision and settings, and adopts.
    let mut dp = root.load();
    let config = dp.policy_config().unwrap();
    assert_eq!(config.revision, plan.revision);
    assert_eq!((config.events_per_sec, config.allow_sample), (100, 10));
    assert_ne!(config.flags & policy_config_flags::AUDIT_ALL, 0);
    let mut compiler = PolicyCompiler::starting_at(config.revision);
    let same = compile(&mut compiler, true);
    let adopted = dp.apply_policy(&same).unwrap();
    assert!(adopted.adopted);
    assert_eq!(
        adopted.written() + adopted.deleted(),
        0,
        "adopted, not rewritten"
    );

    // Without the policy only the endpoints' isolation and entries go.
    let without = compile(&mut compiler, false);
    assert_ne!(without.revision, config.revision);
    let removed = dp.apply_policy(&without).unwrap();
    assert_eq!(
        removed.policy_deleted as usize,
        plan.policy_entries().count()
    );
    assert_eq!(removed.failed, 0);
    assert_eq!(fill(&dp, names::POLICY), 0);
    let config = dp.policy_config().unwrap();
    assert_eq!(config.revision, without.revision);
    assert_eq!(config.events_per_sec, 100, "settings survive applies");
    assert_eq!(
        config.flags & policy_config_flags::AUDIT_ALL,
        0,
        "the plan says no audit"
    );
    assert!(dp.policy_drops().unwrap().is_empty());
    assert_eq!(dp.policy_events_lost().unwrap(), 0);
    let metrics = dp.metrics().unwrap();
    assert!(metrics.maps.iter().any(|m| m.name == names::POLICY_CT4));
    // The event ring opens from its pin.
    let mut reader = dp.policy_event_reader().unwrap();
    assert!(
        reader
            .next(std::time::Duration::from_millis(20))
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_plan_over_capacity_is_refused_whole() {
    require_root_and_object();
    let root = TestBpffs::new();
    let mut options = root.options();
    options.max_entries = BTreeMap::from([(names::POLICY.to_string(), 2)]);
    let mut dp = Datapath::load(&options).unwrap();
    let plan = compile(&mut PolicyCompiler::new(), true);
    let error = dp.apply_policy(&plan).unwrap_err().to_string();
    assert!(error.contains(names::POLICY), "{error}");
    assert!(error.contains("capacity 2"), "{error}");
    assert_eq!(fill(&dp, names::POLICY), 0, "nothing written");
    assert_eq!(fill(&dp, names::IPCACHE), 0, "nothing written");
    assert_eq!(dp.policy_config().unwrap().revision, 0);
}

/// A plan of `endpoints` local pods with `per_endpoint` ingress entries
/// each, by hand (the compiler's own scale test covers compiling).
fn synthetic_plan(endpoints: u32, per_endpoint: u32, revision: u32) -> PolicyPlan {
    use weir_agent::policy::{DirectionPolicy, EndpointPolicy, PeerPort, ports::PortMatch};
    let mut plan = PolicyPlan {
        revision,
        ..PolicyPlan::default()
    };
    for e in 0..endpoints {
        let ip = std::net::Ipv4Addr::from(0x0af4_0000 + e);
        plan.ipcache.insert(
            ipnetwork::Ipv4Network::new(ip, 32).unwrap(),
            weir_common::policy::IpcacheEntry {
                identity: 256 + e,
                cidr_identity: 0,
            },
        );
        let mut ingress = DirectionPolicy {
            isolated_by: Some(1),
            ..DirectionPolicy::default()
        };
        for i in 0..per_endpoint {
            let peer = PeerPort {
                identity: 256 + i,
                port: PortMatch {
                    proto: 6,
                    port: 80,
                    port_bits: 16,
                },
            };
            ingress.allows.insert(peer, 2);
        }
        plan.endpoints.insert(
            ip,
            EndpointPolicy {
                identity: 256 + e,
                ingress,
                ..EndpointPolicy::default()
            },
        );
    }
    plan
}

#[test]
fn a_node_sized_plan_is_programmed_quickly() {
    require_root_and_object();
    let root = TestBpffs::new();
    let mut dp = root.load();
    // ~ one node of the scale case: 333 endpoints, 83k entries.
    let plan = synthetic_plan(333, 250, 1);
    let start = std::time::Instant::now();
    let stats = dp.apply_policy(&plan).unwrap();
    let full = start.elapsed();
    assert_eq!(stats.failed, 0);
    assert_eq!(stats.policy_entries, 333 * 250);
    // One endpoint's entries change.
    let mut next = synthetic_plan(333, 250, 2);
    let first = *next.endpoints.keys().next().unwrap();
    next.endpoints
        .get_mut(&first)
        .unwrap()
        .ingress
        .allows
        .clear();
    let start = std::time::Instant::now();
    let stats = dp.apply_policy(&next).unwrap();
    let incremental = start.elapsed();
    assert_eq!(stats.policy_deleted, 250);
    assert_eq!(stats.written(), 1, "only the endpoint's flags changed");
    println!(
        "policy apply: {} entries in {:?}, one endpoint's change in {:?}",
        333 * 250 + 333 * 2,
        full,
        incremental
    );
}
