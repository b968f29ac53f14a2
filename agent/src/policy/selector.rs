//! Label selectors (`metav1.LabelSelector`) with `matchLabels` and all four
//! `matchExpressions` operators, parsed once and matched many times.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::error::Problem;

/// A parsed selector: every requirement must hold. No requirements selects
/// everything (the empty selector `{}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Requirement {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

/// Where in the selector a problem is (`matchExpressions[2]`), and what.
pub type SelectorError = (String, Problem);

impl Selector {
    /// Selects everything.
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn parse(selector: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            if key.is_empty() {
                return Err(("matchLabels".into(), Problem::EmptyKey));
            }
            requirements.push(Requirement::In(
                key.clone(),
                BTreeSet::from([value.clone()]),
            ));
        }
        for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
            let at = || format!("matchExpressions[{i}]");
            let key = expr.key.clone();
            if key.is_empty() {
                return Err((at(), Problem::EmptyKey));
            }
            let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
            let operator = expr.operator.clone();
            let requirement = match operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err((at(), Problem::MissingValues { key, operator }));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err((at(), Problem::UnexpectedValues { key, operator }));
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                _ => return Err((at(), Problem::UnknownOperator { key, operator })),
            };
            requirements.push(requirement);
        }
        Ok(Self { requirements })
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            // NotIn also holds when the key is absent, as in Kubernetes.
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::DoesNotExist(key) => !labels.contains_key(key),
        })
    }
}
