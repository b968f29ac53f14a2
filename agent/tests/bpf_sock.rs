//! Socket-level LB with real sockets: the cgroup programs are attached to a
//! cgroup this test creates (never the root), a child process of this test
//! binary runs inside it, in the test's own network namespace, and talks to
//! service addresses that have no route there: only a translation at
//! connect/sendmsg time can reach the backends on 127.0.0.1. getpeername
//! and recvfrom must show the service address.
#![allow(clippy::unwrap_used)]

mod bpf_support;

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
};

use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use bpf_support::*;
use weir_common::{DropReason, lb::svc_flags, metrics::Direction, programs};

const CHILD_ENV: &str = "WEIR_SOCK_LB_CHILD";
const TCP_VIP: &str = "10.96.0.30:80";
const UDP_VIP: &str = "10.96.0.30:53";
const EMPTY_VIP: &str = "10.96.0.31:80";

/// The machine's cgroup2 mount, from /proc/self/mountinfo.
fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| PathBuf::from(left.split_whitespace().nth(4).unwrap()))
        })
        .expect("no cgroup2 mount on this machine")
}

/// A cgroup of our own, removed on drop.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn create() -> Self {
        let path = cgroup2_root().join(format!("weir-bpftest-{}-{}", std::process::id(), unique()));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self(path)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.0) {
            eprintln!("cannot remove cgroup {}: {e}", self.0.display());
        }
    }
}

fn attach_all(dp: &mut Datapath, cgroup: &Path) {
    let dir = std::fs::File::open(cgroup).unwrap();
    for name in programs::SOCK {
        let program: &mut CgroupSockAddr = dp.ebpf.program_mut(name).unwrap().try_into().unwrap();
        program
            .load()
            .unwrap_or_else(|e| panic!("load {name}: {e:#?}"));
        program
            .attach(&dir, CgroupAttachMode::Single)
            .unwrap_or_else(|e| panic!("attach {name}: {e:#?}"));
    }
}

/// Runs `mode` of the child helper inside `cgroup` (and the calling
/// thread's network namespace); returns its stdout.
fn child(cgroup: &Path, mode: &str) -> String {
    let procs = cgroup.join("cgroup.procs");
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "child_helper", "--ignored", "--nocapture"])
        .env(CHILD_ENV, mode);
    // SAFETY: the closure only writes a file and allocates nothing shared.
    unsafe {
        command.pre_exec(move || std::fs::write(&procs, std::process::id().to_string()));
    }
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {mode} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn result_line<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in child output:\n{stdout}"))
}

/// Not a test: the child process of the tests below (it fails when run on
/// its own).
#[test]
#[ignore = "child process of the socket LB tests"]
fn child_helper() {
    let mode = std::env::var(CHILD_ENV).expect("only run as the child of a socket LB test");
    match mode.as_str() {
        "tcp" => {
            let mut stream = TcpStream::connect(TCP_VIP).unwrap();
            println!("peer={}", stream.peer_addr().unwrap());
            stream.write_all(b"hi").unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            println!("answer={answer}");
        }
        "udp" => {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            socket.send_to(b"unconnected", UDP_VIP).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = socket.recv_from(&mut buf).unwrap();
            println!("from={from}");
            println!("answer={}", String::from_utf8_lossy(&buf[..n]));
            let connected = UdpSocket::bind("0.0.0.0:0").unwrap();
            connected.connect(UDP_VIP).unwrap();
            connected.send(b"connected").unwrap();
            let n = connected.recv(&mut buf).unwrap();
            println!("connected_peer={}", connected.peer_addr().unwrap());
            println!("connected_answer={}", String::from_utf8_lossy(&buf[..n]));
        }
        "tcp_untranslated" => {
            let err = TcpStream::connect(TCP_VIP).unwrap_err();
            println!("tcp_error={:?}", err.kind());
        }
        "refused" => {
            let err = TcpStream::connect(EMPTY_VIP).unwrap_err();
            println!("tcp_error={:?}", err.kind());
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            let err = socket.send_to(b"x", EMPTY_VIP).unwrap_err();
            println!("udp_error={:?}", err.kind());
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn services(dp: &mut Datapath, tcp_port: u16, udp_port: u16) {
    let vip: SocketAddrV4 = TCP_VIP.parse().unwrap();
    dp.service(
        &Service::new(&vip.ip().to_string(), vip.port(), TCP, 30).backends(&[Backend::new(
            1,
            "127.0.0.1",
            tcp_port,
        )]),
    );
    let vip: SocketAddrV4 = UDP_VIP.parse().unwrap();
    dp.service(
        &Service::new(&vip.ip().to_string(), vip.port(), UDP, 31).backends(&[Backend::new(
            2,
            "127.0.0.1",
            udp_port,
        )]),
    );
    let vip: SocketAddrV4 = EMPTY_VIP.parse().unwrap();
    dp.service(&Service::new(&vip.ip().to_string(), vip.port(), TCP, 32));
    let vip: SocketAddrV4 = EMPTY_VIP.parse().unwrap();
    dp.service(&Service::new(&vip.ip().to_string(), vip.port(), UDP, 33));
}

#[test]
fn tcp_connects_to_the_backend_and_getpeername_shows_the_service() {
    in_netns(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, from) = listener.accept().unwrap();
            let mut hello = [0u8; 2];
            stream.read_exact(&mut hello).unwrap();
            stream.write_all(b"backend").unwrap();
            from
        });
        let cgroup = TestCgroup::create();
        let mut dp = Datapath::load();
        services(&mut dp, port, 1);
        attach_all(&mut dp, &cgroup.0);

        let out = child(&cgroup.0, "tcp");

        assert_eq!(
            result_line(&out, "peer"),
            TCP_VIP,
            "getpeername shows the VIP"
        );
        assert_eq!(result_line(&out, "answer"), "backend");
        let from = server.join().unwrap();
        assert_eq!(from.ip().to_string(), "127.0.0.1");
        assert_eq!(dp.count(Direction::Sock, DropReason::Forwarded), 1);
        assert!(dp.ct().is_empty(), "socket LB needs no conntrack");
    });
}

