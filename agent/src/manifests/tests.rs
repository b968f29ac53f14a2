#![allow(clippy::unwrap_used)]

use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::k8s::{Kind, Object, ObjectKey, ObjectName, Snapshot};

fn yaml(text: &str) -> ParsedFile {
    parse_yaml(Path::new("dir/a.yaml"), text)
}

fn keys(file: &ParsedFile) -> Vec<String> {
    file.objects
        .iter()
        .map(|o| o.object.key().to_string())
        .collect()
}

/// (document, item, line, reason code) of each error.
fn error_sites(file: &ParsedFile) -> Vec<(usize, Option<usize>, Option<usize>, &'static str)> {
    file.errors
        .iter()
        .map(|e| {
            let l = e.location.unwrap();
            (l.document, l.item, l.line, e.reason.code())
        })
        .collect()
}

const GOOD_SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
";

#[test]
fn reads_every_kind_with_api_server_namespaces() {
    let text = format!(
        "{GOOD_SERVICE}---
apiVersion: v1
kind: Namespace
metadata: {{name: prod, labels: {{kubernetes.io/metadata.name: prod}}}}
---
apiVersion: v1
kind: Node
metadata: {{name: n1, namespace: ignored}}
spec: {{podCIDR: 10.244.1.0/24}}
---
apiVersion: v1
kind: Pod
metadata: {{name: p, namespace: prod}}
spec: {{nodeName: n1, containers: [{{name: c}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: s, labels: {{kubernetes.io/service-name: ext}}}}
addressType: IPv4
endpoints: [{{addresses: [10.0.0.1]}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: deny, namespace: prod}}
spec: {{podSelector: {{}}}}
"
    );
    let file = yaml(&text);
    assert!(file.errors.is_empty(), "{:?}", file.errors);
    assert_eq!(file.documents, 6);
    assert_eq!(
        keys(&file),
        vec![
            "Service default/web",
            "Namespace prod",
            "Node n1",
            "Pod prod/p",
            "EndpointSlice default/s",
            "NetworkPolicy prod/deny"
        ]
    );
    let Object::Node(node) = &file.objects[2].object else {
        panic!()
    };
    assert_eq!(
        node.metadata.namespace, None,
        "cluster-wide objects drop the namespace"
    );
    let Object::Service(svc) = &file.objects[0].object else {
        panic!()
    };
    assert_eq!(svc.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(file.objects[3].location.line, Some(18));
}

#[test]
fn bad_documents_are_reported_and_skipped_and_the_rest_applies() {
    let text = format!(
        "{GOOD_SERVICE}---
apiVersion: v1
kind: Service
metadata: {{name: broken
spec: [
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: d}}
---
apiVersion: v1
kind: Pod
metadata: {{labels: {{a: b}}}}
spec: {{containers: []}}
---
apiVersion: v1
kind: Service
metadata: {{name: typed}}
spec:
  ports: [{{port: eighty}}]
---
- just
- a list
---
kind: Service
metadata: {{name: untyped}}
---
apiVersion: v1
kind: Pod
metadata: {{name: last}}
spec: {{containers: []}}
"
    );
    let file = yaml(&text);
    assert_eq!(keys(&file), vec!["Service default/web", "Pod default/last"]);
    assert_eq!(
        error_sites(&file),
        vec![
            (1, None, Some(9), "syntax"),
            (2, None, Some(14), "unsupported_kind"),
            (3, None, Some(18), "missing_name"),
            (4, None, Some(23), "invalid"),
            (5, None, Some(29), "not_an_object"),
            (6, None, Some(32), "not_an_object"),
        ]
    );
    assert_eq!(file.documents, 8);
    let invalid = file.errors[3].to_string();
    assert!(
        invalid.starts_with(
            "dir/a.yaml: document 4 (line 23): invalid Service \"typed\": spec.ports[0].port:"
        ),
        "{invalid}"
    );
    for e in &file.errors {
        println!("{e}");
    }
    let syntax = file.errors[0].to_string();
    assert!(
        syntax.contains("file line"),
        "syntax errors point into the file: {syntax}"
    );
    let unsupported = file.errors[1].to_string();
    assert!(
        unsupported.contains("\"Deployment\"") && unsupported.contains("apps/v1"),
        "{unsupported}"
    );
}

#[test]
fn a_bad_separator_spoils_only_its_document() {
    let file = yaml(&format!(
        "{GOOD_SERVICE}--- !!map\napiVersion: v1\nkind: Namespace\nmetadata: {{name: x}}\n"
    ));
    assert_eq!(keys(&file), vec!["Service default/web"]);
    assert_eq!(error_sites(&file), vec![(1, None, Some(9), "syntax")]);
}

#[test]
fn empty_and_comment_only_documents_are_nothing() {
    let file = yaml(&format!(
        "---\n# just a comment\n---\n\n---\n{GOOD_SERVICE}---\n~\n"
    ));
    assert!(file.errors.is_empty(), "{:?}", file.errors);
    assert_eq!(keys(&file), vec!["Service default/web"]);
}

#[test]
fn yaml_lists_and_anchors_work() {
    let text = "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: a, labels: &l {team: x}}
- apiVersion: v1
  kind: Namespace
  metadata: {name: b, labels: *l}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: c}
";
    let file = yaml(text);
    assert_eq!(keys(&file), vec!["Namespace a", "Namespace b"]);
    assert_eq!(
        error_sites(&file),
        vec![(0, Some(2), Some(1), "unsupported_kind")]
    );
    let Object::Namespace(b) = &file.objects[1].object else {
        panic!()
    };
    assert_eq!(b.metadata.labels.as_ref().unwrap()["team"], "x");
}

#[test]
fn alias_bombs_are_refused_not_expanded() {
    let mut text = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n",
    );
    for i in 1..12 {
        let prev = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
        ));
    }
    let file = yaml(&text);
    assert!(file.objects.is_empty());
    assert_eq!(error_sites(&file), vec![(0, None, Some(1), "syntax")]);
}

