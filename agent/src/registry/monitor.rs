//! The `monitor` op of the agent socket: a client asks for policy verdict
//! events (optionally of one pod, or one verdict) and the agent streams
//! them, one JSON line each, until the client hangs up.
//!
//! ```text
//! → {"v":1,"op":"monitor","pod":"x/a","verdict":"drop"}
//! ← {"v":1,"ok":true}
//! ← {"v":1,"event":{"time":"2026-12-04T12:00:01.123Z","verdict":"drop",...}}
//! ← {"v":1,"dropped":12}      (this client was too slow: 12 events skipped)
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use super::protocol::VERSION;
use crate::k8s::ObjectName;

/// What a policy verdict event says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorVerdict {
    Allow,
    Drop,
    /// A would-be drop that passed in audit mode.
    Audit,
}

impl MonitorVerdict {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Drop => "drop",
            Self::Audit => "audit",
        }
    }
}

impl std::str::FromStr for MonitorVerdict {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Self::Allow),
            "drop" => Ok(Self::Drop),
            "audit" => Ok(Self::Audit),
            other => Err(format!(
                "verdict {other:?} is not one of allow, drop, audit"
            )),
        }
    }
}

/// Which events a subscriber wants; every field narrows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorFilter {
    /// The local pod, `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<MonitorVerdict>,
}

impl MonitorFilter {
    /// The pod filter as an object name; an error names the bad value.
    pub fn pod_name(&self) -> Result<Option<ObjectName>, String> {
        self.pod.as_deref().map(parse_pod).transpose()
    }

    pub fn matches(&self, event: &MonitorEvent) -> bool {
        self.verdict.is_none_or(|v| v == event.verdict)
            && self
                .pod
                .as_deref()
                .is_none_or(|pod| event.pod.as_deref() == Some(pod))
    }
}

/// `namespace/name`, both non-empty.
pub fn parse_pod(text: &str) -> Result<ObjectName, String> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(ObjectName::new(ns, name))
        }
        _ => Err(format!("pod {text:?} is not NAMESPACE/NAME")),
    }
}

/// One verdict, decoded and named by the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorEvent {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub verdict: MonitorVerdict,
    /// `ingress` or `egress`, as seen by the local pod.
    pub direction: String,
    /// `TCP`, `UDP`, `SCTP`, `ICMP` or the protocol number.
    pub proto: String,
    /// `ip:port` after DNAT.
    pub src: String,
    pub dst: String,
    /// The destination before DNAT (the Service VIP), when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_dst: Option<String>,
    /// The local pod, `namespace/name`; its address when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The other side: `namespace/name`, pod identity labels, a CIDR,
    /// `world`, `host` or `remote-node`.
    pub peer: String,
    /// The datapath reason, e.g. `policy_default_deny` or `forwarded`.
    pub reason: String,
    /// The deciding policy, `namespace/name`; none when not isolated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// `ingress[0]`, `egress[1]`, `isolation (default deny)`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The verdict of an existing flow re-checked after a policy change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recheck: bool,
}

impl fmt::Display for MonitorEvent {
    /// One terminal line, e.g.
    /// `12:00:01.123 DROP  egress  TCP 10.244.1.5:40312 -> 10.244.2.7:80  x/a -> y/b  policy x/deny-all isolation (default deny)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The clock part of the RFC 3339 stamp.
        let clock = self
            .time
            .split_once('T')
            .map_or(self.time.as_str(), |(_, t)| t.trim_end_matches('Z'));
        let verdict = self.verdict.as_str().to_ascii_uppercase();
        write!(
            f,
            "{clock} {verdict:<5} {:<7} {} {} -> {}",
            self.direction, self.proto, self.src, self.dst
        )?;
        if let Some(vip) = &self.original_dst {
            write!(f, " (via {vip})")?;
        }
        let local = self.pod.as_deref().unwrap_or("?");
        let (from, to) = if self.direction == "ingress" {
            (self.peer.as_str(), local)
        } else {
            (local, self.peer.as_str())
        };
        write!(f, "  {from} -> {to}")?;
        match (&self.policy, &self.rule) {
            (Some(policy), Some(rule)) => write!(f, "  policy {policy} {rule}")?,
            (Some(policy), None) => write!(f, "  policy {policy}")?,
            (None, Some(rule)) => write!(f, "  {rule}")?,
            (None, None) => {}
        }
        if self.recheck {
            write!(f, " [recheck]")?;
        }
        if self.verdict != MonitorVerdict::Allow {
            write!(f, " ({})", self.reason)?;
        }
        Ok(())
    }
}

/// A line the agent streams after accepting a `monitor` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorLine {
    pub v: u32,
    #[serde(flatten)]
    pub body: MonitorBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorBody {
    Event(Box<MonitorEvent>),
    /// Events this subscriber missed because it read too slowly.
    Dropped(u64),
}

