//! `weir-serve`: a tiny agnhost-like server for the lab.
//!
//! Answers every TCP connection and every UDP datagram on the given ports with
//! `<name>\n` (or `<name> <client ip>:<client port>\n` with `--report-client`, to
//! check which source address a backend sees). Prints `ready` on stdout once all
//! sockets are bound, then runs until killed.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Answer TCP connections and UDP datagrams with a name")]
struct Args {
    /// The name to answer with (the pod name).
    #[arg(long)]
    name: String,
    /// TCP ports to listen on, comma-separated.
    #[arg(long, value_delimiter = ',')]
    tcp: Vec<u16>,
    /// UDP ports to listen on, comma-separated.
    #[arg(long, value_delimiter = ',')]
    udp: Vec<u16>,
    /// Append the client's address as the server sees it: `<name> <ip>:<port>`.
    #[arg(long)]
    report_client: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            log(&format!("{err:#}"));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    if args.tcp.is_empty() && args.udp.is_empty() {
        anyhow::bail!("nothing to serve: give --tcp and/or --udp ports");
    }
    // Bind everything first, so `ready` means every port answers.
    let listeners = args
        .tcp
        .iter()
        .map(|&port| {
            TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("binding TCP port {port}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let sockets = args
        .udp
        .iter()
        .map(|&port| {
            UdpSocket::bind(("0.0.0.0", port)).with_context(|| format!("binding UDP port {port}"))
        })
        .collect::<Result<Vec<_>>>()?;

    let mut handles = Vec::new();
    for listener in listeners {
        let name = args.name.clone();
        let report = args.report_client;
        handles.push(thread::spawn(move || serve_tcp(&listener, &name, report)));
    }
    for socket in sockets {
        let name = args.name.clone();
        let report = args.report_client;
        handles.push(thread::spawn(move || serve_udp(&socket, &name, report)));
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready")
        .and_then(|()| stdout.flush())
        .context("writing ready")?;
    for handle in handles {
        let _ = handle.join();
    }
    Ok(())
}

/// Logs to stderr without panicking when stderr is gone (a detached server whose
/// parent exited).
fn log(msg: &str) {
    let _ = writeln!(std::io::stderr(), "weir-serve: {msg}");
}

fn reply(name: &str, peer: SocketAddr, report: bool) -> String {
    if report {
        format!("{name} {peer}\n")
    } else {
        format!("{name}\n")
    }
}

fn serve_tcp(listener: &TcpListener, name: &str, report: bool) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                let text = reply(name, peer, report);
                thread::spawn(move || answer_tcp(stream, &text));
            }
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                log(&format!("accept: {err}"));
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn answer_tcp(mut stream: TcpStream, text: &str) {
    if stream.write_all(text.as_bytes()).is_err() {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    // Drain what the client sends until it closes, so our close is a FIN, not a RST.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

fn serve_udp(socket: &UdpSocket, name: &str, report: bool) {
    let mut buf = [0u8; 2048];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((_, peer)) => {
                let _ = socket.send_to(reply(name, peer, report).as_bytes(), peer);
            }
            Err(err) => {
                // ICMP errors from earlier replies surface here; keep serving.
                if err.kind() != std::io::ErrorKind::ConnectionRefused {
                    log(&format!("udp recv: {err}"));
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}