#[test]
fn json_single_list_typed_list_and_stream() {
    let single = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}"#;
    let file = parse_json(Path::new("x.json"), single);
    assert_eq!(keys(&file), vec!["Namespace a"]);

    let list = r#"{"apiVersion":"v1","kind":"List","items":[
        {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}},
        {"apiVersion":"v1","kind":"Namespace","metadata":{}},
        {"apiVersion":"v1","kind":"Node","metadata":{"name":"n"}}]}"#;
    let file = parse_json(Path::new("x.json"), list);
    assert_eq!(keys(&file), vec!["Namespace a", "Node n"]);
    assert_eq!(
        error_sites(&file),
        vec![(0, Some(1), Some(1), "missing_name")]
    );

    // What `GET /api/v1/services` returns: items without apiVersion/kind.
    let typed = r#"{"apiVersion":"v1","kind":"ServiceList","items":[
        {"metadata":{"name":"s","namespace":"n"},"spec":{"ports":[{"port":53,"protocol":"UDP"}]}}]}"#;
    let file = parse_json(Path::new("x.json"), typed);
    assert_eq!(keys(&file), vec!["Service n/s"]);

    let stream = format!(
        "{single}\n\n{{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{{\"name\":\"n\"}}}}\n{{\"kind\": "
    );
    let file = parse_json(Path::new("x.json"), &stream);
    assert_eq!(keys(&file), vec!["Namespace a", "Node n"]);
    assert_eq!(error_sites(&file), vec![(2, None, Some(4), "syntax")]);
    assert_eq!(file.objects[1].location.line, Some(3));
}

#[test]
fn files_are_parsed_by_extension_and_must_be_utf8() {
    let json = br#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}"#;
    assert_eq!(
        keys(&parse_file(Path::new("a.JSON"), json)),
        vec!["Namespace a"]
    );
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(b"apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n");
    assert_eq!(
        keys(&parse_file(Path::new("b.yml"), &bom)),
        vec!["Namespace b"]
    );
    let bad = parse_file(Path::new("c.yaml"), b"kind: \xff\xfe");
    assert_eq!(bad.errors.len(), 1);
    assert_eq!(bad.errors[0].reason, Reason::NotUtf8);
    assert_eq!(bad.errors[0].location, None);
    assert_eq!(bad.errors[0].to_string(), "c.yaml: not UTF-8 text");
}

#[test]
fn duplicates_across_files_are_reported_and_the_later_wins() {
    let a = yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {v: '1'}}\n");
    let b = parse_yaml(
        Path::new("dir/b.yaml"),
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {v: '2'}}\n",
    );
    let (snapshot, errors) =
        assemble([(Path::new("dir/a.yaml"), &a), (Path::new("dir/b.yaml"), &b)]);
    assert_eq!(snapshot.counts().total(), 1);
    let ns = snapshot.namespaces.values().next().unwrap();
    assert_eq!(ns.metadata.labels.as_ref().unwrap()["v"], "2");
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].reason,
        Reason::Duplicate {
            key: ObjectKey::new(Kind::Namespace, ObjectName::cluster("x")),
            previous: "dir/a.yaml: document 0 (line 1)".into(),
        }
    );
    assert_eq!(errors[0].location.unwrap().line, Some(2));
}

