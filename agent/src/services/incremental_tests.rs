#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;
use crate::k8s::test_support::{node, pod, snapshot};
use crate::k8s::{Object, ObjectKey};
use crate::services::compute_plan;

/// Every object variant the sequences pick from: Services that select or
/// not and collide on addresses, slices of those Services, Pods that move
/// between labels, nodes and readiness, and Nodes whose addresses change.
fn variants() -> &'static [Object] {
    static VARIANTS: OnceLock<Vec<Object>> = OnceLock::new();
    VARIANTS.get_or_init(|| {
        let mut yaml = String::new();
        for ns in ["a", "b"] {
            for (i, svc) in ["s0", "s1", "s2"].iter().enumerate() {
                for (variant, spec) in [
                    format!("clusterIP: 10.96.0.{i}\n  selector: {{app: x}}\n  ports: [{{name: http, port: 80, targetPort: http}}]"),
                    format!("clusterIP: 10.96.0.{i}\n  ports: [{{name: http, port: 80}}]"),
                    // Collides with s0's address in any namespace.
                    "clusterIP: 10.96.0.0\n  selector: {app: y}\n  ports: [{name: http, port: 80, targetPort: 8080}]".into(),
                    format!("type: NodePort\n  clusterIP: 10.96.1.{i}\n  externalTrafficPolicy: Local\n  selector: {{app: y}}\n  ports: [{{name: http, port: 80, targetPort: http, nodePort: 3000{i}}}]"),
                ]
                .iter()
                .enumerate()
                {
                    yaml += &format!(
                        "---\napiVersion: v1\nkind: Service\nmetadata: {{namespace: {ns}, name: {svc}, labels: {{v: \"{variant}\"}}}}\nspec:\n  {spec}\n"
                    );
                }
                for (variant, address) in ["10.1.0.1", "10.1.0.2"].iter().enumerate() {
                    yaml += &format!(
                        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                         metadata: {{namespace: {ns}, name: {svc}-e, labels: {{kubernetes.io/service-name: {svc}, v: \"{variant}\"}}}}\n\
                         addressType: IPv4\nports: [{{name: http, port: 8080}}]\n\
                         endpoints: [{{addresses: [\"{address}\"], nodeName: n1}}]\n"
                    );
                }
            }
            for p in ["p0", "p1", "p2"] {
                for (labels, node_name, ip, ready) in [
                    ("app: x", "n1", "10.0.1.5", true),
                    ("app: y", "n2", "10.0.2.5", true),
                    ("app: x", "n2", "10.0.2.6", false),
                    ("app: y", "n9", "10.0.9.5", true),
                ] {
                    yaml += &pod(ns, p, labels, node_name, ip, ready, &["http:8080"]);
                }
            }
        }
        yaml += &node("n1", "192.168.0.1", Some("10.0.1.0/24"));
        yaml += &node("n1", "192.168.0.11", Some("10.0.1.0/24"));
        yaml += &node("n2", "192.168.0.2", Some("10.0.2.0/24"));
        crate::manifests::parse_yaml(std::path::Path::new("v.yaml"), &yaml)
            .objects
            .into_iter()
            .map(|p| p.object)
            .collect()
    })
}

#[derive(Clone, Debug)]
enum Step {
    /// Insert variant `i` (replacing the object of its name).
    Put(usize),
    /// Insert a deep copy of variant `i` (equal, but not the same `Arc`).
    PutCopy(usize),
    /// Remove the object of variant `i`'s name.
    Remove(usize),
    /// A CNI registration overrides pod `p`'s address (or drops it).
    Override(usize, Option<u8>),
    Algorithm(bool),
    NodePortAddresses(bool),
}

fn step() -> impl Strategy<Value = Step> {
    let n = variants().len();
    prop_oneof![
        6 => (0..n).prop_map(Step::Put),
        1 => (0..n).prop_map(Step::PutCopy),
        3 => (0..n).prop_map(Step::Remove),
        1 => (0..6usize, proptest::option::of(1..4u8)).prop_map(|(p, ip)| Step::Override(p, ip)),
        1 => any::<bool>().prop_map(Step::Algorithm),
        1 => any::<bool>().prop_map(Step::NodePortAddresses),
    ]
}

fn deep_copy(object: &Object) -> Object {
    match object {
        Object::Namespace(o) => Object::from((**o).clone()),
        Object::Node(o) => Object::from((**o).clone()),
        Object::Pod(o) => Object::from((**o).clone()),
        Object::Service(o) => Object::from((**o).clone()),
        Object::EndpointSlice(o) => Object::from((**o).clone()),
        Object::NetworkPolicy(o) => Object::from((**o).clone()),
    }
}

fn key_of(i: usize) -> ObjectKey {
    variants()[i].key()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// After any sequence of changes the incremental plan equals the full
    /// one.
    #[test]
    fn incremental_plan_equals_the_full_plan(steps in proptest::collection::vec(step(), 1..40)) {
        let mut ctx = PlanContext { node_name: "n1".into(), ..PlanContext::default() };
        let mut planner = IncrementalPlanner::new();
        let mut previous: Option<Snapshot> = None;
        let mut current = snapshot("");
        for step in steps {
            match step {
                Step::Put(i) => { current.insert(variants()[i].clone()); }
                Step::PutCopy(i) => { current.insert(deep_copy(&variants()[i])); }
                Step::Remove(i) => { current.remove(&key_of(i)); }
                Step::Override(p, ip) => {
                    let name = ObjectName::new(["a", "b"][p % 2], format!("p{}", p / 2));
                    match ip {
                        Some(last) => { ctx.pod_ip_overrides.insert(name, Ipv4Addr::new(10, 0, 1, 100 + last)); }
                        None => { ctx.pod_ip_overrides.remove(&name); }
                    }
                }
                Step::Algorithm(maglev) => {
                    ctx.default_algorithm = if maglev { Algorithm::Maglev } else { Algorithm::Random };
                }
                Step::NodePortAddresses(set) => {
                    ctx.nodeport_addresses = set.then(|| vec![Ipv4Addr::new(192, 168, 9, 9)]);
                }
            }
            let got = planner.plan(previous.as_ref(), &current, &ctx);
            prop_assert_eq!(got, compute_plan(&current, &ctx));
            previous = Some(current.clone());
        }
    }
}

#[test]
fn only_the_services_whose_inputs_changed_are_dirty() {
    let base = snapshot(
        &(node("n1", "192.168.0.1", None)
            + "---\napiVersion: v1\nkind: Service\nmetadata: {namespace: a, name: sel}\n\
               spec: {clusterIP: 10.96.0.1, selector: {app: x}, ports: [{port: 80}]}\n\
               ---\napiVersion: v1\nkind: Service\nmetadata: {namespace: a, name: plain}\n\
               spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}\n"),
    );
    let mut with_pod = base.clone();
    for object in snapshot(&pod("a", "p", "app: x", "n1", "10.0.1.5", true, &[])).objects() {
        with_pod.insert(object);
    }
    let sel = ObjectName::new("a", "sel");
    assert_eq!(
        dirty_services(&base, &with_pod, &[]),
        Dirty::Some([sel.clone()].into())
    );
    assert_eq!(
        dirty_services(&base, &base.clone(), &[]),
        Dirty::Some(BTreeSet::new())
    );
    assert_eq!(
        dirty_services(&base, &base, &[ObjectName::new("a", "p")]),
        Dirty::Some(BTreeSet::new()),
        "an override of a pod that is not there changes nothing"
    );
    let mut other_node = base.clone();
    for object in snapshot(&node("n1", "192.168.0.9", None)).objects() {
        other_node.insert(object);
    }
    assert_eq!(dirty_services(&base, &other_node, &[]), Dirty::All);
}

trait Objects {
    fn objects(&self) -> Vec<Object>;
}

impl Objects for Snapshot {
    fn objects(&self) -> Vec<Object> {
        let mut out: Vec<Object> = Vec::new();
        out.extend(self.nodes.values().cloned().map(Object::from));
        out.extend(self.pods.values().cloned().map(Object::from));
        out.extend(self.services.values().cloned().map(Object::from));
        out.extend(self.endpoint_slices.values().cloned().map(Object::from));
        out
    }
}
