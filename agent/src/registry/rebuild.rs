//! Start-up adoption: which endpoint records still describe a live pod.
//!
//! A record stays when the host-side link it names is still there under
//! the same index and name. Anything else means the pod went away while
//! the agent was down (CNI DEL without us, a crashed runtime, a reboot of
//! the netns), and the record is dropped.

use std::collections::{BTreeMap, HashMap};

use super::record::EndpointRecord;

/// A link in the node's netns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveLink {
    pub index: u32,
    pub name: String,
}

/// What happens to one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Drop(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub record: EndpointRecord,
    pub verdict: Verdict,
}

/// Decides every record against the live links (records in the given
/// order; of two records claiming one link the first stays).
pub fn decide(records: Vec<EndpointRecord>, links: &[LiveLink]) -> Vec<Decision> {
    let by_index: HashMap<u32, &str> = links.iter().map(|l| (l.index, l.name.as_str())).collect();
    let by_name: HashMap<&str, u32> = links.iter().map(|l| (l.name.as_str(), l.index)).collect();
    let mut claimed: BTreeMap<u32, String> = BTreeMap::new();
    records
        .into_iter()
        .map(|record| {
            let index = record.endpoint.host_ifindex;
            let name = record.endpoint.host_ifname.as_str();
            let verdict = match (by_index.get(&index), by_name.get(name)) {
                (Some(live), _) if *live == name => match claimed.get(&index) {
                    Some(owner) => Verdict::Drop(format!(
                        "link {name} (index {index}) is already registered by {owner}"
                    )),
                    None => {
                        claimed.insert(index, record.key().to_string());
                        Verdict::Keep
                    }
                },
                (Some(live), _) => Verdict::Drop(format!(
                    "index {index} now belongs to link {live}, not {name} (the index was reused)"
                )),
                (None, Some(now)) => Verdict::Drop(format!(
                    "link {name} now has index {now}, not {index} (it was recreated since the registration)"
                )),
                (None, None) => Verdict::Drop(format!("link {name} (index {index}) is gone")),
            };
            Decision { record, verdict }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::registry::record::tests::spec;

    fn record(id: &str, index: u32, name: &str) -> EndpointRecord {
        let mut s = spec(id, index);
        s.host_ifname = name.into();
        EndpointRecord::new(s)
    }

    fn link(index: u32, name: &str) -> LiveLink {
        LiveLink {
            index,
            name: name.into(),
        }
    }

    #[test]
    fn keeps_matching_links_and_explains_every_drop() {
        let links = [
            link(1, "lo"),
            link(2, "eth0"),
            link(7, "weirA"),
            link(9, "weirB"),
            link(11, "weirX"),
        ];
        let records = vec![
            record("kept", 7, "weirA"),
            record("reused", 9, "weirC"),
            record("recreated", 8, "weirB"),
            record("gone", 10, "weirD"),
            record("twin", 7, "weirA"),
        ];
        let decisions = decide(records, &links);
        let verdicts: Vec<(&str, &Verdict)> = decisions
            .iter()
            .map(|d| (d.record.endpoint.container_id.as_str(), &d.verdict))
            .collect();
        assert_eq!(verdicts[0], ("kept", &Verdict::Keep));
        let reason = |i: usize| match &decisions[i].verdict {
            Verdict::Drop(r) => r.clone(),
            Verdict::Keep => panic!("{} kept", decisions[i].record.endpoint.container_id),
        };
        assert!(
            reason(1).contains("now belongs to link weirB"),
            "{}",
            reason(1)
        );
        assert!(reason(2).contains("now has index 9"), "{}", reason(2));
        assert!(reason(3).contains("is gone"), "{}", reason(3));
        assert!(
            reason(4).contains("already registered by kept/eth0"),
            "{}",
            reason(4)
        );
    }

    #[test]
    fn no_links_drops_everything_and_no_records_is_fine() {
        assert!(decide(vec![], &[link(1, "lo")]).is_empty());
        let decisions = decide(vec![record("a", 3, "weirA")], &[]);
        assert!(matches!(decisions[0].verdict, Verdict::Drop(_)));
    }
}
