//! Label selection as Services use it: a plain map of required labels.

use std::collections::BTreeMap;

/// True when every `key: value` of `selector` is among `labels`. An empty
/// selector matches everything; callers decide what "no selector" means.
pub fn matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector.iter().all(|(key, value)| {
        labels
            .and_then(|labels| labels.get(key))
            .is_some_and(|have| have == value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn all_selector_labels_must_match() {
        let labels = map(&[("app", "web"), ("tier", "front")]);
        assert!(matches(&map(&[("app", "web")]), Some(&labels)));
        assert!(matches(
            &map(&[("app", "web"), ("tier", "front")]),
            Some(&labels)
        ));
        assert!(!matches(
            &map(&[("app", "web"), ("tier", "back")]),
            Some(&labels)
        ));
        assert!(!matches(&map(&[("app", "db")]), Some(&labels)));
        assert!(!matches(&map(&[("app", "web")]), None));
        assert!(matches(&map(&[]), None));
    }
}
