//! Event naming against a compiled plan, the wall clock conversion, and
//! the reader thread with a scripted ring.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::Mutex;

use weir_common::policy::{POLICY_EGRESS, POLICY_INGRESS};

use super::*;
use crate::k8s::test_support::{node, pod, snapshot};
use crate::policy::{PolicyCompiler, PolicyContext};
use crate::registry::MonitorFilter;
use crate::registry::hub::Next;

const XA: [u8; 4] = [10, 244, 1, 10];
const YB: [u8; 4] = [10, 244, 2, 11];

fn plan() -> Arc<PolicyPlan> {
    let yaml = [
        node("n1", "192.168.0.1", Some("10.244.1.0/24")),
        node("n2", "192.168.0.2", Some("10.244.2.0/24")),
        pod("x", "a", "pod: a", "n1", "10.244.1.10", true, &[]),
        pod("z", "b", "pod: b", "n2", "10.244.2.11", true, &[]),
        "---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: x, name: deny-all}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: x, name: allow-web}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 203.0.113.0/24}}]}, {ports: [{port: 53, protocol: UDP}]}]
"
        .to_string(),
    ]
    .concat();
    let ctx = PolicyContext {
        node_name: "n1".into(),
        ..PolicyContext::default()
    };
    let plan = PolicyCompiler::new().compile(&snapshot(&yaml), &ctx);
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    Arc::new(plan)
}

fn be(ip: [u8; 4]) -> u32 {
    u32::from_ne_bytes(ip)
}

fn names(plan: Arc<PolicyPlan>) -> Arc<EventNames> {
    let shared = SharedNames::default();
    shared.publish(plan);
    shared.get()
}

fn rule_id(plan: &PolicyPlan, policy: &str, rule: RuleIndex) -> u32 {
    *plan
        .rules
        .iter()
        .find(|(_, r)| r.policy.to_string() == policy && r.rule == rule)
        .unwrap()
        .0
}

/// A clock whose monotonic 0 is 2026-12-04T12:00:00Z.
fn clock() -> BootClock {
    BootClock {
        wall_at_zero_ns: 1_796_385_600 * 1_000_000_000,
    }
}

fn egress_drop(plan: &PolicyPlan) -> PolicyEvent {
    PolicyEvent {
        timestamp_ns: 1_123_000_000,
        saddr: be(XA),
        daddr: be(YB),
        sport: 40312u16.to_be(),
        dport: 80u16.to_be(),
        proto: 6,
        direction: POLICY_EGRESS,
        reason: DropReason::PolicyDenied as u8,
        flags: 0,
        endpoint: be(XA),
        rule_id: plan.endpoints[&Ipv4Addr::from(XA)]
            .egress
            .isolated_by
            .unwrap(),
        peer_identity: plan.endpoints[&Ipv4Addr::from(XA)].identity + 1,
        ifindex: 7,
        orig_daddr: be(YB),
        orig_dport: 80u16.to_be(),
        kind: weir_common::policy::EVENT_POLICY_VERDICT,
        pad: 0,
    }
}

#[test]
fn a_drop_names_pod_peer_policy_and_isolation() {
    let plan = plan();
    let event = decode(&egress_drop(&plan), &names(plan.clone()), &clock());
    assert_eq!(event.time, "2026-12-04T12:00:01.123Z");
    assert_eq!(event.verdict, MonitorVerdict::Drop);
    assert_eq!(event.direction, "egress");
    assert_eq!(event.proto, "TCP");
    assert_eq!(event.src, "10.244.1.10:40312");
    assert_eq!(event.dst, "10.244.2.11:80");
    assert_eq!(event.original_dst, None);
    assert_eq!(event.pod.as_deref(), Some("x/a"));
    assert_eq!(event.peer, "z/b", "a remote pod is named by its address");
    assert_eq!(event.reason, "policy_denied");
    // x/allow-web sorts before x/deny-all: it is the first isolating policy.
    assert_eq!(event.policy.as_deref(), Some("x/allow-web"));
    assert_eq!(event.rule.as_deref(), Some("isolation (no rule allows)"));
    assert_eq!(
        event.to_string(),
        "12:00:01.123 DROP  egress  TCP 10.244.1.10:40312 -> 10.244.2.11:80  x/a -> z/b  \
         policy x/allow-web isolation (no rule allows) (policy_denied)"
    );
}

