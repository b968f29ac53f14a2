//! `weir-probe`: connect once (or `--count` times) and report, one JSON line per
//! attempt: `{"result":"connected|refused|timeout|error","reply":"a","elapsed_ms":0.4}`.
//!
//! TCP: handshake done = connected (then the first reply line is read), RST =
//! refused. UDP: a datagram is sent; a reply = connected, ICMP port unreachable =
//! refused, nothing = timeout. Each attempt uses a fresh socket (new source port).
//! UDP attempts of one run never reuse a source port: UDP has no close, so a
//! reused port would continue the earlier flow's conntrack entry (and its
//! backend) instead of being a new, independent flow.
//! Exit code 0 whatever the outcomes; 2 on bad usage.

use std::collections::HashSet;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "Probe a TCP or UDP port and print the outcome as JSON lines")]
#[command(group(clap::ArgGroup::new("target").required(true).args(["tcp", "udp"])))]
struct Args {
    /// TCP target HOST:PORT.
    #[arg(long)]
    tcp: Option<String>,
    /// UDP target HOST:PORT.
    #[arg(long)]
    udp: Option<String>,
    /// Timeout per attempt in milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Number of attempts.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Pause between attempts in milliseconds.
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
}

#[derive(Serialize)]
struct Report {
    result: &'static str,
    reply: String,
    elapsed_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (is_tcp, target) = match (&args.tcp, &args.udp) {
        (Some(t), None) => (true, t.as_str()),
        (None, Some(u)) => (false, u.as_str()),
        _ => {
            eprintln!("weir-probe: give exactly one of --tcp or --udp");
            return ExitCode::from(2);
        }
    };
    let addr = match target.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(addr)) => addr,
        Ok(None) | Err(_) => {
            eprintln!("weir-probe: {target:?} is not HOST:PORT");
            return ExitCode::from(2);
        }
    };
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let mut udp_ports = HashSet::new();
    for i in 0..args.count {
        if i > 0 && args.interval_ms > 0 {
            std::thread::sleep(Duration::from_millis(args.interval_ms));
        }
        let start = Instant::now();
        let (result, reply, error) = if is_tcp {
            probe_tcp(addr, timeout)
        } else {
            probe_udp(addr, timeout, &mut udp_ports)
        };
        let report = Report {
            result,
            reply,
            elapsed_ms: (start.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            error,
        };
        match serde_json::to_string(&report) {
            Ok(line) => println!("{line}"),
            Err(err) => {
                eprintln!("weir-probe: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

type Outcome = (&'static str, String, Option<String>);

fn classify(err: &std::io::Error) -> Outcome {
    match err.kind() {
        ErrorKind::ConnectionRefused => ("refused", String::new(), None),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => ("timeout", String::new(), None),
        _ => ("error", String::new(), Some(err.to_string())),
    }
}

fn probe_tcp(addr: SocketAddr, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(err) => return classify(&err),
    };
    let left = timeout
        .saturating_sub(start.elapsed())
        .max(Duration::from_millis(1));
    let _ = stream.set_read_timeout(Some(left));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    let mut note = None;
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.contains(&b'\n') || buf.len() > 4096 {
                    break;
                }
            }
            Err(err) => {
                if buf.is_empty() {
                    note = Some(format!("connected, but no reply: {err}"));
                }
                break;
            }
        }
    }
    ("connected", first_line(&buf), note)
}

fn probe_udp(addr: SocketAddr, timeout: Duration, used: &mut HashSet<u16>) -> Outcome {
    let socket = match fresh_udp_socket(addr, used) {
        Ok(s) => s,
        Err(err) => return ("error", String::new(), Some(format!("bind: {err}"))),
    };
    // A connected socket receives ICMP errors for this flow as ECONNREFUSED etc.
    if let Err(err) = socket.connect(addr) {
        return classify(&err);
    }
    if let Err(err) = socket.set_read_timeout(Some(timeout)) {
        return ("error", String::new(), Some(err.to_string()));
    }
    if let Err(err) = socket.send(b"probe\n") {
        return classify(&err);
    }
    let mut buf = [0u8; 2048];
    match socket.recv(&mut buf) {
        Ok(n) => ("connected", first_line(&buf[..n]), None),
        Err(err) => classify(&err),
    }
}

/// Attempts after which a run accepts a source port it used before (the
/// kernel picks ports at random, so a repeat among fresh picks is rare until
/// a run nears the size of the port range).
const PORT_PICKS: usize = 64;

/// A UDP socket bound to a kernel-chosen source port that no earlier attempt
/// of this run used (sockets with used ports stay open while picking, so the
/// kernel cannot hand out the same one again); records the port.
fn fresh_udp_socket(addr: SocketAddr, used: &mut HashSet<u16>) -> std::io::Result<UdpSocket> {
    let local = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let mut rejected = Vec::new();
    loop {
        let socket = UdpSocket::bind(local)?;
        let port = socket.local_addr()?.port();
        if used.insert(port) || rejected.len() >= PORT_PICKS {
            return Ok(socket);
        }
        rejected.push(socket);
    }
}

fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines().next().unwrap_or("").trim_end().to_string()
}
