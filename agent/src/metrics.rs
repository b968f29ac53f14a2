//! The agent's Prometheus metrics, rendered in the text exposition format
//! (version 0.0.4). The main loop records into [`Metrics`]; the HTTP
//! server renders on each scrape. Everything lives behind one mutex that
//! is held only to copy or render plain numbers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use weir_common::{DropReason, metrics::Direction};

use crate::daemon::seams::DatapathStats;
use crate::k8s::{Kind, ObjectCounts};
use crate::policy::PlanStats;
use weir_common::policy as policy_maps;

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the latency histograms: 1 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A cumulative histogram with fixed buckets.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); one extra for +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get_mut(bucket) {
            *c += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// What one sync (plan → datapath → routes) did.
#[derive(Clone, Debug, Default)]
pub struct SyncRecord {
    pub duration: Duration,
    pub ok: bool,
    pub plan_warnings: usize,
    /// Endpoints the plan saw across all Services.
    pub endpoints: usize,
    pub routes_programmed: usize,
    pub route_conflicts: usize,
    /// What the datapath holds after the apply; `None` when it failed.
    pub programmed: Option<Programmed>,
}

/// Counts of what an apply left in the maps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Programmed {
    pub services: u64,
    pub frontends: u64,
    pub backends: u64,
}

/// What one policy step (compile, then write) did.
#[derive(Clone, Copy, Debug, Default)]
pub struct PolicyRecord {
    /// `ok`, `refused` (over capacity) or `error`.
    pub outcome: &'static str,
    pub compile: Duration,
    /// Zero when nothing was written.
    pub apply: Duration,
    pub stats: PlanStats,
    pub revision: u32,
    pub compile_errors: usize,
}

/// Policy state for /metrics.
#[derive(Clone, Debug)]
struct PolicyState {
    syncs: BTreeMap<&'static str, u64>,
    compile_latency: Histogram,
    apply_latency: Histogram,
    compile_errors: usize,
    /// What the maps hold (the last plan written).
    programmed: Option<(PlanStats, u32)>,
    drops: BTreeMap<(String, String), u64>,
    events_lost: u64,
    monitor_subscribers: usize,
    monitor_published: u64,
    monitor_dropped: u64,
}

impl Default for PolicyState {
    fn default() -> Self {
        Self {
            syncs: BTreeMap::new(),
            compile_latency: Histogram::new(&LATENCY_BUCKETS),
            apply_latency: Histogram::new(&LATENCY_BUCKETS),
            compile_errors: 0,
            programmed: None,
            drops: BTreeMap::new(),
            events_lost: 0,
            monitor_subscribers: 0,
            monitor_published: 0,
            monitor_dropped: 0,
        }
    }
}

#[derive(Clone, Debug)]
struct State {
    syncs_ok: u64,
    syncs_failed: u64,
    sync_latency: Histogram,
    last_sync_unix: Option<f64>,
    services: u64,
    frontends: u64,
    backends: u64,
    endpoints: usize,
    plan_warnings: usize,
    routes_programmed: usize,
    route_conflicts: usize,
    objects: ObjectCounts,
    bad_documents: BTreeMap<&'static str, usize>,
    registrations: BTreeMap<(&'static str, &'static str), u64>,
    registration_latency: Histogram,
    registered_endpoints: usize,
    records_dropped_at_start: u64,
    gc_expired: u64,
    datapath: DatapathStats,
    policy: PolicyState,
    ready: bool,
}

impl Default for State {
    fn default() -> Self {
        Self {
            syncs_ok: 0,
            syncs_failed: 0,
            sync_latency: Histogram::new(&LATENCY_BUCKETS),
            last_sync_unix: None,
            services: 0,
            frontends: 0,
            backends: 0,
            endpoints: 0,
            plan_warnings: 0,
            routes_programmed: 0,
            route_conflicts: 0,
            objects: ObjectCounts::default(),
            bad_documents: BTreeMap::new(),
            registrations: BTreeMap::new(),
            registration_latency: Histogram::new(&LATENCY_BUCKETS),
            registered_endpoints: 0,
            records_dropped_at_start: 0,
            gc_expired: 0,
            datapath: DatapathStats::default(),
            policy: PolicyState::default(),
            ready: false,
        }
    }
}

