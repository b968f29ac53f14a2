//! Shared helpers of the service tests (`svc_*.rs`): root check, Service
//! objects, probing from many places, and the statistics.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};
use weir_lab::cluster::{Reply, tally};
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

/// Pearson's chi-square statistic of `counts` against a uniform spread.
pub fn chi_square_uniform(counts: &[usize]) -> f64 {
    let n: usize = counts.iter().sum();
    let expected = n as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

/// The critical value of the chi-square distribution with 2 degrees of
/// freedom (3 categories) at significance `p`: its survival function is
/// exactly exp(-x/2).
pub fn chi_square_critical_df2(p: f64) -> f64 {
    -2.0 * p.ln()
}

/// Asserts that `results` spread uniformly over exactly the three
/// `backends`: no other outcome, and Pearson's chi-square below the
/// critical value at significance `p` (a uniform spread fails with
/// probability `p`). Prints the counts.
pub fn assert_uniform3(what: &str, results: &[ProbeResult], backends: [&str; 3], p: f64) {
    let counts = assert_only(what, results, &backends);
    let observed: Vec<usize> = backends
        .iter()
        .map(|b| counts.get(*b).copied().unwrap_or(0))
        .collect();
    let chi2 = chi_square_uniform(&observed);
    let critical = chi_square_critical_df2(p);
    println!(
        "{what}: {} requests → {:?}, chi² = {chi2:.2} (critical {critical:.2} at p = {p:.1e})",
        results.len(),
        backends.iter().zip(&observed).collect::<Vec<_>>()
    );
    assert!(
        chi2 < critical,
        "{what}: not uniform over {backends:?}: {observed:?}, chi² = {chi2:.2} ≥ {critical:.2}"
    );
}

#[test]
fn chi_square_math() {
    assert_eq!(chi_square_uniform(&[100, 100, 100]), 0.0);
    // 150/75/75 of 300: (50² + 25² + 25²) / 100 = 37.5
    assert!((chi_square_uniform(&[150, 75, 75]) - 37.5).abs() < 1e-9);
    // The well-known table value for df = 2 at p = 0.001 is 13.816.
    assert!((chi_square_critical_df2(0.001) - 13.8155).abs() < 1e-3);
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
