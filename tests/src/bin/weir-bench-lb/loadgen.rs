//! The workloads of part b, run inside pod namespaces:
//!
//! * `serve`: a backend answering each connection's one request line with its name, then
//!   closing (the server closes first, as an HTTP/1.0 server does).
//! * `loadgen`: a closed-loop client; `concurrency` workers each open a new connection, send one
//!   request line, read the answer to EOF and close, over and over for a fixed time. It prints
//!   one JSON line: completed connections per second, latency percentiles (connect to EOF), and
//!   how many answers came from each backend.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::stats;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeOptions {
    /// TCP port to listen on.
    #[arg(long)]
    port: u16,
    /// The name to answer with.
    #[arg(long)]
    name: String,
    /// Accepting threads (each serves its connections one after the other).
    #[arg(long, default_value_t = 4)]
    threads: u32,
}

pub fn serve(options: &ServeOptions) -> Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", options.port))
        .with_context(|| format!("binding TCP port {}", options.port))?;
    let answer = format!("{}\n", options.name).into_bytes();
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready")
        .and_then(|()| stdout.flush())
        .context("writing ready")?;
    std::thread::scope(|scope| {
        for _ in 0..options.threads.max(1) {
            scope.spawn(|| {
                loop {
                    match listener.accept() {
                        Ok((stream, _)) => answer_one(stream, &answer),
                        // EMFILE and friends: back off instead of spinning.
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
    });
    Ok(())
}

/// Reads the request line, answers, closes. Errors only mean a client went away.
fn answer_one(mut stream: TcpStream, answer: &[u8]) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 128];
    let mut seen = 0;
    while seen < buf.len() {
        match stream.read(&mut buf[seen..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                seen += n;
                if buf[..seen].contains(&b'\n') {
                    break;
                }
            }
        }
    }
    let _ = stream.write_all(answer);
}

#[derive(clap::Args, Debug, Clone)]
pub struct LoadOptions {
    /// Where to connect; with several, each connection picks one at random.
    #[arg(long, value_delimiter = ',', required = true)]
    addr: Vec<SocketAddr>,
    /// Measured seconds (after the warm-up).
    #[arg(long)]
    seconds: f64,
    /// Concurrent workers, each with one connection at a time.
    #[arg(long, default_value_t = 4)]
    concurrency: u32,
    /// Unmeasured milliseconds first.
    #[arg(long, default_value_t = 300)]
    warmup_ms: u64,
    /// Connect and read timeout per request.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
}

/// What `loadgen` prints (one JSON line).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoadReport {
    pub connections: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Completed connections per second in the measured window.
    pub rate: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Answers per backend name.
    pub replies: BTreeMap<String, u64>,
    /// Errors by kind.
    pub error_kinds: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Worker {
    latencies_us: Vec<f64>,
    errors: u64,
    replies: BTreeMap<String, u64>,
    error_kinds: BTreeMap<String, u64>,
}

pub fn load(options: &LoadOptions) -> Result<()> {
    if !(options.seconds > 0.0 && options.seconds <= 600.0) {
        bail!("--seconds must be in (0, 600]");
    }
    let timeout = Duration::from_millis(options.timeout_ms.max(1));
    let start = Instant::now();
    let measure_from = start + Duration::from_millis(options.warmup_ms);
    let end = measure_from + Duration::from_secs_f64(options.seconds);
    let workers: Vec<Worker> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..options.concurrency.max(1))
            .map(|_| scope.spawn(|| worker(&options.addr, timeout, measure_from, end)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let measured = end.saturating_duration_since(measure_from).as_secs_f64();
    let mut report = LoadReport {
        seconds: measured,
        ..LoadReport::default()
    };
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.latencies_us);
        report.errors += w.errors;
        for (name, n) in w.replies {
            *report.replies.entry(name).or_default() += n;
        }
        for (kind, n) in w.error_kinds {
            *report.error_kinds.entry(kind).or_default() += n;
        }
    }
    latencies.sort_by(f64::total_cmp);
    report.connections = latencies.len() as u64;
    report.rate = latencies.len() as f64 / measured;
    report.p50_us = stats::percentile_sorted(&latencies, 50.0);
    report.p90_us = stats::percentile_sorted(&latencies, 90.0);
    report.p99_us = stats::percentile_sorted(&latencies, 99.0);
    report.max_us = latencies.last().copied().unwrap_or(f64::NAN);
    println!(
        "{}",
        serde_json::to_string(&report).context("encoding the report")?
    );
    Ok(())
}

fn worker(addrs: &[SocketAddr], timeout: Duration, measure_from: Instant, end: Instant) -> Worker {
    let mut w = Worker::default();
    let mut rng = stats::Rng::seeded();
    loop {
        let began = Instant::now();
        if began >= end {
            return w;
        }
        let Some(addr) = addrs.get(rng.below(addrs.len() as u32) as usize) else {
            return w;
        };
        let outcome = one_request(*addr, timeout);
        let done = Instant::now();
        // Only requests that started and finished inside the window count.
        if began < measure_from || done > end {
            continue;
        }
        match outcome {
            Ok(name) => {
                w.latencies_us
                    .push(done.duration_since(began).as_secs_f64() * 1e6);
                *w.replies.entry(name).or_default() += 1;
            }
            Err(err) => {
                w.errors += 1;
                *w.error_kinds
                    .entry(format!("{:?}", err.kind()))
                    .or_default() += 1;
            }
        }
    }
}

/// Connect, send one line, read the answer to EOF, close; returns the answer's first line.
fn one_request(addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    stream.write_all(b"GET\n")?;
    let mut answer = Vec::with_capacity(64);
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let name = text.lines().next().unwrap_or("").trim().to_string();
    if name.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "empty answer",
        ));
    }
    Ok(name)
}
