//! Traffic helpers for service tests, on top of `weir-serve`/`weir-probe`:
//!
//! * [`Server`]: `weir-serve --report-client` (replies `<name> <ip>:<port>`,
//!   so a test sees which backend answered and which source it saw);
//! * [`Reply`] / [`tally`]: reading probe results;
//! * [`EchoServer`] and [`TcpConn`]: long-lived TCP connections (the
//!   `weir-serve` ones end after one reply);
//! * [`tcp_from_port`]: one TCP request from a chosen source port, closed
//!   with a RST, so the same 5-tuple can open again at once (for Maglev);
//! * [`UdpFlow`]: one UDP socket (one source port) sending again and again.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::netns::NetNs;
use crate::workload::{ProbeOutcome, ProbeResult};

/// A running `weir-serve --report-client`; killed on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    name: String,
}

impl Server {
    /// Starts it in `ns` answering as `name` on the given ports, and
    /// returns once every port is bound.
    pub fn start(ns: &NetNs, name: &str, tcp: &[u16], udp: &[u16]) -> Result<Server> {
        let bin = crate::try_bin_path("weir-serve")?;
        let mut cmd = ns.command(&bin);
        cmd.args(["--name", name, "--report-client"]);
        if !tcp.is_empty() {
            cmd.arg("--tcp").arg(join(tcp));
        }
        if !udp.is_empty() {
            cmd.arg("--udp").arg(join(udp));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning weir-serve in {}", ns.name()))?;
        if let Some(stderr) = child.stderr.take() {
            let tag = format!("weir-serve {name}");
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                    eprintln!("[{tag}] {line}");
                }
            });
        }
        let stdout = child.stdout.take();
        let mut server = Server {
            child,
            name: name.to_string(),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(|l| l.ok()));
            for _ in lines {}
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(line)) if line.trim() == "ready" => Ok(server),
            other => {
                server.stop();
                bail!(
                    "weir-serve {name} in {} did not become ready: {other:?}",
                    ns.name()
                )
            }
        }
    }

    /// The name it answers with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Leaves it running after this handle (for a kept demo lab).
    pub fn detach(self) -> u32 {
        let pid = self.child.id();
        std::mem::forget(self);
        pid
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn join(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A backend's answer: `<name>` or `<name> <client ip>:<port>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub backend: String,
    /// The source address the backend saw (with `--report-client`).
    pub client: Option<SocketAddrV4>,
}

impl Reply {
    /// Parses a reply line.
    pub fn parse(line: &str) -> Option<Reply> {
        let mut words = line.split_whitespace();
        let backend = words.next()?.to_string();
        let client = words.next().and_then(|w| w.parse().ok());
        Some(Reply { backend, client })
    }

    /// The reply of a connected probe.
    pub fn of(result: &ProbeResult) -> Option<Reply> {
        result
            .is_connected()
            .then(|| Reply::parse(&result.reply))
            .flatten()
    }
}

/// Key of a probe result in [`tally`]: the backend name, or `<refused>`,
/// `<timeout>`, `<error>`, `<no reply>` (connected without an answer).
pub fn outcome_key(result: &ProbeResult) -> String {
    match result.result {
        ProbeOutcome::Connected => match Reply::of(result) {
            Some(reply) => reply.backend,
            None => "<no reply>".to_string(),
        },
        other => format!("<{other}>"),
    }
}

/// How often each backend (or failure outcome) showed up.
pub fn tally(results: &[ProbeResult]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in results {
        *counts.entry(outcome_key(r)).or_default() += 1;
    }
    counts
}

/// A TCP server in the test process, listening inside a netns: every line
/// a client sends comes back as `<name> <line>`, for as long as the
/// connection lives. Stops on drop.
#[derive(Debug)]
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl EchoServer {
    pub fn start(ns: &NetNs, name: &str, port: u16) -> Result<EchoServer> {
        let listener = ns
            .enter(move || TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))?
            .with_context(|| format!("binding TCP {port} in {}", ns.name()))?;
        listener
            .set_nonblocking(true)
            .context("non-blocking listener")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let name = name.to_string();
        let acceptor = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let flag = flag.clone();
                        let name = name.clone();
                        std::thread::spawn(move || echo(stream, &name, &flag));
                    }
                    Err(err) if err.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(EchoServer {
            stop,
            acceptor: Some(acceptor),
        })
    }
}

