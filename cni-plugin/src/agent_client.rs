//! The seam to `weir-agent`. With `agentSocket` set, ADD registers the pod
//! with the agent and returns only once the agent answers that the pod's
//! datapath state is programmed; DEL and GC deregister. Without it the
//! plugin wires and addresses pods on its own ([`NoAgent`]), as a plain
//! CNI plugin does.
//!
//! The protocol (docs/agent-socket.md): one JSON request line, one JSON
//! response line, on the unix socket `agentSocket`.
//!
//! Failure policy:
//! - register: an unreachable agent, a timeout or an error answer is CNI
//!   code 11 ("try again later"); ADD's rollback then removes the link
//!   and the addresses.
//! - deregister: best effort. DEL must stay idempotent and must succeed
//!   while the agent is down (the agent drops records of vanished links
//!   when it starts), so failures are only logged to stderr.

use std::io::{self, BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{CniError, ErrorCode};

/// How long the plugin waits for the agent (connect, send, answer). The
/// agent answers a registration within one sync, normally milliseconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the agent needs to know about a wired pod (DESIGN.md,
/// "Endpoints").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEndpoint<'a> {
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub host_ifname: &'a str,
    pub host_ifindex: u32,
    pub ips: Vec<Ipv4Addr>,
    /// MAC of `ifname` inside the pod (`aa:bb:cc:dd:ee:ff`), if known.
    pub mac: Option<&'a str>,
    /// MAC of the host-side veth, if known.
    pub host_mac: Option<&'a str>,
    pub pod_namespace: &'a str,
    pub pod_name: &'a str,
}

pub trait AgentClient {
    /// Called by ADD once the pod is wired; an error rolls the ADD back.
    fn register(&self, endpoint: &PodEndpoint<'_>) -> Result<(), CniError>;
    /// Called by DEL and GC; must succeed for unknown attachments.
    fn deregister(&self, container_id: &str, ifname: &str) -> Result<(), CniError>;
}

/// No agent to tell: every call succeeds without doing anything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAgent;

impl AgentClient for NoAgent {
    fn register(&self, _endpoint: &PodEndpoint<'_>) -> Result<(), CniError> {
        Ok(())
    }
    fn deregister(&self, _container_id: &str, _ifname: &str) -> Result<(), CniError> {
        Ok(())
    }
}

/// The client for a config's `agentSocket`, or [`NoAgent`] without one.
pub fn for_socket(agent_socket: Option<&Path>) -> Box<dyn AgentClient> {
    match agent_socket {
        Some(path) => Box::new(SocketAgent::new(path)),
        None => Box::new(NoAgent),
    }
}

// --- wire format (mirrors weir_agent::registry::protocol, version 1) ----

const VERSION: u32 = 1;

#[derive(Serialize)]
struct WireEndpoint<'a> {
    container_id: &'a str,
    netns: &'a str,
    ifname: &'a str,
    host_ifindex: u32,
    host_ifname: &'a str,
    ips: &'a [Ipv4Addr],
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_mac: Option<&'a str>,
    pod_namespace: &'a str,
    pod_name: &'a str,
}

#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum WireOp<'a> {
    Register {
        endpoint: WireEndpoint<'a>,
    },
    Deregister {
        container_id: &'a str,
        ifname: &'a str,
    },
}

#[derive(Serialize)]
struct WireRequest<'a> {
    v: u32,
    #[serde(flatten)]
    op: WireOp<'a>,
}

#[derive(Deserialize)]
struct WireError {
    code: String,
    message: String,
}

#[derive(Deserialize)]
struct WireResponse {
    ok: bool,
    #[serde(default)]
    error: Option<WireError>,
}

fn register_line(endpoint: &PodEndpoint<'_>) -> Vec<u8> {
    encode(&WireRequest {
        v: VERSION,
        op: WireOp::Register {
            endpoint: WireEndpoint {
                container_id: endpoint.container_id,
                netns: endpoint.netns,
                ifname: endpoint.ifname,
                host_ifindex: endpoint.host_ifindex,
                host_ifname: endpoint.host_ifname,
                ips: &endpoint.ips,
                mac: endpoint.mac,
                host_mac: endpoint.host_mac,
                pod_namespace: endpoint.pod_namespace,
                pod_name: endpoint.pod_name,
            },
        },
    })
}

fn deregister_line(container_id: &str, ifname: &str) -> Vec<u8> {
    encode(&WireRequest {
        v: VERSION,
        op: WireOp::Deregister {
            container_id,
            ifname,
        },
    })
}