mod directory {
    use super::*;
    use std::fs;

    fn ns(name: &str) -> String {
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n")
    }

    fn names(snapshot: &Snapshot) -> Vec<String> {
        snapshot.namespaces.keys().map(|k| k.name.clone()).collect()
    }

    fn changed(loader: &mut DirLoader) -> ManifestSet {
        match loader.poll() {
            Poll::Changed(set) => set,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    fn assert_unchanged(loader: &mut DirLoader) {
        let poll = loader.poll();
        assert!(matches!(poll, Poll::Unchanged), "{poll:?}");
    }

    #[test]
    fn reads_manifest_files_only_non_recursively() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("a.yaml"), ns("a")).unwrap();
        fs::write(d.join("b.yml"), ns("b")).unwrap();
        fs::write(
            d.join("c.json"),
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"c"}}"#,
        )
        .unwrap();
        fs::write(d.join("d.txt"), ns("d")).unwrap();
        fs::write(d.join(".e.yaml"), ns("e")).unwrap();
        fs::write(d.join("f.yaml~"), ns("f")).unwrap();
        fs::create_dir(d.join("sub.yaml")).unwrap();
        fs::write(d.join("sub.yaml/g.yaml"), ns("g")).unwrap();
        std::os::unix::fs::symlink(d.join("a.yaml"), d.join("h.yaml")).unwrap();
        std::os::unix::fs::symlink(d.join("missing"), d.join("i.yaml")).unwrap();
        fs::write(d.join("j.yaml"), "kind: [").unwrap();
        let set = load_dir(d);
        assert_eq!(names(&set.snapshot), vec!["a", "b", "c"]);
        assert_eq!(set.files, 5, "a, b, c, h (a link to a) and j");
        let codes: Vec<_> = set
            .errors
            .iter()
            .map(|e| (e.path.file_name().unwrap().to_owned(), e.reason.code()))
            .collect();
        assert_eq!(
            codes,
            vec![("h.yaml".into(), "duplicate"), ("j.yaml".into(), "syntax")]
        );
        assert_eq!(set.error_counts().get("syntax"), Some(&1));
    }

    #[test]
    fn sees_create_edit_delete_rename_and_rename_over() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut loader = DirLoader::new(d);
        let first = changed(&mut loader);
        assert!(first.snapshot.is_empty());
        assert_eq!(first.generation, 1);
        assert_unchanged(&mut loader);

        fs::write(d.join("a.yaml"), ns("a")).unwrap();
        assert_eq!(names(&changed(&mut loader).snapshot), vec!["a"]);
        assert_unchanged(&mut loader);

        // Edit in place, same size.
        fs::write(d.join("a.yaml"), ns("b")).unwrap();
        assert_eq!(names(&changed(&mut loader).snapshot), vec!["b"]);

        fs::rename(d.join("a.yaml"), d.join("c.yaml")).unwrap();
        assert_eq!(names(&changed(&mut loader).snapshot), vec!["b"]);

        // Atomic replace, as editors and kubectl-style writers do it.
        fs::write(d.join(".tmp"), ns("z")).unwrap();
        assert_unchanged(&mut loader);
        fs::rename(d.join(".tmp"), d.join("c.yaml")).unwrap();
        assert_eq!(names(&changed(&mut loader).snapshot), vec!["z"]);

        fs::remove_file(d.join("c.yaml")).unwrap();
        let set = changed(&mut loader);
        assert!(set.snapshot.is_empty());
        assert_eq!(set.generation, 6);
    }

    #[test]
    fn a_missing_directory_keeps_the_last_set_and_a_replaced_one_is_read() {
        let base = tempfile::tempdir().unwrap();
        let d = base.path().join("m");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("a.yaml"), ns("a")).unwrap();
        let mut loader = DirLoader::new(&d);
        changed(&mut loader);
        let before = loader.dir_identity();
        // Staged before the old one goes, so it cannot reuse its inode.
        let staged = base.path().join("staged");
        fs::create_dir(&staged).unwrap();
        fs::write(staged.join("a.yaml"), ns("a2")).unwrap();

        fs::remove_dir_all(&d).unwrap();
        let poll = loader.poll();
        let Poll::Unavailable(error) = poll else {
            panic!("{poll:?}")
        };
        assert_eq!(error.reason.code(), "unreadable");

        fs::rename(&staged, &d).unwrap();
        assert_eq!(names(&changed(&mut loader).snapshot), vec!["a2"]);
        assert_ne!(loader.dir_identity(), before);
    }

    #[test]
    fn configmap_style_symlink_swaps_are_seen() {
        let base = tempfile::tempdir().unwrap();
        let d = base.path();
        fs::create_dir(d.join("..v1")).unwrap();
        fs::write(d.join("..v1/s.yaml"), ns("v1")).unwrap();
        std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/s.yaml", d.join("s.yaml")).unwrap();
        let mut loader = DirLoader::new(d);
        assert_eq!(names(&changed(&mut loader).snapshot), vec!["v1"]);

        fs::create_dir(d.join("..v2")).unwrap();
        fs::write(d.join("..v2/s.yaml"), ns("v2")).unwrap();
        std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
        fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        assert_eq!(names(&changed(&mut loader).snapshot), vec!["v2"]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn yaml_parsing_never_panics(text in "\\PC{0,400}") {
        let _ = parse_yaml(Path::new("p.yaml"), &text);
    }

    #[test]
    fn json_parsing_never_panics(text in "\\PC{0,400}") {
        let _ = parse_json(Path::new("p.json"), &text);
    }

    #[test]
    fn file_parsing_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400), json in any::<bool>()) {
        let path = if json { "p.json" } else { "p.yaml" };
        let _ = parse_file(Path::new(path), &bytes);
    }

    /// Near-miss manifests: real keys and YAML punctuation shuffled, which
    /// reaches far deeper than random characters.
    #[test]
    fn manifest_like_yaml_never_panics(tokens in proptest::collection::vec(prop_oneof![
        Just("apiVersion: v1\n"), Just("kind: Service\n"), Just("kind: Pod\n"), Just("kind: List\n"),
        Just("kind: EndpointSlice\n"), Just("apiVersion: discovery.k8s.io/v1\n"),
        Just("metadata:\n"), Just("  name: x\n"), Just("  namespace: y\n"), Just("spec:\n"),
        Just("  ports:\n"), Just("  - port: 80\n"), Just("    targetPort: http\n"), Just("  selector: {a: b}\n"),
        Just("items:\n"), Just("- "), Just("---\n"), Just("  "), Just("{"), Just("}"), Just("["), Just("]"),
        Just(": "), Just("&a "), Just("*a "), Just("!!str "), Just("'"), Just("\""), Just("\n"), Just("null\n"),
        Just("-1"), Just("99999999999999999999"), Just("status: {podIP: 10.0.0.1}\n"),
    ], 0..60)) {
        let text: String = tokens.concat();
        let _ = parse_yaml(Path::new("p.yaml"), &text);
        let json = text.replace('\n', " ");
        let _ = parse_json(Path::new("p.json"), &json);
    }
}

