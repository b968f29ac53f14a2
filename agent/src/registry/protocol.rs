//! The registration protocol on `--state-dir DIR` → `DIR/agent.sock`
//! (docs/agent-socket.md): one JSON object per line each way, a request
//! and then its response, any number of times per connection.
//!
//! Every message carries `"v": 1`. Requests with another version are
//! answered with an `unsupported_version` error (in version 1, so any
//! client can read it). Unknown fields are ignored, so a newer client
//! may add optional ones.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The protocol version this agent speaks.
pub const VERSION: u32 = 1;

/// The longest request line the agent reads; longer ones are refused
/// (a registration is a few hundred bytes).
pub const MAX_LINE: usize = 64 * 1024;

/// A pod's network attachment, as the CNI plugin wired it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`: the pod's netns path.
    pub netns: String,
    /// `CNI_IFNAME`: the interface inside the pod (`eth0`).
    pub ifname: String,
    /// Index of the host-side veth in the node's netns.
    pub host_ifindex: u32,
    /// Name of the host-side veth.
    pub host_ifname: String,
    /// The pod's addresses on `ifname`.
    pub ips: Vec<Ipv4Addr>,
    /// MAC of `ifname` inside the pod, `aa:bb:cc:dd:ee:ff`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// MAC of the host-side veth, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_mac: Option<String>,
    /// `K8S_POD_NAMESPACE` ("" when the runtime sent none).
    #[serde(default)]
    pub pod_namespace: String,
    /// `K8S_POD_NAME` ("" when the runtime sent none).
    #[serde(default)]
    pub pod_name: String,
}

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Program the pod's datapath state; answered once it is in place.
    Register { endpoint: EndpointSpec },
    /// Forget the pod; unknown attachments are fine (DEL is idempotent).
    Deregister {
        container_id: String,
        ifname: String,
    },
    /// Answered with `ok` at once; for liveness checks.
    Ping,
    /// Stream policy verdict events ([`super::monitor`]) until the client
    /// hangs up.
    Monitor(super::monitor::MonitorFilter),
}

/// A request line: `{"v":1,"op":...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    #[serde(flatten)]
    pub op: Op,
}

impl Request {
    pub fn new(op: Op) -> Self {
        Self { v: VERSION, op }
    }
}

/// Machine-readable error kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a request of this version's shape.
    BadRequest,
    /// The request's `v` is not one the agent speaks.
    UnsupportedVersion,
    /// Well-formed but invalid (a bad container id, no address, ...).
    InvalidEndpoint,
    /// The host-side link is missing or has another name or index.
    LinkMismatch,
    /// Writing the endpoint record failed.
    StateStore,
    /// Programming the datapath failed.
    Datapath,
    /// The agent is stopping; try again with the next one.
    ShuttingDown,
    /// Anything else.
    Internal,
}

impl ErrorCode {
    /// The wire name, e.g. `link_mismatch` (also a metrics label).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::UnsupportedVersion => "unsupported_version",
            Self::InvalidEndpoint => "invalid_endpoint",
            Self::LinkMismatch => "link_mismatch",
            Self::StateStore => "state_store",
            Self::Datapath => "datapath",
            Self::ShuttingDown => "shutting_down",
            Self::Internal => "internal",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// A response line: `{"v":1,"ok":true}` or
/// `{"v":1,"ok":false,"error":{"code":...,"message":...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    /// The metrics label of this answer: `ok` or the error code.
    pub fn result_label(&self) -> &'static str {
        match &self.error {
            None if self.ok => "ok",
            None => ErrorCode::Internal.as_str(),
            Some(e) => e.code.as_str(),
        }
    }

    pub fn ok() -> Self {
        Self {
            v: VERSION,
            ok: true,
            error: None,
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            v: VERSION,
            ok: false,
            error: Some(ErrorBody {
                code,
                message: message.into(),
            }),
        }
    }
}

/// Parses one request line. A wrong version is reported as such even when
/// the rest of the line has a shape this version does not know.
pub fn decode_request(line: &[u8]) -> Result<Request, Response> {
    #[derive(Deserialize)]
    struct Versioned {
        v: Option<u32>,
    }
    let versioned: Versioned = serde_json::from_slice(line)
        .map_err(|e| Response::error(ErrorCode::BadRequest, format!("not a JSON request: {e}")))?;
    match versioned.v {
        Some(VERSION) => {}
        Some(other) => {
            return Err(Response::error(
                ErrorCode::UnsupportedVersion,
                format!("protocol version {other} is not supported; this agent speaks {VERSION}"),
            ));
        }
        None => {
            return Err(Response::error(
                ErrorCode::BadRequest,
                "the request has no protocol version \"v\"",
            ));
        }
    }
    serde_json::from_slice(line)
        .map_err(|e| Response::error(ErrorCode::BadRequest, format!("malformed request: {e}")))
}

