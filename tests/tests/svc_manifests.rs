//! The manifests directory as the API server: every change (create, edit,
//! rename, delete of a file) reaches every node's datapath, and the time
//! it took is reported (the issue asks for 1 s; tests never assert times,
//! they poll up to a generous deadline); a bad document is reported (log
//! with file and document index, /metrics) while the rest applies;
//! ExternalName Services are ignored by the dataplane, as kube-proxy does;
//! /metrics shows what is programmed.
#![allow(clippy::unwrap_used)]

mod svc_support;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use svc_support::*;
use weir_lab::cluster::{Cluster, PodSpec, Reply, Server, poll};
use weir_lab::{Pod, Proto};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 4, 10);
const GOOD_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 4, 20);
const EXT_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 4, 30);

fn svc(target: u16) -> Value {
    service(
        "live",
        VIP,
        json!({"selector": {"app": "live"}, "ports": [
            port("tcp", Proto::Tcp, 80, json!(target)),
            port("udp", Proto::Udp, 80, json!(target)),
        ]}),
    )
}

/// Time until every node's map holds the backends `ports` of `pods`, and
/// until a client pod gets answers from servers named with `suffix`.
fn observe(
    cluster: &Cluster,
    client: &Pod,
    what: &str,
    start: Instant,
    want: &[SocketAddrV4],
    suffix: &str,
) {
    for proto in Proto::ALL {
        cluster.wait_backends(VIP, 80, proto, want).unwrap();
    }
    let in_maps = start.elapsed();
    poll(Duration::from_secs(20), || {
        let r = client.probe(Proto::Tcp, VIP, 80)?;
        Ok(Reply::of(&r).is_some_and(|r| r.backend.ends_with(suffix)))
    })
    .unwrap_or_else(|e| panic!("{what}: traffic never followed: {e:#}"));
    println!(
        "{what}: in both nodes' maps after {in_maps:?}, answering traffic after {:?}",
        start.elapsed()
    );
}

fn observe_gone(cluster: &Cluster, what: &str, start: Instant) {
    for proto in Proto::ALL {
        cluster.wait_no_frontend(VIP, 80, proto).unwrap();
    }
    println!(
        "{what}: gone from both nodes' maps after {:?}",
        start.elapsed()
    );
}