#[test]
fn large_files_parse_the_same_in_parallel() {
    let mut text = String::new();
    for i in 0..1000 {
        if i % 97 == 5 {
            text.push_str("---\nkind: [\n");
        } else {
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{i}}}\n"
            ));
        }
    }
    let file = yaml(&text);
    assert_eq!(file.documents, 1000);
    assert_eq!(file.objects.len() + file.errors.len(), 1000);
    let documents: Vec<usize> = file.objects.iter().map(|o| o.location.document).collect();
    assert!(
        documents.windows(2).all(|w| w[0] < w[1]),
        "objects stay in document order"
    );
    assert_eq!(file.objects[0].location.line, Some(2));
    assert_eq!(
        file.objects.last().unwrap().object.key().to_string(),
        "Namespace ns-999"
    );
    let bad: Vec<usize> = file
        .errors
        .iter()
        .map(|e| e.location.unwrap().document)
        .collect();
    assert_eq!(bad, (0..1000).filter(|i| i % 97 == 5).collect::<Vec<_>>());
}

#[test]
fn large_json_lists_convert_the_same_in_parallel() {
    let items: Vec<String> = (0..1000)
        .map(|i| {
            if i % 89 == 3 {
                r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":7}}"#.to_string()
            } else {
                format!(
                    r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"ns-{i}"}}}}"#
                )
            }
        })
        .collect();
    let text = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[\n{}\n]}}",
        items.join(",\n")
    );
    let file = parse_json(Path::new("big.json"), &text);
    assert_eq!(file.documents, 1);
    assert_eq!(file.objects.len() + file.errors.len(), 1000);
    let order: Vec<usize> = file
        .objects
        .iter()
        .map(|o| o.location.item.unwrap())
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "objects stay in item order"
    );
    let bad: Vec<usize> = file
        .errors
        .iter()
        .map(|e| e.location.unwrap().item.unwrap())
        .collect();
    assert_eq!(bad, (0..1000).filter(|i| i % 89 == 3).collect::<Vec<_>>());
    assert!(
        file.errors.iter().all(|e| e.reason.code() == "invalid"),
        "a numeric name is a type error"
    );
}

