//! Backend selection with real traffic:
//!
//! - sessionAffinity ClientIP with timeoutSeconds: a client sticks to one
//!   backend while it keeps coming back within the timeout; after an idle
//!   period longer than the timeout it chooses afresh;
//! - Maglev (annotation `weir.io/lb-algorithm: maglev`): when one of N
//!   backends goes away, only the flows it carried and about 1/N more
//!   may move; with the agent flag `--lb-algorithm maglev` Services without
//!   the annotation use it too.
#![allow(clippy::unwrap_used)]

mod svc_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use serde_json::json;
use svc_support::*;
use weir_lab::cluster::{Cluster, PodSpec, PodState, PortProbe, Reply, tally};
use weir_lab::{NetNs, Pod, Proto};

const AFFINITY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 2, 10);
const AFFINITY_TIMEOUT_S: u64 = 2;
const MAGLEV_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 2, 20);
const PLAIN_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 2, 21);

fn pod(name: &str, app: &str) -> PodSpec {
    PodSpec::new(name)
        .label("app", app)
        .port("p", 8080, Proto::Tcp)
        .port("p-udp", 8080, Proto::Udp)
}

fn ports() -> serde_json::Value {
    json!([
        port("p", Proto::Tcp, 80, json!("p")),
        port("p-udp", Proto::Udp, 80, json!("p-udp")),
    ])
}

fn at(pods: &[&Pod]) -> Vec<SocketAddrV4> {
    pods.iter()
        .map(|p| SocketAddrV4::new(p.ip(), 8080))
        .collect()
}

/// The one backend all `n` probes went to; panics when they spread.
fn sticky_backend(what: &str, ns: &NetNs, proto: Proto, n: u32) -> String {
    let results = probes(ns, proto, AFFINITY_VIP, 80, n);
    let counts = tally(&results);
    assert!(
        counts.len() == 1 && !counts.keys().next().unwrap().starts_with('<'),
        "{what}: {n} requests within the affinity timeout must all reach one backend: {counts:?}"
    );
    counts.into_keys().next().unwrap()
}

#[test]
fn session_affinity_client_ip_sticks_then_expires() {
    require_root();
    let cluster = Cluster::builder().nodes(2).build().unwrap();
    let (x1, _s1) = cluster.add_backend(1, pod("x1", "aff")).unwrap();
    let (x2, _s2) = cluster.add_backend(1, pod("x2", "aff")).unwrap();
    let (x3, _s3) = cluster.add_backend(2, pod("x3", "aff")).unwrap();
    let clients: Vec<Pod> = [(1, "c1"), (1, "c2"), (2, "c3"), (2, "c4")]
        .into_iter()
        .map(|(node, name)| cluster.add_pod(node, PodSpec::new(name)).unwrap())
        .collect();
    cluster
        .apply(
            "affinity.yaml",
            &[service(
                "aff",
                AFFINITY_VIP,
                json!({"selector": {"app": "aff"}, "ports": ports(),
                       "sessionAffinity": "ClientIP",
                       "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": AFFINITY_TIMEOUT_S}}}),
            )],
        )
        .unwrap();
    for proto in Proto::ALL {
        cluster
            .wait_backends(AFFINITY_VIP, 80, proto, &at(&[&x1, &x2, &x3]))
            .unwrap();
        let fe = cluster.frontend(1, AFFINITY_VIP, 80, proto).unwrap();
        let entry = fe.entry_for(true).unwrap();
        assert_eq!(entry.affinity_timeout, AFFINITY_TIMEOUT_S as u32, "{fe:?}");
    }

    for proto in Proto::ALL {
        // Stickiness: every client, back-to-back connections (each probe a
        // new socket and source port), always the same backend.
        let mut sticky: BTreeMap<String, String> = clients
            .iter()
            .map(|c| {
                let what = format!("{} → aff/{proto}", c.name());
                (
                    c.name().to_string(),
                    sticky_backend(&what, c.netns(), proto, 30),
                )
            })
            .collect();
        // The node's own processes are clients too.
        let node_choice = sticky_backend(
            &format!("node1 → aff/{proto}"),
            cluster.node(1).netns(),
            proto,
            30,
        );
        println!("{proto}: sticky choices {sticky:?}, node1 → {node_choice}");

        // Expiry: after an idle period longer than the timeout a client
        // chooses afresh. A fresh uniform choice keeps the old backend with
        // probability 1/3, so some client among four changes within a round
        // with probability 1 - (1/3)^4; ten rounds all failing has
        // probability 3^-40. Within a round, each client stays sticky.
        let mut changed = None;
        for round in 1..=10 {
            std::thread::sleep(
                Duration::from_secs(AFFINITY_TIMEOUT_S) + Duration::from_millis(800),
            );
            for c in &clients {
                let what = format!("{} → aff/{proto}, round {round}", c.name());
                let now = sticky_backend(&what, c.netns(), proto, 5);
                let before = sticky.insert(c.name().to_string(), now.clone()).unwrap();
                if before != now && changed.is_none() {
                    changed = Some(format!("{}: {before} → {now} in round {round}", c.name()));
                }
            }
            if changed.is_some() {
                break;
            }
        }
        let changed = changed.unwrap_or_else(|| {
            panic!(
                "{proto}: no client chose a new backend after its affinity expired, in 10 rounds"
            )
        });
        println!("{proto}: affinity expired, {changed}");
    }
}