/// One line of JSON, newline included.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Our message types hold only strings, numbers and addresses, which
    // always serialize; the fallback keeps the peer from hanging anyway.
    let mut line = serde_json::to_vec(message).unwrap_or_else(|_| {
        br#"{"v":1,"ok":false,"error":{"code":"internal","message":"unencodable message"}}"#
            .to_vec()
    });
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The register example of docs/agent-socket.md, byte for byte as the
    /// CNI plugin sends it.
    const REGISTER_LINE: &str = r#"{"v":1,"op":"register","endpoint":{"container_id":"c0ffee","netns":"/var/run/netns/cni-1","ifname":"eth0","host_ifindex":7,"host_ifname":"weir5f1c2a9b","ips":["10.244.1.5"],"mac":"0a:58:0a:f4:01:05","host_mac":"ee:ee:ee:ee:ee:01","pod_namespace":"default","pod_name":"web-0"}}"#;

    fn spec() -> EndpointSpec {
        EndpointSpec {
            container_id: "c0ffee".into(),
            netns: "/var/run/netns/cni-1".into(),
            ifname: "eth0".into(),
            host_ifindex: 7,
            host_ifname: "weir5f1c2a9b".into(),
            ips: vec![Ipv4Addr::new(10, 244, 1, 5)],
            mac: Some("0a:58:0a:f4:01:05".into()),
            host_mac: Some("ee:ee:ee:ee:ee:01".into()),
            pod_namespace: "default".into(),
            pod_name: "web-0".into(),
        }
    }

    #[test]
    fn register_matches_the_documented_line() {
        let request = Request::new(Op::Register { endpoint: spec() });
        let line = encode(&request);
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            format!("{REGISTER_LINE}\n")
        );
        assert_eq!(decode_request(REGISTER_LINE.as_bytes()).unwrap(), request);
    }

    #[test]
    fn deregister_and_ping_round_trip() {
        for op in [
            Op::Deregister {
                container_id: "c0ffee".into(),
                ifname: "eth0".into(),
            },
            Op::Ping,
        ] {
            let request = Request::new(op);
            let line = encode(&request);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(decode_request(&line[..line.len() - 1]).unwrap(), request);
        }
        let line = br#"{"v":1,"op":"deregister","container_id":"x","ifname":"eth0"}"#;
        assert!(matches!(
            decode_request(line).unwrap().op,
            Op::Deregister { .. }
        ));
    }

    #[test]
    fn optional_and_unknown_fields() {
        let line = br#"{"v":1,"op":"register","future":true,"endpoint":{"container_id":"c","netns":"/n","ifname":"eth0","host_ifindex":3,"host_ifname":"weir1","ips":[],"extra":1}}"#;
        let Op::Register { endpoint } = decode_request(line).unwrap().op else {
            panic!("not a register");
        };
        assert_eq!(endpoint.mac, None);
        assert_eq!(endpoint.host_mac, None);
        assert_eq!(endpoint.pod_namespace, "");
        assert_eq!(endpoint.pod_name, "");
    }

    #[test]
    fn bad_requests_get_coded_errors() {
        let code = |line: &[u8]| decode_request(line).unwrap_err().error.unwrap().code;
        assert_eq!(code(b"not json"), ErrorCode::BadRequest);
        assert_eq!(code(b"{\"op\":\"ping\"}"), ErrorCode::BadRequest);
        assert_eq!(code(b"{\"v\":1,\"op\":\"explode\"}"), ErrorCode::BadRequest);
        assert_eq!(
            code(b"{\"v\":1,\"op\":\"register\"}"),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(b"{\"v\":2,\"op\":\"whatever\",\"new\":[1]}"),
            ErrorCode::UnsupportedVersion
        );
        assert_eq!(
            code(br#"{"v":1,"op":"register","endpoint":{"container_id":"c","netns":"/n","ifname":"eth0","host_ifindex":3,"host_ifname":"w","ips":["300.1.1.1"]}}"#),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn code_names_match_the_wire() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::UnsupportedVersion,
            ErrorCode::InvalidEndpoint,
            ErrorCode::LinkMismatch,
            ErrorCode::StateStore,
            ErrorCode::Datapath,
            ErrorCode::ShuttingDown,
            ErrorCode::Internal,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }

    #[test]
    fn responses_encode_as_documented() {
        assert_eq!(encode(&Response::ok()), b"{\"v\":1,\"ok\":true}\n");
        assert_eq!(
            std::str::from_utf8(&encode(&Response::error(ErrorCode::LinkMismatch, "gone")))
                .unwrap(),
            "{\"v\":1,\"ok\":false,\"error\":{\"code\":\"link_mismatch\",\"message\":\"gone\"}}\n"
        );
    }
}