/// The agent's metrics registry.
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic while holding the lock leaves plain numbers behind;
        // they are still fine to read.
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut state)
    }

    /// A finished sync.
    pub fn record_sync(&self, sync: &SyncRecord) {
        self.with(|s| {
            if sync.ok {
                s.syncs_ok += 1;
                s.last_sync_unix = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs_f64());
            } else {
                s.syncs_failed += 1;
            }
            s.sync_latency.observe(sync.duration.as_secs_f64());
            s.plan_warnings = sync.plan_warnings;
            s.routes_programmed = sync.routes_programmed;
            s.route_conflicts = sync.route_conflicts;
            if let Some(p) = sync.programmed {
                s.services = p.services;
                s.frontends = p.frontends;
                s.backends = p.backends;
                s.endpoints = sync.endpoints;
            }
        });
    }

    pub fn set_objects(
        &self,
        objects: ObjectCounts,
        bad_documents: &BTreeMap<&'static str, usize>,
    ) {
        self.with(|s| {
            s.objects = objects;
            s.bad_documents.clone_from(bad_documents);
        });
    }

    /// One answered registration request: `op` is `register` or
    /// `deregister`, `result` `ok` or an error code.
    pub fn record_registration(&self, op: &'static str, result: &'static str, latency: Duration) {
        self.with(|s| {
            *s.registrations.entry((op, result)).or_default() += 1;
            s.registration_latency.observe(latency.as_secs_f64());
        });
    }

    pub fn set_registered_endpoints(&self, count: usize) {
        self.with(|s| s.registered_endpoints = count);
    }

    pub fn add_records_dropped_at_start(&self, count: u64) {
        self.with(|s| s.records_dropped_at_start += count);
    }

    pub fn add_gc_expired(&self, count: u64) {
        self.with(|s| s.gc_expired += count);
    }

    pub fn set_datapath(&self, stats: DatapathStats) {
        self.with(|s| s.datapath = stats);
    }

    pub fn set_ready(&self, ready: bool) {
        self.with(|s| s.ready = ready);
    }

    /// A finished policy step.
    pub fn record_policy(&self, record: &PolicyRecord) {
        self.with(|s| {
            let p = &mut s.policy;
            *p.syncs.entry(record.outcome).or_default() += 1;
            p.compile_latency.observe(record.compile.as_secs_f64());
            p.compile_errors = record.compile_errors;
            if record.outcome == "ok" {
                p.apply_latency.observe(record.apply.as_secs_f64());
                p.programmed = Some((record.stats, record.revision));
            }
        });
    }

    /// Drops by (policy, direction) and lost events, as the datapath
    /// counts them.
    pub fn set_policy_counters(&self, drops: BTreeMap<(String, String), u64>, events_lost: u64) {
        self.with(|s| {
            s.policy.drops = drops;
            s.policy.events_lost = events_lost;
        });
    }

    /// The `weirctl monitor` fan-out.
    pub fn set_monitor(&self, subscribers: usize, published: u64, dropped: u64) {
        self.with(|s| {
            s.policy.monitor_subscribers = subscribers;
            s.policy.monitor_published = published;
            s.policy.monitor_dropped = dropped;
        });
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let s = self.with(|s| s.clone());
        let mut out = Exposition::default();

        out.family(
            "weir_sync_total",
            "Syncs of the datapath with the desired state, by result.",
            "counter",
        );
        out.sample("weir_sync_total", &[("result", "ok")], s.syncs_ok as f64);
        out.sample(
            "weir_sync_total",
            &[("result", "error")],
            s.syncs_failed as f64,
        );
        out.histogram(
            "weir_sync_duration_seconds",
            "Time from a change to the datapath, routes and counters reflecting it (plan, apply, routes).",
            &[],
            &s.sync_latency,
        );
        if let Some(t) = s.last_sync_unix {
            out.gauge(
                "weir_last_sync_timestamp_seconds",
                "Unix time of the last successful sync.",
                t,
            );
        }
        out.gauge(
            "weir_services_programmed",
            "Services with at least one frontend in the datapath.",
            s.services as f64,
        );
        out.gauge(
            "weir_frontends_programmed",
            "Service frontends (address, port, protocol, scope) in the datapath.",
            s.frontends as f64,
        );
        out.gauge(
            "weir_backends_programmed",
            "Distinct backends (address, port) in the datapath.",
            s.backends as f64,
        );
        out.gauge(
            "weir_endpoints",
            "Endpoints of all Services as the last plan saw them.",
            s.endpoints as f64,
        );
        out.gauge(
            "weir_plan_warnings",
            "Objects the last plan could not fully honour.",
            s.plan_warnings as f64,
        );
        out.gauge(
            "weir_routes_programmed",
            "Routes to other nodes' pod CIDRs in place.",
            s.routes_programmed as f64,
        );
        out.gauge(
            "weir_route_conflicts",
            "Pod CIDRs covered by a route the agent does not own.",
            s.route_conflicts as f64,
        );

        out.family(
            "weir_objects",
            "Kubernetes objects known, by kind.",
            "gauge",
        );
        for kind in Kind::ALL {
            out.sample(
                "weir_objects",
                &[("kind", kind.name())],
                s.objects.get(kind) as f64,
            );
        }
        out.family(
            "weir_manifest_bad_documents",
            "Manifest documents skipped in the current load, by reason.",
            "gauge",
        );
        let total_bad: usize = s.bad_documents.values().sum();
        out.sample(
            "weir_manifest_bad_documents",
            &[("reason", "all")],
            total_bad as f64,
        );
        for (reason, count) in &s.bad_documents {
            out.sample(
                "weir_manifest_bad_documents",
                &[("reason", reason)],
                *count as f64,
            );
        }

        out.family(
            "weir_registrations_total",
            "Registration requests answered, by operation and result.",
            "counter",
        );
        for op in ["register", "deregister"] {
            if !s.registrations.keys().any(|(o, _)| *o == op) {
                out.sample(
                    "weir_registrations_total",
                    &[("op", op), ("result", "ok")],
                    0.0,
                );
            }
        }
        for ((op, result), count) in &s.registrations {
            out.sample(
                "weir_registrations_total",
                &[("op", op), ("result", result)],
                *count as f64,
            );
        }
        out.histogram(
            "weir_registration_duration_seconds",
            "Time from a registration request to its answer (datapath programmed).",
            &[],
            &s.registration_latency,
        );
        out.gauge(
            "weir_endpoints_registered",
            "Local pods registered by the CNI plugin.",
            s.registered_endpoints as f64,
        );
        out.counter(
            "weir_endpoint_records_dropped_total",
            "Endpoint records dropped at start because their link was gone or changed.",
            s.records_dropped_at_start as f64,
        );

        out.family("weir_map_entries", "Entries in each BPF map.", "gauge");
        for m in &s.datapath.maps {
            out.sample("weir_map_entries", &[("map", &m.name)], m.entries as f64);
        }
        out.family(
            "weir_map_capacity",
            "Capacity (max_entries) of each BPF map.",
            "gauge",
        );
        for m in &s.datapath.maps {
            out.sample("weir_map_capacity", &[("map", &m.name)], m.capacity as f64);
        }
        out.family(
            "weir_map_fill_ratio",
            "Entries over capacity of each BPF map.",
            "gauge",
        );
        for m in &s.datapath.maps {
            let ratio = if m.capacity == 0 {
                0.0
            } else {
                m.entries as f64 / m.capacity as f64
            };
            out.sample("weir_map_fill_ratio", &[("map", &m.name)], ratio);
        }

        out.family(
            "weir_drops_total",
            "Packets the datapath dropped or rejected, by program and reason.",
            "counter",
        );
        for direction in Direction::ALL {
            for reason in DropReason::ALL.into_iter().filter(|r| r.is_drop()) {
                let packets = packet_count(&s.datapath, direction, reason).map_or(0, |c| c.packets);
                out.sample(
                    "weir_drops_total",
                    &[("direction", direction.name()), ("reason", reason.name())],
                    packets as f64,
                );
            }
        }
        out.family(
            "weir_datapath_packets_total",
            "Packets seen by the datapath, by program and verdict.",
            "counter",
        );
        for c in &s.datapath.packets {
            out.sample(
                "weir_datapath_packets_total",
                &[
                    ("direction", c.direction.name()),
                    ("reason", c.reason.name()),
                ],
                c.packets as f64,
            );
        }
        out.family(
            "weir_datapath_bytes_total",
            "Bytes seen by the datapath, by program and verdict.",
            "counter",
        );
        for c in &s.datapath.packets {
            out.sample(
                "weir_datapath_bytes_total",
                &[
                    ("direction", c.direction.name()),
                    ("reason", c.reason.name()),
                ],
                c.bytes as f64,
            );
        }
        if let Some(ct) = s.datapath.ct_entries {
            out.gauge(
                "weir_ct_entries",
                "Conntrack entries (one per flow direction).",
                ct as f64,
            );
        }
        out.counter(
            "weir_ct_gc_expired_total",
            "Conntrack entries expired by the agent's GC.",
            s.gc_expired as f64,
        );
        render_policy(&s.policy, &mut out);
        out.gauge(
            "weir_ready",
            "1 once the first full sync is done.",
            if s.ready { 1.0 } else { 0.0 },
        );
        out.text
    }
}

