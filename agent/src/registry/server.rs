//! The socket side of registration: accepts connections on
//! `DIR/agent.sock`, reads request lines, hands each one to the main loop
//! and writes back its answer. The main loop decides; this only moves
//! bytes, so it is easy to test with a fake loop.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::hub::{MonitorHub, Next};
use super::monitor::{MonitorFilter, MonitorLine};
use super::protocol::{self, ErrorCode, MAX_LINE, Op, Response};

/// One request for the main loop, with the way to answer it.
#[derive(Debug)]
pub struct Registration {
    pub op: Op,
    pub reply: oneshot::Sender<Response>,
    pub received: Instant,
}

/// A connection idle for this long is closed (a client that connected
/// and hung must not hold a file descriptor forever).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Binds the socket at `path`, replacing a stale one. Fails when another
/// agent answers on it: two agents must never program one node.
pub async fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            anyhow::bail!(
                "another agent is already serving {}; stop it first",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .map_err(|e| anyhow::anyhow!("removing the stale socket {}: {e}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("binding the agent socket {}: {e}", path.display()))?;
    // Registering pods programs the datapath: root only.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| anyhow::anyhow!("restricting {}: {e}", path.display()))?;
    Ok(listener)
}

/// Serves until `stop` turns true, then removes the socket file so
/// clients fail fast (and the CNI plugin answers "try again later").
/// `monitor` requests stream from `hub`; without one they are refused.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    loop_tx: mpsc::Sender<Registration>,
    hub: Option<MonitorHub>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stop) => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let tx = loop_tx.clone();
                let stop = stop.clone();
                let hub = hub.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle_connection(stream, tx, hub, stop).await {
                        debug!(error = %e, "registration connection ended with an error");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "accepting on the agent socket failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    if let Err(e) = std::fs::remove_file(&path)
        && e.kind() != io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %e, "removing the agent socket");
    }
}

async fn handle_connection(
    stream: UnixStream,
    loop_tx: mpsc::Sender<Registration>,
    hub: Option<MonitorHub>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_LINE as u64 + 1);
        let read = tokio::select! {
            read = tokio::time::timeout(IDLE_TIMEOUT, limited.read_until(b'\n', &mut line)) => read,
            () = stopped(&mut stop) => return Ok(()),
        };
        let n = match read {
            Ok(result) => result?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        let complete = line.last() == Some(&b'\n');
        if !complete && line.len() > MAX_LINE {
            let refusal = Response::error(
                ErrorCode::BadRequest,
                format!("request line longer than {MAX_LINE} bytes"),
            );
            write.write_all(&protocol::encode(&refusal)).await?;
            return Ok(());
        }
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        if body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let request = match protocol::decode_request(body) {
            Ok(request) => request,
            Err(refusal) => {
                write.write_all(&protocol::encode(&refusal)).await?;
                if !complete {
                    return Ok(());
                }
                continue;
            }
        };
        if let Op::Monitor(filter) = request.op {
            // The connection is a stream from now on.
            return stream_events(hub.as_ref(), filter, &mut reader, &mut write, &mut stop).await;
        }
        // A client that hangs up while waiting (the CNI plugin timed out
        // and rolled back) drops its answer channel, which tells the loop
        // to undo the registration.
        let response = tokio::select! {
            response = answer(request.op, &loop_tx) => response,
            () = hung_up(&mut reader) => return Ok(()),
        };
        write.write_all(&protocol::encode(&response)).await?;
        if !complete {
            // EOF without a newline: that was the last request.
            return Ok(());
        }
    }
}

