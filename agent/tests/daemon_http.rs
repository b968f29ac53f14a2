//! The agent's HTTP endpoint in a lab node: readiness gated on the first
//! full sync, liveness, and manifest problems visible in /metrics and the
//! log.
#![allow(clippy::unwrap_used)]

mod daemon_support;

use daemon_support::*;

#[test]
fn readyz_waits_for_the_first_sync_and_metrics_count_bad_documents() {
    let lab = lab(1);
    let node = lab.node(1);
    // The manifest directory does not exist yet: the source cannot sync.
    let dir = lab.dir().join("manifests-later");
    let agent = Agent::start(node, &dir);
    agent.wait_for("the HTTP endpoint", |a| a.get("/healthz").is_some());
    assert_eq!(agent.get("/healthz").unwrap().0, 200);
    let (status, body) = agent.get("/readyz").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("initial sync"), "{body}");
    assert_eq!(agent.metric("weir_ready"), Some(0.0));
    assert_eq!(agent.metric("weir_sync_total{result=\"ok\"}"), Some(0.0));
    assert_eq!(
        agent.metric("weir_manifest_bad_documents{reason=\"all\"}"),
        Some(0.0),
        "a missing directory is no bad document"
    );

    // The directory appears with one good and two bad documents.
    std::fs::create_dir_all(&dir).unwrap();
    write_manifest(
        &dir,
        "cluster.yaml",
        &format!(
            "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\n\
             spec: {{clusterIP: 10.96.0.30, ports: [{{port: 80}}]}}\n\
             ---\napiVersion: v1\nkind: Service\nmetadata: {{namespace: default}}\nspec: {{}}\n\
             ---\nkind: [unclosed\n",
            node_manifests(&lab)
        ),
    );
    agent.wait_ready();
    assert_eq!(agent.metric("weir_ready"), Some(1.0));
    assert!(agent.metric("weir_sync_total{result=\"ok\"}").unwrap() >= 1.0);
    assert!(agent.metric("weir_sync_duration_seconds_count").unwrap() >= 1.0);
    assert_eq!(agent.metric("weir_objects{kind=\"Service\"}"), Some(1.0));
    assert_eq!(agent.metric("weir_objects{kind=\"Node\"}"), Some(1.0));
    assert_eq!(
        agent.metric("weir_manifest_bad_documents{reason=\"all\"}"),
        Some(2.0)
    );
    assert_eq!(agent.metric("weir_services_programmed"), Some(1.0));
    let log = agent.log_text();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("skipping a bad manifest document"))
        .collect();
    assert_eq!(bad.len(), 2, "{log}");
    assert!(
        bad.iter()
            .all(|l| l.contains("cluster.yaml") && l.contains("document=")),
        "file and document index are logged: {bad:?}"
    );

    // Fixing the file clears the count.
    write_manifest(&dir, "cluster.yaml", &node_manifests(&lab));
    agent.wait_for("no bad documents", |a| {
        a.metric("weir_manifest_bad_documents{reason=\"all\"}") == Some(0.0)
    });
    agent.wait_for("the Service removed", |a| {
        a.metric("weir_services_programmed") == Some(0.0)
    });
    assert_eq!(agent.get("/nope").unwrap().0, 404);
}