fn render_policy(p: &PolicyState, out: &mut Exposition) {
    out.family(
        "weir_policy_syncs_total",
        "NetworkPolicy compiles and writes, by result (refused: the plan did not fit the maps).",
        "counter",
    );
    for result in ["ok", "refused", "error"] {
        let count = p.syncs.get(result).copied().unwrap_or(0);
        out.sample(
            "weir_policy_syncs_total",
            &[("result", result)],
            count as f64,
        );
    }
    out.histogram(
        "weir_policy_compile_duration_seconds",
        "Time to compile the objects into this node's policy plan.",
        &[],
        &p.compile_latency,
    );
    out.histogram(
        "weir_policy_apply_duration_seconds",
        "Time to write a policy plan into the maps.",
        &[],
        &p.apply_latency,
    );
    out.gauge(
        "weir_policy_compile_errors",
        "Problems in NetworkPolicy and related objects in the last compile (each fails closed).",
        p.compile_errors as f64,
    );
    let (stats, revision) = p.programmed.unwrap_or_default();
    out.gauge(
        "weir_policy_revision",
        "Policy revision in the maps (conntrack re-checks flows of older ones).",
        f64::from(revision),
    );
    out.gauge(
        "weir_policy_map_bytes",
        "Upper bound of the kernel memory the policy maps' entries take.",
        stats.map_bytes() as f64,
    );
    out.family(
        "weir_policy_map_entries",
        "Entries in each policy map, as programmed.",
        "gauge",
    );
    for (map, entries) in [
        (policy_maps::IPCACHE, stats.ipcache_entries),
        (policy_maps::POLICY, stats.policy_entries),
        (policy_maps::POLICY_ENDPOINTS, stats.endpoints),
    ] {
        out.sample("weir_policy_map_entries", &[("map", map)], entries as f64);
    }
    out.family(
        "weir_policy_identities",
        "Identities in use, by kind (pod label sets, ipBlock prefixes).",
        "gauge",
    );
    out.sample(
        "weir_policy_identities",
        &[("kind", "pod")],
        stats.identities as f64,
    );
    out.sample(
        "weir_policy_identities",
        &[("kind", "cidr")],
        stats.cidr_identities as f64,
    );
    out.gauge(
        "weir_policy_endpoints",
        "Local pods with a policy endpoint entry.",
        stats.endpoints as f64,
    );
    out.gauge(
        "weir_policy_rules",
        "Rule ids the programmed entries and isolations name.",
        stats.rules as f64,
    );
    out.family(
        "weir_policy_drops_total",
        "Packets dropped by NetworkPolicy, by the isolating policy and direction.",
        "counter",
    );
    for ((policy, direction), count) in &p.drops {
        out.sample(
            "weir_policy_drops_total",
            &[("policy", policy), ("direction", direction)],
            *count as f64,
        );
    }
    out.counter(
        "weir_policy_events_lost_total",
        "Policy events the datapath did not deliver (rate limit or full ring).",
        p.events_lost as f64,
    );
    out.gauge(
        "weir_policy_monitor_subscribers",
        "Clients streaming policy events (weirctl monitor).",
        p.monitor_subscribers as f64,
    );
    out.counter(
        "weir_policy_monitor_events_total",
        "Policy events decoded for monitor subscribers.",
        p.monitor_published as f64,
    );
    out.counter(
        "weir_policy_monitor_dropped_total",
        "Policy events slow monitor subscribers missed.",
        p.monitor_dropped as f64,
    );
}