/// Resolves when the peer closes its side. Data of a next request stays
/// buffered for the next read.
async fn hung_up<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) {
    match reader.fill_buf().await {
        Ok([]) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// Resolves once `stop` turns true or its sender is gone.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Streams the events `filter` selects until the client hangs up, a
/// write fails, or the agent stops.
async fn stream_events<R: tokio::io::AsyncBufRead + Unpin>(
    hub: Option<&MonitorHub>,
    filter: MonitorFilter,
    reader: &mut R,
    write: &mut OwnedWriteHalf,
    stop: &mut watch::Receiver<bool>,
) -> io::Result<()> {
    let Some(hub) = hub else {
        let refusal = Response::error(ErrorCode::Internal, "this agent has no event stream");
        return write.write_all(&protocol::encode(&refusal)).await;
    };
    let mut subscription = match hub.subscribe(filter.clone()) {
        Ok(subscription) => subscription,
        Err(message) => {
            let refusal = Response::error(ErrorCode::BadRequest, message);
            return write.write_all(&protocol::encode(&refusal)).await;
        }
    };
    write.write_all(&protocol::encode(&Response::ok())).await?;
    info!(pod = ?filter.pod, verdict = ?filter.verdict, "monitor subscriber connected");
    let result = loop {
        let next = tokio::select! {
            next = subscription.next() => next,
            () = hung_up(reader) => break Ok(()),
            () = stopped(stop) => break Ok(()),
        };
        let line = match next {
            Next::Event(event) => MonitorLine::event((*event).clone()),
            Next::Dropped(n) => MonitorLine::dropped(n),
            Next::Closed => break Ok(()),
        };
        if let Err(e) = write.write_all(&protocol::encode(&line)).await {
            break Err(e);
        }
    };
    info!(pod = ?filter.pod, "monitor subscriber left");
    result
}

async fn answer(op: Op, loop_tx: &mpsc::Sender<Registration>) -> Response {
    if op == Op::Ping {
        return Response::ok();
    }
    let (reply, answer) = oneshot::channel();
    let registration = Registration {
        op,
        reply,
        received: Instant::now(),
    };
    if loop_tx.send(registration).await.is_err() {
        return shutting_down();
    }
    answer.await.unwrap_or_else(|_| shutting_down())
}

fn shutting_down() -> Response {
    Response::error(ErrorCode::ShuttingDown, "the agent is shutting down")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::registry::protocol::{Request, encode};

    struct Harness {
        path: PathBuf,
        hub: MonitorHub,
        stop: watch::Sender<bool>,
        requests: mpsc::Receiver<Registration>,
        server: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = bind(&path).await.unwrap();
        let (tx, requests) = mpsc::channel(8);
        let (stop, stop_rx) = watch::channel(false);
        let hub = MonitorHub::new(8);
        let server = tokio::spawn(serve(
            listener,
            path.clone(),
            tx,
            Some(hub.clone()),
            stop_rx,
        ));
        Harness {
            path,
            hub,
            stop,
            requests,
            server,
            _dir: dir,
        }
    }

    async fn exchange(stream: &mut BufReader<UnixStream>, line: &[u8]) -> Response {
        stream.get_mut().write_all(line).await.unwrap();
        let mut answer = String::new();
        stream.read_line(&mut answer).await.unwrap();
        serde_json::from_str(&answer).unwrap()
    }

    #[tokio::test]
    async fn forwards_requests_and_answers_in_order() {
        let mut h = start().await;
        let fake_loop = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(r) = h.requests.recv().await {
                let answer = match &r.op {
                    Op::Deregister { container_id, .. } if container_id == "bad" => {
                        Response::error(ErrorCode::Datapath, "no")
                    }
                    _ => Response::ok(),
                };
                seen.push(r.op.clone());
                r.reply.send(answer).unwrap();
            }
            seen
        });
        let mut client = BufReader::new(UnixStream::connect(&h.path).await.unwrap());
        let ping = exchange(&mut client, &encode(&Request::new(Op::Ping))).await;
        assert!(ping.ok);
        let dereg = |id: &str| {
            encode(&Request::new(Op::Deregister {
                container_id: id.into(),
                ifname: "eth0".into(),
            }))
        };
        assert!(exchange(&mut client, &dereg("good")).await.ok);
        let failed = exchange(&mut client, &dereg("bad")).await;
        assert_eq!(failed.error.unwrap().code, ErrorCode::Datapath);
        let garbage = exchange(&mut client, b"{nope\n").await;
        assert_eq!(garbage.error.unwrap().code, ErrorCode::BadRequest);
        let mut too_long = vec![b' '; MAX_LINE + 10];
        too_long.push(b'\n');
        let refused = exchange(&mut client, &too_long).await;
        assert_eq!(refused.error.unwrap().code, ErrorCode::BadRequest);

        h.stop.send(true).unwrap();
        h.server.await.unwrap();
        assert!(!h.path.exists(), "the socket file goes with the server");
        drop(client);
        let seen = fake_loop.await.unwrap();
        assert_eq!(
            seen.len(),
            2,
            "ping and bad lines never reach the loop: {seen:?}"
        );
    }

    #[tokio::test]
    async fn monitor_streams_filtered_events_until_the_client_leaves() {
        use crate::registry::monitor::tests::event;
        use crate::registry::monitor::{MonitorBody, MonitorVerdict};
        let h = start().await;
        let mut client = BufReader::new(UnixStream::connect(&h.path).await.unwrap());
        let request = br#"{"v":1,"op":"monitor","pod":"x/a","verdict":"drop"}
"#;
        assert!(exchange(&mut client, request).await.ok);
        assert_eq!(
            h.hub.watched_pods().into_iter().collect::<Vec<_>>(),
            [crate::k8s::ObjectName::new("x", "a")]
        );
        h.hub.publish(event(MonitorVerdict::Allow, "x/a"));
        h.hub.publish(event(MonitorVerdict::Drop, "x/b"));
        h.hub.publish(event(MonitorVerdict::Drop, "x/a"));
        let mut line = String::new();
        client.read_line(&mut line).await.unwrap();
        let got: MonitorLine = serde_json::from_str(&line).unwrap();
        let MonitorBody::Event(e) = got.body else {
            panic!("{line}")
        };
        assert_eq!(*e, event(MonitorVerdict::Drop, "x/a"));

        // A slow reader: the hub never waits; the client hears how many it
        // missed (the buffer holds 8).
        for _ in 0..20 {
            h.hub.publish(event(MonitorVerdict::Drop, "x/a"));
        }
        line.clear();
        client.read_line(&mut line).await.unwrap();
        let got: MonitorLine = serde_json::from_str(&line).unwrap();
        assert_eq!(got.body, MonitorBody::Dropped(12), "{line}");

        drop(client);
        for _ in 0..200 {
            if h.hub.subscribers() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            h.hub.subscribers(),
            0,
            "the subscription ends with the client"
        );
        assert!(h.hub.watched_pods().is_empty());

        let mut client = BufReader::new(UnixStream::connect(&h.path).await.unwrap());
        let refused = exchange(
            &mut client,
            b"{\"v\":1,\"op\":\"monitor\",\"pod\":\"nope\"}\n",
        )
        .await;
        assert_eq!(refused.error.unwrap().code, ErrorCode::BadRequest);
        h.stop.send(true).unwrap();
        h.server.await.unwrap();
    }

    #[tokio::test]
    async fn a_client_that_hangs_up_abandons_its_request() {
        let mut h = start().await;
        let mut client = UnixStream::connect(&h.path).await.unwrap();
        let request = encode(&Request::new(Op::Deregister {
            container_id: "c".into(),
            ifname: "eth0".into(),
        }));
        client.write_all(&request).await.unwrap();
        let mut pending = h.requests.recv().await.unwrap();
        assert!(!pending.reply.is_closed());
        drop(client);
        tokio::time::timeout(Duration::from_secs(10), pending.reply.closed())
            .await
            .unwrap();
        h.stop.send(true).unwrap();
    }

    #[tokio::test]
    async fn a_gone_loop_answers_shutting_down() {
        let h = start().await;
        drop(h.requests);
        let mut client = BufReader::new(UnixStream::connect(&h.path).await.unwrap());
        let answer = exchange(
            &mut client,
            &encode(&Request::new(Op::Deregister {
                container_id: "c".into(),
                ifname: "eth0".into(),
            })),
        )
        .await;
        assert_eq!(answer.error.unwrap().code, ErrorCode::ShuttingDown);
        h.stop.send(true).unwrap();
    }

    #[tokio::test]
    async fn refuses_to_steal_a_live_socket_but_replaces_a_stale_one() {
        let h = start().await;
        let err = bind(&h.path).await.unwrap_err();
        assert!(err.to_string().contains("another agent"), "{err}");
        h.stop.send(true).unwrap();
        h.server.await.unwrap();
        // A socket file nobody listens on (an agent killed with -9).
        let stale = std::os::unix::net::UnixListener::bind(&h.path).unwrap();
        drop(stale);
        assert!(h.path.exists());
        let _listener = bind(&h.path).await.unwrap();
    }
}