/// One TCP request from each source port in turn (a port may repeat, each
/// time a new flow); the backend of each.
fn backends_from(what: &str, ns: &NetNs, vip: Ipv4Addr, ports: &[u16]) -> Vec<String> {
    let outcomes = weir_lab::cluster::traffic::tcp_from_port(
        ns,
        ports,
        SocketAddrV4::new(vip, 80),
        Duration::from_secs(2),
    )
    .unwrap();
    ports
        .iter()
        .zip(outcomes)
        .map(|(port, outcome)| match outcome {
            PortProbe::Reply(line) => Reply::parse(&line).unwrap().backend,
            other => panic!("{what}: source port {port} → {vip}:80: {other:?}"),
        })
        .collect()
}

/// One request from each source port; the backend per port.
fn mapping(ns: &NetNs, vip: Ipv4Addr, ports: &[u16]) -> BTreeMap<u16, String> {
    ports
        .iter()
        .copied()
        .zip(backends_from("maglev", ns, vip, ports))
        .collect()
}

#[test]
fn maglev_moves_few_flows_when_a_backend_goes() {
    require_root();
    let mut cluster = Cluster::builder().nodes(2).build().unwrap();
    let mut backends = Vec::new();
    for (node, name) in [(1, "m1"), (1, "m2"), (1, "m3"), (2, "m4"), (2, "m5")] {
        backends.push(cluster.add_backend(node, pod(name, "mag")).unwrap());
    }
    let client = cluster.add_pod(1, PodSpec::new("client")).unwrap();
    let mut svc = service(
        "mag",
        MAGLEV_VIP,
        json!({"selector": {"app": "mag"}, "ports": ports()}),
    );
    svc["metadata"]["annotations"] = json!({"weir.io/lb-algorithm": "maglev"});
    cluster
        .apply(
            "maglev.yaml",
            &[
                svc,
                service(
                    "plain",
                    PLAIN_VIP,
                    json!({"selector": {"app": "mag"}, "ports": ports()}),
                ),
            ],
        )
        .unwrap();
    let all: Vec<&Pod> = backends.iter().map(|(p, _)| p).collect();
    cluster
        .wait_backends(MAGLEV_VIP, 80, Proto::Tcp, &at(&all))
        .unwrap();
    cluster
        .wait_backends(PLAIN_VIP, 80, Proto::Tcp, &at(&all))
        .unwrap();
    let fe = cluster.frontend(1, MAGLEV_VIP, 80, Proto::Tcp).unwrap();
    assert!(
        fe.entry_for(true)
            .unwrap()
            .has(weir_common::lb::svc_flags::MAGLEV),
        "{fe:?}"
    );

    // 400 flows, each its own source port; a request per flow, closed with
    // a RST so the same 5-tuple opens anew (and is balanced anew) later.
    let ports: Vec<u16> = (41000..41400).collect();
    let before = mapping(client.netns(), MAGLEV_VIP, &ports);
    let again = mapping(client.netns(), MAGLEV_VIP, &ports);
    assert_eq!(
        before, again,
        "Maglev maps each 5-tuple to the same backend every time"
    );
    let per_backend = tally_values(&before);
    println!("maglev: 400 flows over 5 backends: {per_backend:?}");
    assert_eq!(
        per_backend.len(),
        5,
        "every backend carries flows: {per_backend:?}"
    );

    // m3 leaves (not ready): its flows must move, the others mostly stay.
    let (m3, _) = &backends[2];
    cluster.set_pod_state(m3, PodState::NotReady).unwrap();
    let rest: Vec<&Pod> = all.iter().copied().filter(|p| p.name() != "m3").collect();
    cluster
        .wait_backends(MAGLEV_VIP, 80, Proto::Tcp, &at(&rest))
        .unwrap();
    let after = mapping(client.netns(), MAGLEV_VIP, &ports);
    let on_removed = before.values().filter(|b| *b == "m3").count();
    let others_moved = ports
        .iter()
        .filter(|p| before[p] != "m3" && before[p] != after[p])
        .count();
    let others = ports.len() - on_removed;
    assert!(
        after.values().all(|b| b != "m3"),
        "no flow stays on the removed backend"
    );
    println!(
        "maglev: m3 removed: its {on_removed} flows moved; {others_moved} of the other {others} \
         flows moved ({:.1}%)",
        100.0 * others_moved as f64 / others as f64
    );
    // Maglev's table churn for 5 → 4 backends and a 1021-entry table is a
    // few percent; uniform random re-selection would move 3/4 of them.
    assert!(
        (others_moved as f64) <= 0.10 * others as f64,
        "{others_moved} of {others} flows not on the removed backend moved"
    );
    // At most ~1/N of all flows move, plus slack.
    let moved = ports.iter().filter(|p| before[p] != after[p]).count();
    assert!(
        (moved as f64) <= (1.0 / 5.0 + 0.10) * ports.len() as f64,
        "{moved} of {} flows moved when 1 of 5 backends went",
        ports.len()
    );

    // Without the annotation the Service picks at random: one 5-tuple
    // reopened 40 times lands on several backends (all on one has
    // probability 4^-39).
    let one_port = [42000u16; 40];
    let seen: BTreeSet<String> = backends_from("plain", client.netns(), PLAIN_VIP, &one_port)
        .into_iter()
        .collect();
    assert!(
        seen.len() > 1,
        "random selection: one tuple always reached {seen:?}"
    );

    // The agent flag makes Maglev the default: the same Service without
    // annotation now maps the tuple to one backend every time.
    cluster.agent_mut(1).kill().unwrap();
    cluster
        .agent_mut(1)
        .restart_with(&["--lb-algorithm".to_string(), "maglev".to_string()])
        .unwrap();
    cluster.agent_mut(1).wait_ready().unwrap();
    cluster
        .wait_frontend(1, PLAIN_VIP, 80, Proto::Tcp, "Maglev flag", |fe| {
            fe.entry_for(true)
                .is_some_and(|e| e.has(weir_common::lb::svc_flags::MAGLEV))
        })
        .unwrap();
    let seen: BTreeSet<String> = backends_from(
        "plain with --lb-algorithm maglev",
        client.netns(),
        PLAIN_VIP,
        &one_port,
    )
    .into_iter()
    .collect();
    assert_eq!(
        seen.len(),
        1,
        "--lb-algorithm maglev: one tuple, one backend: {seen:?}"
    );
}

fn tally_values(map: &BTreeMap<u16, String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for b in map.values() {
        *counts.entry(b.clone()).or_default() += 1;
    }
    counts
}
