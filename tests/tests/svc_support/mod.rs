//! Shared helpers of the service tests (`svc_*.rs`): root check, Service
//! objects, probing from many places, and the statistics.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};
use weir_lab::cluster::{Reply, tally};
use weir_lab::stats::Uniformity;
use weir_lab::{NetNs, ProbeOptions, ProbeResult, Proto};

pub fn require_root() {
    assert!(
        weir_lab::is_root(),
        "the service lab tests need root (netns, bpffs, tcx, cgroups); run them as root, \
         e.g. through `cargo xtask test`"
    );
}

/// A Service object; `spec` is merged over `{clusterIP, selector?}`.
pub fn service(name: &str, cluster_ip: Ipv4Addr, spec: Value) -> Value {
    let mut full = json!({"clusterIP": cluster_ip.to_string(), "type": "ClusterIP"});
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": full,
    })
}

/// A Service port.
pub fn port(name: &str, proto: Proto, port: u16, target: Value) -> Value {
    json!({
        "name": name,
        "protocol": if proto == Proto::Tcp { "TCP" } else { "UDP" },
        "port": port,
        "targetPort": target,
    })
}

/// `n` probes (fresh socket and source port each) from `ns`.
pub fn probes(ns: &NetNs, proto: Proto, addr: Ipv4Addr, port: u16, n: u32) -> Vec<ProbeResult> {
    ns.probe_with(
        proto,
        addr,
        port,
        ProbeOptions {
            timeout_ms: 1000,
            count: n,
        },
    )
    .unwrap()
}

/// Like [`probes`], with a short timeout for flows expected to be dropped.
pub fn probes_quick(
    ns: &NetNs,
    proto: Proto,
    addr: Ipv4Addr,
    port: u16,
    n: u32,
) -> Vec<ProbeResult> {
    ns.probe_with(
        proto,
        addr,
        port,
        ProbeOptions {
            timeout_ms: 400,
            count: n,
        },
    )
    .unwrap()
}

/// Every probe was answered by one of `backends`; returns the tally.
pub fn assert_only(
    what: &str,
    results: &[ProbeResult],
    backends: &[&str],
) -> BTreeMap<String, usize> {
    let counts = tally(results);
    assert!(
        counts.keys().all(|k| backends.contains(&k.as_str())),
        "{what}: answers from outside {backends:?}: {counts:?}"
    );
    counts
}

/// Every probe had `outcome` (`"<refused>"`, `"<timeout>"`).
pub fn assert_all(what: &str, results: &[ProbeResult], outcome: &str) {
    let counts = tally(results);
    assert!(
        counts.len() == 1 && counts.contains_key(outcome),
        "{what}: want only {outcome}, got {counts:?}"
    );
}

/// The source address every backend saw, which must be `client`.
pub fn assert_client_ip(what: &str, results: &[ProbeResult], client: Ipv4Addr) {
    for r in results {
        let reply = Reply::of(r).unwrap_or_else(|| panic!("{what}: not answered: {r:?}"));
        let seen = reply
            .client
            .unwrap_or_else(|| panic!("{what}: no client address in {:?}", r.reply));
        assert_eq!(*seen.ip(), client, "{what}: the backend saw {seen}");
    }
}

/// Asserts that `results` spread uniformly over exactly the three
/// `backends`: no other outcome, and Pearson's chi-square below the
/// critical value at significance `p` (a uniform spread fails with
/// probability `p`; see [`weir_lab::stats`]). Prints the counts.
pub fn assert_uniform3(what: &str, results: &[ProbeResult], backends: [&str; 3], p: f64) {
    let counts = assert_only(what, results, &backends);
    let observed: Vec<usize> = backends
        .iter()
        .map(|b| counts.get(*b).copied().unwrap_or(0))
        .collect();
    let check = Uniformity::check(&observed, p);
    println!(
        "{what}: {} requests → {:?}, {}",
        results.len(),
        backends.iter().zip(&observed).collect::<Vec<_>>(),
        check.summary()
    );
    assert!(
        check.uniform(),
        "{what}: not uniform over {backends:?}: {observed:?}, {}",
        check.summary()
    );
}

/// Polls (up to 20 s: the agents refresh datapath counters every few
/// seconds) until `value()` reaches `at_least`; returns the last value.
pub fn wait_counter(what: &str, at_least: f64, value: impl Fn() -> f64) -> f64 {
    let mut last = value();
    let outcome = weir_lab::cluster::poll(std::time::Duration::from_secs(20), || {
        last = value();
        Ok(last >= at_least)
    });
    assert!(
        outcome.is_ok(),
        "{what}: want at least {at_least}, still {last} after 20 s"
    );
    last
}
