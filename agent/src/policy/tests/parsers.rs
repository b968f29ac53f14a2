//! The selector and ipBlock parsers, by example and by property.
#![allow(clippy::unwrap_used)]

use super::*;

mod selectors {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn selector(match_labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> Selector {
        Selector::parse(&LabelSelector {
            match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        })
        .unwrap()
    }

    #[test]
    fn the_empty_selector_selects_everything() {
        let all = selector(&[], vec![]);
        assert!(all.is_everything());
        assert!(all.matches(&labels(&[])));
        assert!(all.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn every_operator_matches_as_kubernetes_does() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db")]);
        let none = labels(&[]);
        let cases = [
            (expr("app", "In", &["web", "api"]), [true, false, false]),
            (expr("app", "NotIn", &["web"]), [false, true, true]),
            (expr("tier", "Exists", &[]), [true, false, false]),
            (expr("tier", "DoesNotExist", &[]), [false, true, true]),
        ];
        for (requirement, expected) in cases {
            let s = selector(&[], vec![requirement.clone()]);
            let got = [s.matches(&web), s.matches(&db), s.matches(&none)];
            assert_eq!(got, expected, "{requirement:?}");
        }
        // matchLabels and expressions are ANDed.
        let s = selector(&[("app", "web")], vec![expr("tier", "In", &["back"])]);
        assert!(!s.matches(&web));
        let s = selector(&[("app", "web")], vec![expr("tier", "NotIn", &["back"])]);
        assert!(s.matches(&web));
    }

    #[test]
    fn bad_requirements_are_errors_with_their_position() {
        let parse = |exprs| {
            Selector::parse(&LabelSelector {
                match_labels: None,
                match_expressions: Some(exprs),
            })
        };
        let (at, problem) = parse(vec![
            expr("a", "Exists", &[]),
            expr("app", "Equals", &["x"]),
        ])
        .unwrap_err();
        assert_eq!(at, "matchExpressions[1]");
        assert!(
            matches!(problem, Problem::UnknownOperator { ref operator, .. } if operator == "Equals")
        );
        assert!(matches!(
            parse(vec![expr("a", "In", &[])]).unwrap_err().1,
            Problem::MissingValues { .. }
        ));
        assert!(matches!(
            parse(vec![expr("a", "Exists", &["x"])]).unwrap_err().1,
            Problem::UnexpectedValues { .. }
        ));
        assert!(matches!(
            parse(vec![expr("", "Exists", &[])]).unwrap_err().1,
            Problem::EmptyKey
        ));
    }
}

mod ip_blocks {
    use super::*;

    fn block(cidr: &str, except: &[&str]) -> Result<Peer, (String, Problem)> {
        parse_ip_block(&k8s_openapi::api::networking::v1::IPBlock {
            cidr: cidr.into(),
            except: Some(except.iter().map(|e| e.to_string()).collect()),
        })
    }

    #[test]
    fn cidrs_parse_strictly_and_lose_their_host_bits() {
        assert_eq!(
            parse_cidr("10.1.2.3/8"),
            Ok(Cidr::V4("10.0.0.0/8".parse().unwrap()))
        );
        assert_eq!(
            parse_cidr("0.0.0.0/0"),
            Ok(Cidr::V4("0.0.0.0/0".parse().unwrap()))
        );
        assert_eq!(parse_cidr("fd00::/8"), Ok(Cidr::V6));
        for bad in [
            "10.0.0.1",
            "10.0.0.0/33",
            "10.0.0/8",
            "10.0.0.0/255.0.0.0",
            "10.0.0.0/",
            "/8",
            "x/8",
            "10.0.0.0/+8",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn excepts_must_be_strictly_inside() {
        let Peer::Block(ok) = block("10.0.0.0/8", &["10.1.0.0/16", "10.1.0.0/16"]).unwrap() else {
            panic!()
        };
        assert_eq!(ok.except.len(), 1, "deduplicated");
        assert!(ok.contains(ip("10.2.0.1")));
        assert!(!ok.contains(ip("10.1.0.1")));
        for bad in ["10.0.0.0/8", "11.0.0.0/16", "10.0.0.0/7", "nope"] {
            let (at, _) = block("10.0.0.0/8", &[bad]).unwrap_err();
            assert_eq!(at, "ipBlock.except[0]", "{bad}");
        }
        assert_eq!(block("fd00::/8", &[]).unwrap(), Peer::Nothing);
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn label() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("app".to_string()),
            Just("tier".to_string()),
            "[a-z]{0,3}"
        ]
    }

    proptest! {
        #[test]
        fn selectors_never_panic_and_agree_with_a_plain_reading(
            operator in prop_oneof![
                Just("In".to_string()),
                Just("NotIn".to_string()),
                Just("Exists".to_string()),
                Just("DoesNotExist".to_string()),
                "[A-Za-z]{0,8}",
            ],
            key in label(),
            values in proptest::collection::vec(label(), 0..3),
            labels in proptest::collection::btree_map(label(), label(), 0..4),
        ) {
            let requirement = LabelSelectorRequirement { key: key.clone(), operator: operator.clone(), values: Some(values.clone()) };
            let parsed = Selector::parse(&LabelSelector { match_labels: None, match_expressions: Some(vec![requirement]) });
            let have = labels.get(&key);
            let expected = match (operator.as_str(), values.is_empty(), key.is_empty()) {
                (_, _, true) => None,
                ("In", false, _) => Some(have.is_some_and(|v| values.contains(v))),
                ("NotIn", false, _) => Some(!have.is_some_and(|v| values.contains(v))),
                ("Exists", true, _) => Some(have.is_some()),
                ("DoesNotExist", true, _) => Some(have.is_none()),
                _ => None,
            };
            prop_assert_eq!(parsed.ok().map(|s| s.matches(&labels)), expected);
        }

        #[test]
        fn cidr_parsing_never_panics(text in "[0-9./:a-f]{0,24}") {
            let _ = parse_cidr(&text);
        }

        #[test]
        fn ip_blocks_hold_exactly_the_cidr_minus_the_excepts(
            base in any::<u32>(), len in 0u8..=30, excepts in proptest::collection::vec((any::<u32>(), 1u8..=32), 0..4), probe in any::<u32>(),
        ) {
            let cidr = ipnetwork::Ipv4Network::new(Ipv4Addr::from(base), len).unwrap();
            let cidr_text = format!("{}/{len}", Ipv4Addr::from(base));
            let except_texts: Vec<String> = excepts.iter().map(|(a, l)| format!("{}/{}", Ipv4Addr::from(*a), (*l).max(len + 1))).collect();
            let block = k8s_openapi::api::networking::v1::IPBlock { cidr: cidr_text, except: Some(except_texts.clone()) };
            match parse_ip_block(&block) {
                Ok(Peer::Block(CidrBlock { cidr: parsed, except })) => {
                    prop_assert_eq!(parsed.network(), cidr.network());
                    let probe = Ipv4Addr::from(probe);
                    let inside = cidr.contains(probe) && !except.iter().any(|e| e.contains(probe));
                    prop_assert_eq!(CidrBlock { cidr: parsed, except: except.clone() }.contains(probe), inside);
                    prop_assert!(except.iter().all(|e| e.is_subnet_of(parsed) && e.prefix() > parsed.prefix()));
                }
                Ok(other) => prop_assert!(false, "{other:?}"),
                Err((at, problem)) => {
                    prop_assert!(at.starts_with("ipBlock.except["), "{at}");
                    let outside = matches!(problem, Problem::ExceptOutsideCidr { .. });
                    prop_assert!(outside);
                }
            }
        }
    }
}