#[test]
fn udp_datagrams_reach_the_backend_and_come_back_from_the_service() {
    in_netns(|| {
        let server = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = server.local_addr().unwrap().port();
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            for _ in 0..2 {
                let (n, from) = server.recv_from(&mut buf).unwrap();
                let mut answer = b"echo:".to_vec();
                answer.extend_from_slice(&buf[..n]);
                server.send_to(&answer, from).unwrap();
            }
        });
        let cgroup = TestCgroup::create();
        let mut dp = Datapath::load();
        services(&mut dp, 1, port);
        attach_all(&mut dp, &cgroup.0);

        let out = child(&cgroup.0, "udp");

        assert_eq!(result_line(&out, "from"), UDP_VIP, "recvfrom shows the VIP");
        assert_eq!(result_line(&out, "answer"), "echo:unconnected");
        assert_eq!(result_line(&out, "connected_peer"), UDP_VIP);
        assert_eq!(result_line(&out, "connected_answer"), "echo:connected");
        echo.join().unwrap();
        assert_eq!(dp.count(Direction::Sock, DropReason::Forwarded), 2);
    });
}

#[test]
fn a_service_without_backends_refuses_at_connect_and_sendmsg() {
    in_netns(|| {
        let cgroup = TestCgroup::create();
        let mut dp = Datapath::load();
        services(&mut dp, 1, 1);
        attach_all(&mut dp, &cgroup.0);

        let out = child(&cgroup.0, "refused");

        assert_eq!(result_line(&out, "tcp_error"), "ConnectionRefused");
        assert_eq!(result_line(&out, "udp_error"), "ConnectionRefused");
        assert_eq!(dp.count(Direction::Sock, DropReason::NoBackend), 2);
    });
}

#[test]
fn affinity_services_are_left_to_tc() {
    in_netns(|| {
        let cgroup = TestCgroup::create();
        let mut dp = Datapath::load();
        services(&mut dp, 1, 1);
        let vip: SocketAddrV4 = TCP_VIP.parse().unwrap();
        let mut svc = Service::new(&vip.ip().to_string(), vip.port(), TCP, 30)
            .backends(&[Backend::new(1, "127.0.0.1", 1)])
            .flags(svc_flags::CLUSTER_IP | svc_flags::AFFINITY);
        svc.affinity_timeout = 60;
        dp.service(&svc);
        attach_all(&mut dp, &cgroup.0);

        // Untranslated, the VIP has no route in this namespace.
        let out = child(&cgroup.0, "tcp_untranslated");
        assert_eq!(result_line(&out, "tcp_error"), "NetworkUnreachable");
        assert_eq!(dp.count(Direction::Sock, DropReason::Forwarded), 0);
    });
}