#[test]
fn manifest_changes_bad_documents_external_name_and_metrics() {
    require_root();
    let cluster = Cluster::builder().nodes(2).build().unwrap();
    // Two servers per backend pod: "<pod>" on 8080 and "<pod>-alt" on 8081,
    // so a changed targetPort shows in the answers.
    let mut servers: Vec<Server> = Vec::new();
    let mut pods = Vec::new();
    for (node, name) in [(1, "w1"), (2, "w2")] {
        let spec = PodSpec::new(name).label("app", "live");
        let pod = cluster.add_pod(node, spec).unwrap();
        servers.push(Server::start(pod.netns(), name, &[8080], &[8080]).unwrap());
        servers.push(Server::start(pod.netns(), &format!("{name}-alt"), &[8081], &[8081]).unwrap());
        pods.push(pod);
    }
    let client = cluster.add_pod(1, PodSpec::new("client")).unwrap();
    let at = |port: u16| -> Vec<SocketAddrV4> {
        pods.iter()
            .map(|p| SocketAddrV4::new(p.ip(), port))
            .collect()
    };
    let syncs_before = cluster
        .agent(1)
        .metric("weir_sync_total{result=\"ok\"}")
        .unwrap();

    // Create.
    let start = Instant::now();
    cluster.apply("live.yaml", &[svc(8080)]).unwrap();
    observe(
        &cluster,
        &client,
        "create live.yaml",
        start,
        &at(8080),
        "w1",
    );
    observe(&cluster, &client, "(both backends)", start, &at(8080), "w2");

    // Edit in place (truncate and rewrite, as an editor without atomic
    // save does): the target port changes.
    let start = Instant::now();
    let path = cluster.manifests_dir().join("live.yaml");
    std::fs::write(
        &path,
        weir_lab::cluster::objects::yaml_documents(&[svc(8081)]),
    )
    .unwrap();
    observe(
        &cluster,
        &client,
        "edit live.yaml (targetPort 8081)",
        start,
        &at(8081),
        "-alt",
    );

    // Rename within manifest names: the objects stay, with no gap.
    let start = Instant::now();
    cluster
        .rename_manifest("live.yaml", "renamed.yaml")
        .unwrap();
    let mut gaps = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        for node in 1..=2 {
            if !cluster
                .frontend(node, VIP, 80, Proto::Tcp)
                .unwrap()
                .exists()
            {
                gaps += 1;
            }
        }
    }
    assert_eq!(
        gaps, 0,
        "renaming live.yaml to renamed.yaml removed the Service for a while"
    );

    // Rename to a name the agent does not read: the objects go.
    let start = Instant::now();
    cluster
        .rename_manifest("renamed.yaml", "renamed.yaml.off")
        .unwrap();
    observe_gone(&cluster, "rename to renamed.yaml.off", start);
    // And back.
    let start = Instant::now();
    cluster
        .rename_manifest("renamed.yaml.off", "renamed.yaml")
        .unwrap();
    observe(
        &cluster,
        &client,
        "rename back to renamed.yaml",
        start,
        &at(8081),
        "-alt",
    );

    // A file with a bad document between two good ones, and a file that is
    // no YAML at all: reported, the rest applies.
    let bad_before = cluster
        .agent(1)
        .metric("weir_manifest_bad_documents{reason=\"all\"}")
        .unwrap();
    let good = |name: &str, ip: Ipv4Addr| {
        service(
            name,
            ip,
            json!({"selector": {"app": "live"}, "ports": [port("tcp", Proto::Tcp, 80, json!(8080))]}),
        )
    };
    let mixed = format!(
        "---\n{}\n---\n{}\n---\n{}\n",
        good("good-a", GOOD_VIP),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "bad", "namespace": "default"},
               "spec": {"clusterIP": "10.96.4.21", "ports": "not a list"}}),
        good("good-b", Ipv4Addr::new(10, 96, 4, 22)),
    );
    cluster.write_manifest("mixed.yaml", &mixed).unwrap();
    cluster
        .write_manifest("broken.yaml", "kind: [unclosed\n  - : :\n")
        .unwrap();
    let start = Instant::now();
    cluster
        .wait_backends(GOOD_VIP, 80, Proto::Tcp, &at(8080))
        .unwrap();
    cluster
        .wait_backends(Ipv4Addr::new(10, 96, 4, 22), 80, Proto::Tcp, &at(8080))
        .unwrap();
    println!(
        "good documents next to bad ones applied after {:?}",
        start.elapsed()
    );
    let r = client.probe(Proto::Tcp, GOOD_VIP, 80).unwrap();
    assert!(r.is_connected(), "{r:?}");
    assert!(
        !cluster
            .frontend(1, Ipv4Addr::new(10, 96, 4, 21), 80, Proto::Tcp)
            .unwrap()
            .exists()
    );
    for agent in cluster.agents() {
        let name = agent.node().name().to_string();
        poll(Duration::from_secs(20), || {
            Ok(agent.metric("weir_manifest_bad_documents{reason=\"all\"}")
                >= Some(bad_before + 2.0))
        })
        .unwrap_or_else(|e| panic!("{name}: bad documents not counted: {e:#}"));
        let log = agent.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("skipping a bad manifest document") && l.contains("mixed.yaml"))
            .unwrap_or_else(|| panic!("{name}: no log line about mixed.yaml:\n{log}"));
        assert!(
            line.contains("document=1"),
            "{name}: the log names the document index: {line}"
        );
        assert!(
            log.contains("broken.yaml"),
            "{name}: the log names broken.yaml"
        );
    }

    // ExternalName Services are not programmed: no frontend for its
    // (invalid, but present) clusterIP, no change in the counts.
    let frontends = cluster
        .agent(1)
        .metric("weir_frontends_programmed")
        .unwrap();
    let services = cluster.agent(1).metric("weir_services_programmed").unwrap();
    let mut ext = service(
        "ext",
        EXT_VIP,
        json!({"type": "ExternalName", "externalName": "example.invalid",
               "selector": {"app": "live"}, "ports": [port("tcp", Proto::Tcp, 80, json!(8080))]}),
    );
    cluster.apply("external-name.yaml", &[ext.clone()]).unwrap();
    ext["spec"].as_object_mut().unwrap().remove("clusterIP");
    cluster
        .apply(
            "external-name-2.yaml",
            &[{
                let mut e = ext.clone();
                e["metadata"]["name"] = json!("ext2");
                e
            }],
        )
        .unwrap();
    // The loader has seen both once the Service count in /metrics says so.
    for agent in cluster.agents() {
        poll(Duration::from_secs(20), || {
            Ok(agent.metric("weir_objects{kind=\"Service\"}") == Some(5.0))
        })
        .unwrap();
    }
    for node in 1..=2 {
        assert!(
            !cluster
                .frontend(node, EXT_VIP, 80, Proto::Tcp)
                .unwrap()
                .exists()
        );
    }
    assert_eq!(
        cluster.agent(1).metric("weir_frontends_programmed"),
        Some(frontends)
    );
    assert_eq!(
        cluster.agent(1).metric("weir_services_programmed"),
        Some(services)
    );
    // A ClusterIP Service turned into ExternalName loses its frontend.
    let start = Instant::now();
    let mut turned = svc(8081);
    turned["spec"] = json!({"type": "ExternalName", "externalName": "example.invalid"});
    cluster.apply("renamed.yaml", &[turned]).unwrap();
    observe_gone(&cluster, "live turned ExternalName", start);

    // Delete.
    cluster.apply("renamed.yaml", &[svc(8080)]).unwrap();
    observe(
        &cluster,
        &client,
        "live back",
        Instant::now(),
        &at(8080),
        "w1",
    );
    let start = Instant::now();
    cluster.remove_manifest("renamed.yaml").unwrap();
    observe_gone(&cluster, "delete renamed.yaml", start);

    // /metrics: what is programmed now (good-a, good-b: 2 Services, one
    // TCP frontend each, both backends), and the syncs behind it.
    for agent in cluster.agents() {
        let name = agent.node().name();
        assert_eq!(
            agent.metric("weir_services_programmed"),
            Some(2.0),
            "{name}"
        );
        assert_eq!(
            agent.metric("weir_frontends_programmed"),
            Some(2.0),
            "{name}"
        );
        assert_eq!(
            agent.metric("weir_backends_programmed"),
            Some(2.0),
            "{name}"
        );
        assert_eq!(agent.metric("weir_ready"), Some(1.0), "{name}");
        let text = agent.metrics().unwrap();
        for family in [
            "weir_drops_total",
            "weir_map_entries",
            "weir_ct_entries",
            "weir_sync_duration_seconds",
        ] {
            assert!(text.contains(family), "{name}: /metrics lacks {family}");
        }
    }
    let syncs_after = cluster
        .agent(1)
        .metric("weir_sync_total{result=\"ok\"}")
        .unwrap();
    assert!(
        syncs_after >= syncs_before + 8.0,
        "syncs {syncs_before} → {syncs_after}"
    );
    drop(servers);
}