#[test]
fn an_ingress_default_deny_an_allow_via_a_vip_and_an_audit() {
    let plan = plan();
    let names = names(plan.clone());
    let mut ingress = egress_drop(&plan);
    ingress.direction = POLICY_INGRESS;
    (ingress.saddr, ingress.daddr) = (be(YB), be(XA));
    ingress.reason = DropReason::PolicyDefaultDeny as u8;
    ingress.rule_id = plan.endpoints[&Ipv4Addr::from(XA)]
        .ingress
        .isolated_by
        .unwrap();
    let event = decode(&ingress, &names, &clock());
    assert_eq!(event.policy.as_deref(), Some("x/deny-all"));
    assert_eq!(event.rule.as_deref(), Some("isolation (default deny)"));
    assert!(event.to_string().contains("z/b -> x/a"), "{event}");

    let mut allow = egress_drop(&plan);
    allow.reason = DropReason::Forwarded as u8;
    allow.daddr = be([203, 0, 113, 9]);
    allow.orig_daddr = be([10, 96, 0, 10]);
    allow.peer_identity = identity::WORLD;
    allow.rule_id = rule_id(&plan, "x/allow-web", RuleIndex::Rule(0));
    let event = decode(&allow, &names, &clock());
    assert_eq!(event.verdict, MonitorVerdict::Allow);
    assert_eq!(event.rule.as_deref(), Some("egress[0]"));
    assert_eq!(event.original_dst.as_deref(), Some("10.96.0.10:80"));
    assert_eq!(event.peer, "world (203.0.113.0/24)");

    let mut audit = egress_drop(&plan);
    audit.flags = event_flags::AUDIT | event_flags::RECHECK;
    audit.peer_identity = identity::REMOTE_NODE;
    audit.proto = 1;
    let event = decode(&audit, &names, &clock());
    assert_eq!(event.verdict, MonitorVerdict::Audit);
    assert!(event.recheck);
    assert_eq!(event.peer, "remote-node");
    assert_eq!(event.proto, "ICMP");
    assert_eq!(event.src, "10.244.1.10", "no ports outside TCP/UDP/SCTP");
}

#[test]
fn unknown_ids_and_stale_plans_are_named_as_well_as_possible() {
    let old = plan();
    let shared = SharedNames::default();
    shared.publish(old.clone());
    // The next plan dropped every policy; events in flight keep naming.
    shared.publish(Arc::new(PolicyPlan::default()));
    let event = decode(&egress_drop(&old), &shared.get(), &clock());
    assert_eq!(event.policy.as_deref(), Some("x/allow-web"));
    assert_eq!(event.pod.as_deref(), Some("x/a"));

    let mut odd = egress_drop(&old);
    odd.rule_id = 999_999;
    odd.reason = 200;
    odd.endpoint = be([10, 9, 9, 9]);
    odd.peer_identity = 70_000;
    odd.daddr = be([10, 9, 9, 8]);
    let event = decode(&odd, &names(Arc::new(PolicyPlan::default())), &clock());
    assert_eq!(event.policy, None);
    assert_eq!(event.rule.as_deref(), Some("rule 999999 (unknown)"));
    assert_eq!(event.reason, "reason 200");
    assert_eq!(event.pod.as_deref(), Some("10.9.9.9"));
    assert_eq!(event.peer, "identity 70000");

    odd.rule_id = 0;
    odd.reason = 0;
    let event = decode(&odd, &names(old), &clock());
    assert_eq!(event.rule.as_deref(), Some("not isolated"));
}

#[test]
fn a_peer_pod_without_address_match_is_named_by_its_labels() {
    let plan = plan();
    let mut event = egress_drop(&plan);
    event.daddr = be([10, 244, 3, 3]);
    let id = plan.endpoints[&Ipv4Addr::from(XA)].identity;
    event.peer_identity = id;
    let named = decode(&event, &names(plan), &clock());
    assert_eq!(named.peer, "x {pod=a}");
}

#[test]
fn rfc3339_covers_the_calendar() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        rfc3339(951_782_400_000_000_000 + 999_999_999),
        "2000-02-29T00:00:00.999Z"
    );
    assert_eq!(
        rfc3339(4_102_444_799_000_000_000),
        "2099-12-31T23:59:59.000Z"
    );
    assert_eq!(rfc3339(-1_000_000), "1969-12-31T23:59:59.999Z");
    let now = BootClock::now();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128;
    assert!((now.wall_ns(crate::datapath::ct_gc::monotonic_now_ns()) - wall).abs() < 1_000_000_000);
}

struct Scripted(Arc<Mutex<VecDeque<PolicyEvent>>>);

impl PolicyEventSource for Scripted {
    fn next(&mut self, timeout: Duration) -> Option<PolicyEvent> {
        let next = self.0.lock().unwrap().pop_front();
        if next.is_none() {
            std::thread::sleep(timeout.min(Duration::from_millis(5)));
        }
        next
    }
}

#[tokio::test]
async fn the_reader_thread_feeds_subscribers_and_stops_when_dropped() {
    let plan = plan();
    let shared = SharedNames::default();
    shared.publish(plan.clone());
    let hub = MonitorHub::new(64);
    let mut subscription = hub.subscribe(MonitorFilter::default()).unwrap();
    let queue = Arc::new(Mutex::new(VecDeque::from([egress_drop(&plan)])));
    let reader =
        EventReader::start(Box::new(Scripted(queue.clone())), shared, hub.clone()).unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .unwrap();
    let Next::Event(event) = next else {
        panic!("{next:?}")
    };
    assert_eq!(event.policy.as_deref(), Some("x/allow-web"));
    drop(reader);
    queue.lock().unwrap().push_back(egress_drop(&plan));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        queue.lock().unwrap().len(),
        1,
        "a stopped reader reads nothing"
    );
    assert_eq!(hub.published(), 1);
}
