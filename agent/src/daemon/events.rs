//! Policy verdict events: a dedicated OS thread reads the ring buffer
//! (a blocking poll must never sit on a tokio worker), names each event
//! with the tables of the plans the maps hold, and hands it to the
//! monitor hub.
//!
//! Naming uses the current plan and the one before it: rule ids are never
//! reused, so an event that was in flight across a policy change still
//! finds its rule.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};
use weir_common::DropReason;
use weir_common::policy::{POLICY_INGRESS, PolicyEvent, event_flags, identity};

use super::seams::PolicyEventSource;
use crate::datapath::ct_gc;
use crate::k8s::ObjectName;
use crate::policy::{PolicyPlan, RuleIndex, RuleRef};
use crate::registry::{MonitorEvent, MonitorHub, MonitorVerdict};

/// How long one poll waits, which bounds how late the thread sees a stop.
const POLL: Duration = Duration::from_millis(200);

/// The plans events are named with.
#[derive(Clone, Debug, Default)]
pub struct EventNames {
    current: Arc<PolicyPlan>,
    previous: Option<Arc<PolicyPlan>>,
}

impl EventNames {
    fn plans(&self) -> impl Iterator<Item = &PolicyPlan> {
        std::iter::once(self.current.as_ref()).chain(self.previous.as_deref())
    }

    pub fn rule_ref(&self, id: u32) -> Option<&RuleRef> {
        self.plans().find_map(|p| p.rules.get(&id))
    }

    fn pod(&self, ip: Ipv4Addr) -> Option<&ObjectName> {
        self.plans().find_map(|p| p.pods.get(&ip))
    }

    /// Who `ip` with ipcache identity `id` is.
    fn peer(&self, ip: Ipv4Addr, id: u32) -> String {
        match id {
            identity::HOST => return "host".into(),
            identity::REMOTE_NODE => return "remote-node".into(),
            identity::WORLD => {
                // The longest ipBlock prefix holding it, when a policy names one.
                let block = self
                    .current
                    .cidr_identities
                    .values()
                    .filter(|prefix| prefix.contains(ip))
                    .max_by_key(|prefix| prefix.prefix());
                return match block {
                    Some(prefix) => format!("world ({prefix})"),
                    None => "world".into(),
                };
            }
            _ => {}
        }
        if let Some(pod) = self.pod(ip) {
            return pod.to_string();
        }
        match self.plans().find_map(|p| p.identities.get(&id)) {
            Some(key) => {
                let labels: Vec<String> =
                    key.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{} {{{}}}", key.namespace, labels.join(","))
            }
            None => format!("identity {id}"),
        }
    }
}

/// The latest [`EventNames`], shared between the main loop (writer) and
/// the reader thread.
#[derive(Clone, Debug, Default)]
pub struct SharedNames(Arc<RwLock<Arc<EventNames>>>);

impl SharedNames {
    /// Names events with `plan` from now on (and with the plan before).
    pub fn publish(&self, plan: Arc<PolicyPlan>) {
        let mut guard = match self.0.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if Arc::ptr_eq(&guard.current, &plan) {
            return;
        }
        let previous = guard.current.clone();
        *guard = Arc::new(EventNames {
            current: plan,
            previous: Some(previous),
        });
    }

    pub fn get(&self) -> Arc<EventNames> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Turns `bpf_ktime_get_ns()` stamps (CLOCK_MONOTONIC) into wall time.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    /// Unix time of monotonic 0, in ns.
    wall_at_zero_ns: i128,
}