fn packet_count(
    stats: &DatapathStats,
    direction: Direction,
    reason: DropReason,
) -> Option<&crate::daemon::seams::PacketCount> {
    stats
        .packets
        .iter()
        .find(|c| c.direction == direction && c.reason == reason)
}

/// A writer of the text format.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", format_value(value));
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, help, "gauge");
        self.sample(name, &[], value);
    }

    fn counter(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, help, "counter");
        self.sample(name, &[], value);
    }

    fn histogram(&mut self, name: &str, help: &str, labels: &[(&str, &str)], h: &Histogram) {
        self.family(name, help, "histogram");
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, bound) in h.bounds.iter().enumerate() {
            cumulative += h.counts.get(i).copied().unwrap_or(0);
            let le = format_value(*bound);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, cumulative as f64);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, h.count as f64);
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count as f64);
    }
}

fn format_value(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::daemon::seams::{MapFill, PacketCount};

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new(&LATENCY_BUCKETS);
        for v in [0.0005, 0.003, 0.003, 20.0] {
            h.observe(v);
        }
        let mut out = Exposition::default();
        out.histogram("x_seconds", "help", &[], &h);
        let text = out.text;
        assert_eq!(
            line(&text, "x_seconds_bucket{le=\"0.001\"}"),
            "x_seconds_bucket{le=\"0.001\"} 1"
        );
        assert_eq!(
            line(&text, "x_seconds_bucket{le=\"0.0025\"}"),
            "x_seconds_bucket{le=\"0.0025\"} 1"
        );
        assert_eq!(
            line(&text, "x_seconds_bucket{le=\"0.005\"}"),
            "x_seconds_bucket{le=\"0.005\"} 3"
        );
        assert_eq!(
            line(&text, "x_seconds_bucket{le=\"10\"}"),
            "x_seconds_bucket{le=\"10\"} 3"
        );
        assert_eq!(
            line(&text, "x_seconds_bucket{le=\"+Inf\"}"),
            "x_seconds_bucket{le=\"+Inf\"} 4"
        );
        assert_eq!(line(&text, "x_seconds_count"), "x_seconds_count 4");
        assert!(line(&text, "x_seconds_sum").starts_with("x_seconds_sum 20.006"));
    }

    #[test]
    fn renders_every_family_with_values() {
        let m = Metrics::new();
        m.record_sync(&SyncRecord {
            ok: false,
            ..SyncRecord::default()
        });
        m.record_sync(&SyncRecord {
            duration: Duration::from_millis(3),
            ok: true,
            plan_warnings: 2,
            endpoints: 4,
            routes_programmed: 1,
            route_conflicts: 0,
            programmed: Some(Programmed {
                services: 2,
                frontends: 3,
                backends: 3,
            }),
        });
        let mut bad = BTreeMap::new();
        bad.insert("syntax", 2);
        bad.insert("unsupported_kind", 1);
        m.set_objects(
            ObjectCounts {
                services: 2,
                pods: 3,
                ..ObjectCounts::default()
            },
            &bad,
        );
        m.record_registration("register", "ok", Duration::from_millis(12));
        m.record_registration("register", "link_mismatch", Duration::from_millis(1));
        m.set_registered_endpoints(1);
        m.set_datapath(DatapathStats {
            maps: vec![MapFill {
                name: "weir_lb4_svc_v1".into(),
                entries: 25,
                capacity: 100,
            }],
            packets: vec![
                PacketCount {
                    direction: Direction::FromPod,
                    reason: DropReason::NoBackend,
                    packets: 7,
                    bytes: 420,
                },
                PacketCount {
                    direction: Direction::FromPod,
                    reason: DropReason::Forwarded,
                    packets: 100,
                    bytes: 9000,
                },
            ],
            ct_entries: Some(42),
        });
        m.set_ready(true);
        let text = m.render();

        for (prefix, want) in [
            ("weir_sync_total{result=\"ok\"}", "1"),
            ("weir_sync_total{result=\"error\"}", "1"),
            ("weir_sync_duration_seconds_count", "2"),
            ("weir_services_programmed", "2"),
            ("weir_frontends_programmed", "3"),
            ("weir_backends_programmed", "3"),
            ("weir_endpoints ", "4"),
            ("weir_plan_warnings", "2"),
            ("weir_routes_programmed", "1"),
            ("weir_objects{kind=\"Service\"}", "2"),
            ("weir_objects{kind=\"Pod\"}", "3"),
            ("weir_manifest_bad_documents{reason=\"all\"}", "3"),
            ("weir_manifest_bad_documents{reason=\"syntax\"}", "2"),
            (
                "weir_registrations_total{op=\"register\",result=\"ok\"}",
                "1",
            ),
            (
                "weir_registrations_total{op=\"register\",result=\"link_mismatch\"}",
                "1",
            ),
            (
                "weir_registrations_total{op=\"deregister\",result=\"ok\"}",
                "0",
            ),
            ("weir_registration_duration_seconds_count", "2"),
            ("weir_endpoints_registered", "1"),
            ("weir_map_entries{map=\"weir_lb4_svc_v1\"}", "25"),
            ("weir_map_capacity{map=\"weir_lb4_svc_v1\"}", "100"),
            ("weir_map_fill_ratio{map=\"weir_lb4_svc_v1\"}", "0.25"),
            (
                "weir_drops_total{direction=\"from_pod\",reason=\"no_backend\"}",
                "7",
            ),
            (
                "weir_drops_total{direction=\"to_pod\",reason=\"no_backend\"}",
                "0",
            ),
            (
                "weir_datapath_packets_total{direction=\"from_pod\",reason=\"forwarded\"}",
                "100",
            ),
            (
                "weir_datapath_bytes_total{direction=\"from_pod\",reason=\"no_backend\"}",
                "420",
            ),
            ("weir_ct_entries", "42"),
            ("weir_ready", "1"),
        ] {
            let l = line(&text, prefix);
            assert_eq!(l.rsplit(' ').next().unwrap(), want, "{l}");
        }
        // Every sample line belongs to a family announced before it.
        let mut announced = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                announced.insert(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                let family = name
                    .strip_suffix("_bucket")
                    .or_else(|| name.strip_suffix("_sum"))
                    .or_else(|| name.strip_suffix("_count"))
                    .filter(|f| announced.contains(*f))
                    .unwrap_or(name);
                assert!(announced.contains(family), "{l} has no TYPE line");
            }
        }
    }

    #[test]
    fn policy_families_report_the_programmed_plan() {
        let m = Metrics::new();
        let stats = PlanStats {
            identities: 3,
            cidr_identities: 2,
            ipcache_entries: 10,
            endpoints: 4,
            policy_entries: 20,
            rules: 6,
        };
        m.record_policy(&PolicyRecord {
            outcome: "ok",
            compile: Duration::from_millis(2),
            apply: Duration::from_millis(1),
            stats,
            revision: 7,
            compile_errors: 0,
        });
        // A refused plan counts, but the maps still hold revision 7.
        m.record_policy(&PolicyRecord {
            outcome: "refused",
            stats: PlanStats {
                policy_entries: 1 << 30,
                ..stats
            },
            revision: 8,
            compile_errors: 2,
            ..PolicyRecord::default()
        });
        let mut drops = BTreeMap::new();
        drops.insert(("x/deny-all".to_string(), "ingress".to_string()), 5);
        m.set_policy_counters(drops, 3);
        m.set_monitor(1, 10, 2);
        let text = m.render();
        for (prefix, want) in [
            ("weir_policy_syncs_total{result=\"ok\"}", "1"),
            ("weir_policy_syncs_total{result=\"refused\"}", "1"),
            ("weir_policy_syncs_total{result=\"error\"}", "0"),
            ("weir_policy_compile_duration_seconds_count", "2"),
            ("weir_policy_apply_duration_seconds_count", "1"),
            ("weir_policy_compile_errors", "2"),
            ("weir_policy_revision", "7"),
            ("weir_policy_map_bytes", &(30 * 128 + 4 * 96).to_string()),
            ("weir_policy_map_entries{map=\"weir_policy_v1\"}", "20"),
            ("weir_policy_map_entries{map=\"weir_ipcache4_v1\"}", "10"),
            ("weir_policy_map_entries{map=\"weir_policy_ep_v1\"}", "4"),
            ("weir_policy_identities{kind=\"pod\"}", "3"),
            ("weir_policy_identities{kind=\"cidr\"}", "2"),
            ("weir_policy_endpoints", "4"),
            ("weir_policy_rules", "6"),
            (
                "weir_policy_drops_total{policy=\"x/deny-all\",direction=\"ingress\"}",
                "5",
            ),
            ("weir_policy_events_lost_total", "3"),
            ("weir_policy_monitor_subscribers", "1"),
            ("weir_policy_monitor_events_total", "10"),
            ("weir_policy_monitor_dropped_total", "2"),
        ] {
            let l = line(&text, prefix);
            assert_eq!(l.rsplit(' ').next().unwrap(), want, "{l}");
        }
    }

    #[test]
    fn forwarded_is_not_a_drop() {
        let text = Metrics::new().render();
        assert!(!text.contains("weir_drops_total{direction=\"from_pod\",reason=\"forwarded\"}"));
        assert!(text.contains("weir_ready 0"));
        assert!(
            !text.contains("weir_ct_entries"),
            "no datapath stats yet: no CT gauge"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition::default();
        out.sample("m", &[("k", "a\"b\\c\nd")], 1.5);
        assert_eq!(out.text, "m{k=\"a\\\"b\\\\c\\nd\"} 1.5\n");
    }
}