fn encode(request: &WireRequest<'_>) -> Vec<u8> {
    // Strings, numbers and addresses always serialize.
    let mut line = serde_json::to_vec(request).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Why an exchange with the agent failed.
#[derive(Debug)]
enum ExchangeError {
    /// Could not connect, send or read (agent down, socket missing, timeout).
    Unreachable(String),
    /// The agent answered with an error.
    Refused { code: String, message: String },
}

/// Talks to the agent on its unix socket.
#[derive(Debug, Clone)]
pub struct SocketAgent {
    path: PathBuf,
    timeout: Duration,
}

impl SocketAgent {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn exchange(&self, line: &[u8]) -> Result<(), ExchangeError> {
        let deadline = Instant::now() + self.timeout;
        let unreachable = |what: &str, e: io::Error| {
            ExchangeError::Unreachable(format!(
                "weir-agent at {} is unreachable ({what}: {e})",
                self.path.display()
            ))
        };
        let stream = connect(&self.path, self.timeout).map_err(|e| unreachable("connect", e))?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        stream
            .set_write_timeout(Some(left))
            .and_then(|()| stream.set_read_timeout(Some(left)))
            .map_err(|e| unreachable("socket options", e))?;
        (&stream)
            .write_all(line)
            .map_err(|e| unreachable("send", e))?;
        let mut answer = String::new();
        BufReader::new(&stream)
            .read_line(&mut answer)
            .map_err(|e| unreachable("waiting for the answer", e))?;
        if answer.is_empty() {
            return Err(ExchangeError::Unreachable(format!(
                "weir-agent at {} closed the connection without an answer",
                self.path.display()
            )));
        }
        let response: WireResponse =
            serde_json::from_str(&answer).map_err(|e| ExchangeError::Refused {
                code: "bad_response".into(),
                message: format!("unreadable answer {:?}: {e}", answer.trim_end()),
            })?;
        if response.ok {
            return Ok(());
        }
        let (code, message) = response
            .error
            .map(|e| (e.code, e.message))
            .unwrap_or_else(|| ("unknown".into(), "no reason given".into()));
        Err(ExchangeError::Refused { code, message })
    }
}

/// Connects within `timeout`. A unix connect normally fails or succeeds at
/// once; it blocks only while the agent's accept queue is full, so a
/// helper thread bounds that wait (the plugin exits soon after anyway).
fn connect(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let (tx, rx) = mpsc::channel();
    let target = path.to_path_buf();
    std::thread::Builder::new()
        .name("agent-connect".into())
        .spawn(move || {
            let _ = tx.send(UnixStream::connect(&target));
        })?;
    rx.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection within {timeout:?}"),
        ))
    })
}

impl AgentClient for SocketAgent {
    fn register(&self, endpoint: &PodEndpoint<'_>) -> Result<(), CniError> {
        self.exchange(&register_line(endpoint)).map_err(|e| {
            let msg = match e {
                ExchangeError::Unreachable(why) => why,
                ExchangeError::Refused { code, message } => {
                    format!(
                        "weir-agent refused to register pod {}/{}: {code}: {message}",
                        endpoint.pod_namespace, endpoint.pod_name
                    )
                }
            };
            CniError::new(ErrorCode::TryAgainLater, msg)
        })
    }

    fn deregister(&self, container_id: &str, ifname: &str) -> Result<(), CniError> {
        if let Err(e) = self.exchange(&deregister_line(container_id, ifname)) {
            let why = match e {
                ExchangeError::Unreachable(why) => why,
                ExchangeError::Refused { code, message } => format!("{code}: {message}"),
            };
            eprintln!(
                "weir-cni: deregistering {container_id}/{ifname} from the agent failed (ignored, DEL stays idempotent): {why}"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::net::UnixListener;
    use std::thread::JoinHandle;

    use super::*;

    /// The register example of docs/agent-socket.md; the agent's protocol
    /// tests decode the same line.
    const REGISTER_LINE: &str = r#"{"v":1,"op":"register","endpoint":{"container_id":"c0ffee","netns":"/var/run/netns/cni-1","ifname":"eth0","host_ifindex":7,"host_ifname":"weir5f1c2a9b","ips":["10.244.1.5"],"mac":"0a:58:0a:f4:01:05","host_mac":"ee:ee:ee:ee:ee:01","pod_namespace":"default","pod_name":"web-0"}}"#;

    fn endpoint() -> PodEndpoint<'static> {
        PodEndpoint {
            container_id: "c0ffee",
            netns: "/var/run/netns/cni-1",
            ifname: "eth0",
            host_ifname: "weir5f1c2a9b",
            host_ifindex: 7,
            ips: vec![Ipv4Addr::new(10, 244, 1, 5)],
            mac: Some("0a:58:0a:f4:01:05"),
            host_mac: Some("ee:ee:ee:ee:ee:01"),
            pod_namespace: "default",
            pod_name: "web-0",
        }
    }

    #[test]
    fn request_lines_match_the_documented_protocol() {
        assert_eq!(
            String::from_utf8(register_line(&endpoint())).unwrap(),
            format!("{REGISTER_LINE}\n")
        );
        assert_eq!(
            String::from_utf8(deregister_line("c0ffee", "eth0")).unwrap(),
            "{\"v\":1,\"op\":\"deregister\",\"container_id\":\"c0ffee\",\"ifname\":\"eth0\"}\n"
        );
    }

    /// A one-connection fake agent answering `answer` (None: hang up
    /// without answering; Some(""): read and never answer).
    fn fake_agent(dir: &Path, answer: Option<&'static str>) -> (PathBuf, JoinHandle<String>) {
        let path = dir.join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut request = String::new();
            BufReader::new(&stream).read_line(&mut request).unwrap();
            match answer {
                Some("") => std::thread::sleep(Duration::from_millis(500)),
                Some(line) => (&stream).write_all(line.as_bytes()).unwrap(),
                None => {}
            }
            request
        });
        (path, handle)
    }