impl BootClock {
    pub fn now() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        Self {
            wall_at_zero_ns: wall - i128::from(ct_gc::monotonic_now_ns()),
        }
    }

    /// Unix ns of monotonic `ns`.
    pub fn wall_ns(&self, ns: u64) -> i128 {
        self.wall_at_zero_ns + i128::from(ns)
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-12-04T12:00:01.123Z`.
pub fn rfc3339(unix_ns: i128) -> String {
    let ms = unix_ns.div_euclid(1_000_000);
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        ms.rem_euclid(1000)
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn ip(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(be.to_ne_bytes())
}

fn proto_name(proto: u8) -> String {
    match proto {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        132 => "SCTP".into(),
        n => n.to_string(),
    }
}

fn endpoint(addr: u32, port_be: u16, proto: u8) -> String {
    match proto {
        6 | 17 | 132 => format!("{}:{}", ip(addr), u16::from_be(port_be)),
        _ => ip(addr).to_string(),
    }
}

/// The rule text of an event: what allowed it, or which isolation
/// dropped it.
fn rule_text(rule: &RuleRef, reason: Option<DropReason>) -> String {
    match rule.rule {
        RuleIndex::Rule(i) => format!("{}[{i}]", rule.direction.field()),
        RuleIndex::Isolation => match reason {
            Some(DropReason::PolicyDefaultDeny) => "isolation (default deny)".into(),
            Some(DropReason::PolicyDenied) => "isolation (no rule allows)".into(),
            _ => "isolation".into(),
        },
    }
}

/// Names one event.
pub fn decode(event: &PolicyEvent, names: &EventNames, clock: &BootClock) -> MonitorEvent {
    let reason = DropReason::from_u8(event.reason);
    let verdict = if event.flags & event_flags::AUDIT != 0 {
        MonitorVerdict::Audit
    } else if reason == Some(DropReason::Forwarded) {
        MonitorVerdict::Allow
    } else {
        MonitorVerdict::Drop
    };
    let ingress = event.direction == POLICY_INGRESS;
    let peer_addr = if ingress { event.saddr } else { event.daddr };
    let local = ip(event.endpoint);
    let rule = (event.rule_id != 0)
        .then(|| names.rule_ref(event.rule_id))
        .flatten();
    let (policy, rule) = match (rule, event.rule_id) {
        (Some(r), _) => (Some(r.policy.to_string()), Some(rule_text(r, reason))),
        (None, 0) => (None, Some("not isolated".into())),
        (None, id) => (None, Some(format!("rule {id} (unknown)"))),
    };
    let original = (event.orig_daddr != event.daddr || event.orig_dport != event.dport)
        .then(|| endpoint(event.orig_daddr, event.orig_dport, event.proto));
    MonitorEvent {
        time: rfc3339(clock.wall_ns(event.timestamp_ns)),
        verdict,
        direction: if ingress { "ingress" } else { "egress" }.into(),
        proto: proto_name(event.proto),
        src: endpoint(event.saddr, event.sport, event.proto),
        dst: endpoint(event.daddr, event.dport, event.proto),
        original_dst: original,
        pod: Some(
            names
                .pod(local)
                .map_or_else(|| local.to_string(), ToString::to_string),
        ),
        peer: names.peer(ip(peer_addr), event.peer_identity),
        reason: reason.map_or_else(|| format!("reason {}", event.reason), |r| r.name().into()),
        policy,
        rule,
        recheck: event.flags & event_flags::RECHECK != 0,
    }
}

/// The reader thread; stops when dropped.
pub struct EventReader {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EventReader {
    pub fn start(
        mut source: Box<dyn PolicyEventSource>,
        names: SharedNames,
        hub: MonitorHub,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weir-events".into())
            .spawn(move || {
                info!("policy event reader started");
                // Re-read now and then: the wall clock may be stepped.
                let mut clock = BootClock::now();
                let mut decoded = 0u64;
                while !stopping.load(Ordering::Relaxed) {
                    let Some(event) = source.next(POLL) else {
                        clock = BootClock::now();
                        continue;
                    };
                    // Nobody listening: read (so the ring drains) but skip
                    // the naming.
                    if !hub.has_subscribers() {
                        continue;
                    }
                    hub.publish(decode(&event, &names.get(), &clock));
                    decoded += 1;
                }
                info!(decoded, "policy event reader stopped");
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EventReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            warn!("the policy event reader panicked");
        }
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
