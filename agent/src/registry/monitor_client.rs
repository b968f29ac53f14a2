//! The client side of the `monitor` op (what `weirctl monitor` runs):
//! connect, subscribe, and hand each streamed line to the caller until the
//! agent closes the stream.

use std::path::Path;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::monitor::{MonitorBody, MonitorFilter, MonitorLine};
use super::protocol::{MAX_LINE, Op, Request, Response, encode};

/// Subscribes on the agent socket at `socket` and calls `each` for every
/// streamed line. Returns when the agent ends the stream (it stopped).
pub async fn stream(
    socket: &Path,
    filter: MonitorFilter,
    mut each: impl FnMut(MonitorBody),
) -> anyhow::Result<()> {
    let stream = UnixStream::connect(socket).await.with_context(|| {
        format!(
            "cannot reach the agent at {} (is weir-agent running? --socket names another path)",
            socket.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    write
        .write_all(&encode(&Request::new(Op::Monitor(filter))))
        .await
        .with_context(|| format!("sending the monitor request to {}", socket.display()))?;
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    let n = reader
        .read_line(&mut line)
        .await
        .with_context(|| format!("reading the agent's answer on {}", socket.display()))?;
    if n == 0 {
        anyhow::bail!(
            "the agent at {} closed the connection without answering",
            socket.display()
        );
    }
    let answer: Response = serde_json::from_str(&line)
        .with_context(|| format!("the agent's answer is not a response: {}", line.trim()))?;
    if !answer.ok {
        let reason = answer
            .error
            .map_or_else(|| "no reason given".to_string(), |e| e.message);
        anyhow::bail!("the agent refused the monitor request: {reason}");
    }
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .await
            .context("reading the event stream")?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            anyhow::bail!("an event line longer than {MAX_LINE} bytes");
        }
        // Lines of a newer agent this client does not know are skipped.
        if let Ok(parsed) = serde_json::from_str::<MonitorLine>(&line) {
            each(parsed.body);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use tokio::sync::{mpsc, watch};

    use super::*;
    use crate::registry::hub::MonitorHub;
    use crate::registry::monitor::MonitorVerdict;
    use crate::registry::monitor::tests::event;
    use crate::registry::server;

    #[tokio::test]
    async fn streams_until_the_agent_stops_and_names_a_missing_agent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let err = stream(&path, MonitorFilter::default(), |_| {})
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains(&path.display().to_string()), "{text}");

        let listener = server::bind(&path).await.unwrap();
        let (tx, _requests) = mpsc::channel(4);
        let (stop, stop_rx) = watch::channel(false);
        let hub = MonitorHub::new(16);
        let task = tokio::spawn(server::serve(
            listener,
            path.clone(),
            tx,
            Some(hub.clone()),
            stop_rx,
        ));
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let filter = MonitorFilter {
            pod: None,
            verdict: Some(MonitorVerdict::Drop),
        };
        let client = tokio::spawn({
            let path = path.clone();
            async move {
                stream(&path, filter, move |body| {
                    let _ = seen_tx.send(body);
                })
                .await
            }
        });
        for _ in 0..400 {
            if hub.subscribers() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        hub.publish(event(MonitorVerdict::Allow, "x/a"));
        hub.publish(event(MonitorVerdict::Drop, "x/b"));
        let got = tokio::time::timeout(Duration::from_secs(10), seen.recv())
            .await
            .unwrap()
            .unwrap();
        let MonitorBody::Event(e) = got else {
            panic!("{got:?}")
        };
        assert_eq!(e.pod.as_deref(), Some("x/b"), "the allow was filtered out");
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), client)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        task.await.unwrap();

        // A bad filter is refused with the reason.
        let listener = server::bind(&path).await.unwrap();
        let (tx, _requests) = mpsc::channel(4);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(server::serve(
            listener,
            path.clone(),
            tx,
            Some(hub),
            stop_rx,
        ));
        let bad = MonitorFilter {
            pod: Some("no-slash".into()),
            verdict: None,
        };
        let err = stream(&path, bad, |_| {}).await.unwrap_err();
        assert!(format!("{err:#}").contains("NAMESPACE/NAME"), "{err:#}");
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}