    #[test]
    fn register_succeeds_on_ok() {
        let dir = tempfile::tempdir().unwrap();
        let (path, agent) = fake_agent(dir.path(), Some("{\"v\":1,\"ok\":true}\n"));
        SocketAgent::new(&path).register(&endpoint()).unwrap();
        assert_eq!(agent.join().unwrap(), format!("{REGISTER_LINE}\n"));
    }

    #[test]
    fn register_failures_are_try_again_later() {
        let dir = tempfile::tempdir().unwrap();
        let (path, agent) = fake_agent(
            dir.path(),
            Some(
                "{\"v\":1,\"ok\":false,\"error\":{\"code\":\"link_mismatch\",\"message\":\"index 7 is lo\"}}\n",
            ),
        );
        let err = SocketAgent::new(&path).register(&endpoint()).unwrap_err();
        assert_eq!(err.code, ErrorCode::TryAgainLater);
        assert!(
            err.msg.contains("link_mismatch: index 7 is lo"),
            "{}",
            err.msg
        );
        agent.join().unwrap();

        let missing = SocketAgent::new(dir.path().join("nobody.sock"))
            .register(&endpoint())
            .unwrap_err();
        assert_eq!(missing.code, ErrorCode::TryAgainLater);
        assert!(missing.msg.contains("unreachable"), "{}", missing.msg);

        let dir = tempfile::tempdir().unwrap();
        let (path, agent) = fake_agent(dir.path(), None);
        let hung_up = SocketAgent::new(&path).register(&endpoint()).unwrap_err();
        assert_eq!(hung_up.code, ErrorCode::TryAgainLater);
        assert!(hung_up.msg.contains("without an answer"), "{}", hung_up.msg);
        agent.join().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let (path, agent) = fake_agent(dir.path(), Some(""));
        let slow = SocketAgent::new(&path)
            .with_timeout(Duration::from_millis(100))
            .register(&endpoint())
            .unwrap_err();
        assert_eq!(slow.code, ErrorCode::TryAgainLater);
        assert!(slow.msg.contains("waiting for the answer"), "{}", slow.msg);
        agent.join().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let (path, agent) = fake_agent(dir.path(), Some("garbage\n"));
        let garbled = SocketAgent::new(&path).register(&endpoint()).unwrap_err();
        assert_eq!(garbled.code, ErrorCode::TryAgainLater);
        assert!(garbled.msg.contains("bad_response"), "{}", garbled.msg);
        agent.join().unwrap();
    }

    #[test]
    fn deregister_is_best_effort() {
        let dir = tempfile::tempdir().unwrap();
        SocketAgent::new(dir.path().join("nobody.sock"))
            .deregister("c", "eth0")
            .unwrap();
        let (path, agent) = fake_agent(
            dir.path(),
            Some(
                "{\"v\":1,\"ok\":false,\"error\":{\"code\":\"state_store\",\"message\":\"disk\"}}\n",
            ),
        );
        SocketAgent::new(&path).deregister("c", "eth0").unwrap();
        assert!(agent.join().unwrap().contains("\"op\":\"deregister\""));
    }

    #[test]
    fn no_socket_means_no_agent() {
        for_socket(None).register(&endpoint()).unwrap();
        for_socket(None).deregister("c", "eth0").unwrap();
    }
}