impl MonitorLine {
    pub fn event(event: MonitorEvent) -> Self {
        Self {
            v: VERSION,
            body: MonitorBody::Event(Box::new(event)),
        }
    }

    pub fn dropped(count: u64) -> Self {
        Self {
            v: VERSION,
            body: MonitorBody::Dropped(count),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::registry::protocol::{Op, Request, decode_request, encode};

    pub(crate) fn event(verdict: MonitorVerdict, pod: &str) -> MonitorEvent {
        MonitorEvent {
            time: "2026-12-04T12:00:01.123Z".into(),
            verdict,
            direction: "egress".into(),
            proto: "TCP".into(),
            src: "10.244.1.5:40312".into(),
            dst: "10.244.2.7:80".into(),
            original_dst: None,
            pod: Some(pod.into()),
            peer: "y/b".into(),
            reason: "policy_default_deny".into(),
            policy: Some("x/deny-all".into()),
            rule: Some("isolation (default deny)".into()),
            recheck: false,
        }
    }

    #[test]
    fn a_drop_prints_as_one_line_naming_policy_and_rule() {
        let drop = event(MonitorVerdict::Drop, "x/a");
        assert_eq!(
            drop.to_string(),
            "12:00:01.123 DROP  egress  TCP 10.244.1.5:40312 -> 10.244.2.7:80  x/a -> y/b  \
             policy x/deny-all isolation (default deny) (policy_default_deny)"
        );
        let mut allow = event(MonitorVerdict::Allow, "y/b");
        allow.direction = "ingress".into();
        allow.peer = "x/a".into();
        allow.reason = "forwarded".into();
        allow.policy = Some("y/allow-x".into());
        allow.rule = Some("ingress[0]".into());
        allow.original_dst = Some("10.96.0.10:80".into());
        assert_eq!(
            allow.to_string(),
            "12:00:01.123 ALLOW ingress TCP 10.244.1.5:40312 -> 10.244.2.7:80 (via 10.96.0.10:80)  \
             x/a -> y/b  policy y/allow-x ingress[0]"
        );
    }

    #[test]
    fn filters_narrow_by_pod_and_verdict() {
        let drop = event(MonitorVerdict::Drop, "x/a");
        let any = MonitorFilter::default();
        assert!(any.matches(&drop));
        let pod = MonitorFilter {
            pod: Some("x/a".into()),
            verdict: None,
        };
        assert!(pod.matches(&drop));
        assert!(!pod.matches(&event(MonitorVerdict::Drop, "x/b")));
        let audits = MonitorFilter {
            pod: Some("x/a".into()),
            verdict: Some(MonitorVerdict::Audit),
        };
        assert!(!audits.matches(&drop));
        assert!(audits.matches(&event(MonitorVerdict::Audit, "x/a")));
    }

    #[test]
    fn pods_are_namespace_slash_name() {
        assert_eq!(parse_pod("x/a").unwrap(), ObjectName::new("x", "a"));
        for bad in ["x", "/a", "x/", "x/a/b", ""] {
            assert!(parse_pod(bad).is_err(), "{bad}");
        }
        assert_eq!("audit".parse(), Ok(MonitorVerdict::Audit));
        assert!("deny".parse::<MonitorVerdict>().is_err());
    }

    #[test]
    fn requests_and_lines_round_trip() {
        let line = br#"{"v":1,"op":"monitor","pod":"x/a","verdict":"drop"}"#;
        let request = decode_request(line).unwrap();
        assert_eq!(
            request.op,
            Op::Monitor(MonitorFilter {
                pod: Some("x/a".into()),
                verdict: Some(MonitorVerdict::Drop),
            })
        );
        let bare = decode_request(br#"{"v":1,"op":"monitor"}"#).unwrap();
        assert_eq!(bare.op, Op::Monitor(MonitorFilter::default()));
        let again = encode(&Request::new(request.op.clone()));
        assert_eq!(decode_request(&again[..again.len() - 1]).unwrap(), request);

        let out = MonitorLine::event(event(MonitorVerdict::Drop, "x/a"));
        let text = encode(&out);
        let value: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(value["v"], 1);
        assert_eq!(value["event"]["verdict"], "drop");
        assert_eq!(value["event"]["policy"], "x/deny-all");
        assert!(value["event"].get("original_dst").is_none());
        let back: MonitorLine = serde_json::from_slice(&text).unwrap();
        assert_eq!(back, out);
        let dropped: MonitorLine =
            serde_json::from_slice(&encode(&MonitorLine::dropped(3))).unwrap();
        assert_eq!(dropped.body, MonitorBody::Dropped(3));
    }
}