#[test]
fn json_documents_report_like_yaml_ones() {
    let text = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},"spec":{"ports":[{"port":"eighty"}]}}
{"apiVersion":"v1","kind":"Serv\u0069ce","metadata":{"name":"escaped"},"spec":{"ports":[{"port":80}]}}
{"apiVersion":"v1","kind":"List","items":5}
{"apiVersion":"v1","kind":"List","items":[null, 3, {"apiVersion":"v1","kind":"List","items":[]}, {"kind":"Pod","metadata":{"name":"p"}}]}
{"apiVersion":"v1","kind":"NodeList","items":[{"metadata":{"name":"n1"}},{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ns"}},{"kind":"Node","metadata":{"name":"n2"}}]}
[1, 2]
null
{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"}}
"#;
    let file = parse_json(Path::new("m.json"), text);
    assert_eq!(
        keys(&file),
        vec![
            "Service default/escaped",
            "Node n1",
            "Namespace ns",
            "Node n2"
        ]
    );
    assert_eq!(
        error_sites(&file),
        vec![
            (0, None, Some(1), "invalid"),
            (2, None, Some(3), "not_an_object"),
            (3, Some(0), Some(4), "not_an_object"),
            (3, Some(1), Some(4), "not_an_object"),
            (3, Some(2), Some(4), "not_an_object"),
            (3, Some(3), Some(4), "not_an_object"),
            (5, None, Some(6), "not_an_object"),
            (7, None, Some(8), "unsupported_kind"),
        ]
    );
    assert_eq!(file.documents, 8);
    assert_eq!(
        file.errors[0].to_string(),
        "m.json: document 0 (line 1): invalid Service \"s\": spec.ports[0].port: invalid type: string \"eighty\", expected i32"
    );
    assert_eq!(
        file.errors[4].reason,
        Reason::InvalidList("a List inside a List".into())
    );
    assert_eq!(file.errors[5].reason, Reason::MissingTypeMeta);
}

#[test]
fn duplicates_within_and_across_files_name_the_definition_they_replace() {
    let ns = |name: &str, v: &str| {
        format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{v: '{v}'}}}}\n"
        )
    };
    let a = yaml(&(ns("xa", "1") + &ns("yb", "1") + &ns("xa", "2") + &ns("xa", "3")));
    let b = parse_yaml(Path::new("dir/b.yaml"), &(ns("zc", "1") + &ns("yb", "2")));
    let (snapshot, errors) =
        assemble([(Path::new("dir/a.yaml"), &a), (Path::new("dir/b.yaml"), &b)]);
    assert!(
        a.errors.is_empty() && b.errors.is_empty(),
        "{:?} {:?}",
        a.errors,
        b.errors
    );
    let label = |n: &str| {
        snapshot.namespaces[&ObjectName::cluster(n)]
            .metadata
            .labels
            .as_ref()
            .unwrap()["v"]
            .clone()
    };
    assert_eq!(
        (label("xa"), label("yb"), label("zc")),
        ("3".into(), "2".into(), "1".into())
    );
    let reported: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        reported,
        vec![
            "dir/a.yaml: document 2 (line 10): Namespace xa was already defined in dir/a.yaml: document 0 (line 2); this later definition replaces it",
            "dir/a.yaml: document 3 (line 14): Namespace xa was already defined in dir/a.yaml: document 2 (line 10); this later definition replaces it",
            "dir/b.yaml: document 1 (line 6): Namespace yb was already defined in dir/a.yaml: document 1 (line 6); this later definition replaces it",
        ]
    );
}

#[test]
fn yaml_1_1_scalars_are_read_as_kubernetes_reads_them() {
    // sigs.k8s.io/yaml (YAML 1.1) makes `y` a boolean: not a valid name.
    let file = yaml(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: y}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: \"y\"}\n",
    );
    assert_eq!(keys(&file), vec!["Namespace y"]);
    assert_eq!(error_sites(&file), vec![(0, None, Some(1), "invalid")]);
    assert!(
        file.errors[0]
            .to_string()
            .contains("metadata.name: invalid type: boolean"),
        "{}",
        file.errors[0]
    );
    let empty = yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: \"\"}\n");
    assert_eq!(
        error_sites(&empty),
        vec![(0, None, Some(1), "missing_name")]
    );
}