fn echo(stream: TcpStream, name: &str, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !stop.load(Ordering::SeqCst) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with('\n') => {
                if writer
                    .write_all(format!("{name} {}", line).as_bytes())
                    .is_err()
                {
                    return;
                }
                line.clear();
            }
            Ok(_) => {}
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.acceptor.take() {
            let _ = handle.join();
        }
    }
}

/// A long-lived TCP connection opened from inside a netns.
#[derive(Debug)]
pub struct TcpConn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    local: SocketAddr,
}

impl TcpConn {
    /// Connects from `ns` to `addr:port`.
    pub fn connect(ns: &NetNs, addr: Ipv4Addr, port: u16) -> Result<TcpConn> {
        let target = SocketAddr::from((addr, port));
        let stream = ns
            .enter(move || TcpStream::connect_timeout(&target, Duration::from_secs(3)))?
            .with_context(|| format!("connecting to {target} from {}", ns.name()))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let local = stream.local_addr()?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(TcpConn {
            writer: stream,
            reader,
            local,
        })
    }

    /// The client's own address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends `msg` as a line and returns the answer line (without newline).
    pub fn exchange(&mut self, msg: &str) -> Result<String> {
        self.writer
            .write_all(format!("{msg}\n").as_bytes())
            .with_context(|| format!("sending {msg:?}"))?;
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .with_context(|| format!("reading the answer to {msg:?}"))?;
        if n == 0 {
            bail!("the connection was closed (answer to {msg:?})");
        }
        Ok(line.trim_end().to_string())
    }
}

/// Outcome of [`tcp_from_port`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortProbe {
    /// The first line of the answer.
    Reply(String),
    Refused,
    Timeout,
    Error(String),
}

/// One TCP request from each of `ports` (source ports, bound with
/// SO_REUSEADDR) inside `ns` to `dst`: connect, read the answer line,
/// close with a RST (SO_LINGER 0) so no side keeps TIME_WAIT and the same
/// tuple can open again. Returns one outcome per port.
pub fn tcp_from_port(
    ns: &NetNs,
    ports: &[u16],
    dst: SocketAddrV4,
    timeout: Duration,
) -> Result<Vec<PortProbe>> {
    let ports = ports.to_vec();
    ns.enter(move || ports.iter().map(|&p| one_tcp(p, dst, timeout)).collect())
}

fn one_tcp(port: u16, dst: SocketAddrV4, timeout: Duration) -> PortProbe {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket, sockopt,
    };
    let fd: OwnedFd = match socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) {
        Ok(fd) => fd,
        Err(e) => return PortProbe::Error(format!("socket: {e}")),
    };
    if let Err(e) = setsockopt(&fd, sockopt::ReuseAddr, &true) {
        return PortProbe::Error(format!("SO_REUSEADDR: {e}"));
    }
    let local = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    if let Err(e) = bind(fd.as_raw_fd(), &local) {
        return PortProbe::Error(format!("bind port {port}: {e}"));
    }
    let stream = TcpStream::from(fd);
    // SO_SNDTIMEO bounds a blocking connect(2) on Linux.
    if let Err(e) = stream.set_write_timeout(Some(timeout)) {
        return PortProbe::Error(format!("SO_SNDTIMEO: {e}"));
    }
    match connect(stream.as_raw_fd(), &SockaddrIn::from(dst)) {
        Ok(()) => {}
        Err(nix::errno::Errno::ECONNREFUSED) => return PortProbe::Refused,
        Err(nix::errno::Errno::EINPROGRESS | nix::errno::Errno::EAGAIN) => {
            return PortProbe::Timeout;
        }
        Err(e) => return PortProbe::Error(format!("connect: {e}")),
    }
    let _ = stream.set_read_timeout(Some(timeout));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    let mut stream_ref = &stream;
    let outcome = loop {
        match stream_ref.read(&mut chunk) {
            Ok(0) => break PortProbe::Reply(first_line(&buf)),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.contains(&b'\n') {
                    break PortProbe::Reply(first_line(&buf));
                }
            }
            Err(e) if buf.is_empty() => break PortProbe::Error(format!("read: {e}")),
            Err(_) => break PortProbe::Reply(first_line(&buf)),
        }
    };
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = setsockopt(&stream, sockopt::Linger, &linger);
    drop(stream);
    outcome
}

fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .next()
        .unwrap_or("")
        .trim_end()
        .to_string()
}

/// A UDP socket in a netns, connected to one destination: the same source
/// port for every datagram, as a long-running UDP client (DNS resolver,
/// syslog) uses it.
#[derive(Debug)]
pub struct UdpFlow {
    socket: UdpSocket,
}

impl UdpFlow {
    pub fn open(ns: &NetNs, dst: SocketAddrV4, timeout: Duration) -> Result<UdpFlow> {
        let socket = ns
            .enter(move || -> std::io::Result<UdpSocket> {
                let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                s.connect(dst)?;
                Ok(s)
            })?
            .with_context(|| format!("UDP socket to {dst} in {}", ns.name()))?;
        socket.set_read_timeout(Some(timeout))?;
        Ok(UdpFlow { socket })
    }

    /// The socket's own address (its fixed source port).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    /// Sends one datagram and waits for one answer: the outcome as
    /// `weir-probe` would name it, and the answer line.
    pub fn request(&self) -> (ProbeOutcome, String) {
        // Drop answers that arrived late for earlier requests.
        let _ = self.socket.set_nonblocking(true);
        let mut buf = [0u8; 512];
        while self.socket.recv(&mut buf).is_ok() {}
        let _ = self.socket.set_nonblocking(false);
        if let Err(e) = self.socket.send(b"ping\n") {
            return (classify(&e), String::new());
        }
        match self.socket.recv(&mut buf) {
            Ok(n) => (ProbeOutcome::Connected, first_line(&buf[..n])),
            Err(e) => (classify(&e), String::new()),
        }
    }
}

fn classify(err: &std::io::Error) -> ProbeOutcome {
    match err.kind() {
        ErrorKind::ConnectionRefused => ProbeOutcome::Refused,
        ErrorKind::WouldBlock | ErrorKind::TimedOut => ProbeOutcome::Timeout,
        _ => ProbeOutcome::Error,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn result(outcome: ProbeOutcome, reply: &str) -> ProbeResult {
        ProbeResult {
            result: outcome,
            reply: reply.to_string(),
            elapsed_ms: 1.0,
            error: None,
        }
    }

    #[test]
    fn parses_replies() {
        let r = Reply::parse("a1 10.244.1.5:40000").unwrap();
        assert_eq!(r.backend, "a1");
        assert_eq!(r.client, Some("10.244.1.5:40000".parse().unwrap()));
        assert_eq!(Reply::parse("b").unwrap().client, None);
        assert_eq!(Reply::parse(""), None);
    }

    #[test]
    fn tallies_backends_and_failures() {
        let results = [
            result(ProbeOutcome::Connected, "a 1.2.3.4:5"),
            result(ProbeOutcome::Connected, "a 1.2.3.4:6"),
            result(ProbeOutcome::Connected, "b"),
            result(ProbeOutcome::Refused, ""),
            result(ProbeOutcome::Connected, ""),
        ];
        let t = tally(&results);
        assert_eq!(t["a"], 2);
        assert_eq!(t["b"], 1);
        assert_eq!(t["<refused>"], 1);
        assert_eq!(t["<no reply>"], 1);
    }
}
