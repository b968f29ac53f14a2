//! Socket-level LB: each node's agent attaches its cgroup programs
//! (connect4, sendmsg4, recvmsg4, getpeername4) to a cgroup this test
//! created for the node (`--cgroup`, never the root). A process in that
//! cgroup, in the node's host netns, reaches a ClusterIP although the node
//! has no route to it (no default route in this lab): only a translation
//! at connect/sendmsg time gets there. Its socket still shows the VIP:
//! getpeername for TCP and connected UDP, the source address of
//! recvfrom for unconnected UDP. The same process outside the cgroup gets
//! "network unreachable".
#![allow(clippy::unwrap_used)]

mod svc_support;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::time::Duration;

use serde_json::json;
use svc_support::*;
use weir_lab::cluster::{Cluster, PodSpec, Reply};
use weir_lab::{Node, Proto};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 6, 10);
const CHILD_ENV: &str = "WEIR_SVC_SOCKET_LB_CHILD";

/// Runs the child helper of `mode` in `node`'s netns, inside the node's
/// test cgroup when `in_cgroup`; returns its `key=value` lines.
fn child(cluster: &Cluster, node: usize, mode: &str, in_cgroup: bool) -> Vec<(String, String)> {
    let n: &Node = cluster.node(node);
    let mut cmd = n.netns().command(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_helper",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, mode);
    if in_cgroup {
        let procs: OwnedFd = File::options()
            .write(true)
            .open(cluster.cgroup(node).unwrap().procs_file())
            .unwrap()
            .into();
        // SAFETY: runs in the forked child before exec; it formats the pid
        // into a stack buffer and calls getpid(2) and write(2), both
        // async-signal-safe, allocating nothing.
        unsafe {
            cmd.pre_exec(move || {
                let mut buf = [0u8; 12];
                let mut pid = libc::getpid() as u32;
                let mut i = buf.len();
                loop {
                    i -= 1;
                    buf[i] = b'0' + (pid % 10) as u8;
                    pid /= 10;
                    if pid == 0 {
                        break;
                    }
                }
                let len = buf.len() - i;
                if libc::write(procs.as_raw_fd(), buf[i..].as_ptr().cast(), len) != len as isize {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {mode} on node{node} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn values<'a>(lines: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Not a test: the process the tests below run inside a node and its
/// cgroup (it fails when run on its own).
#[test]
#[ignore = "child process of the socket LB test"]
fn child_helper() {
    let mode = std::env::var(CHILD_ENV).expect("only run as the child of the socket LB test");
    // libtest printed "test child_helper ... " without a newline.
    println!();
    let tcp_vip = SocketAddrV4::new(VIP, 80);
    let udp_vip = SocketAddrV4::new(VIP, 53);
    let timeout = Some(Duration::from_secs(2));
    match mode.as_str() {
        "tcp" => {
            for _ in 0..30 {
                match TcpStream::connect_timeout(&tcp_vip.into(), Duration::from_secs(2)) {
                    Ok(mut stream) => {
                        println!("peer={}", stream.peer_addr().unwrap());
                        stream.set_read_timeout(timeout).unwrap();
                        let mut answer = String::new();
                        stream.read_to_string(&mut answer).unwrap();
                        println!("answer={}", answer.trim());
                    }
                    Err(e) => println!("error={e}"),
                }
            }
        }
        "udp" => {
            for _ in 0..30 {
                // Connected: getpeername shows the VIP, recv works.
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_read_timeout(timeout).unwrap();
                match s.connect(udp_vip).and_then(|()| s.send(b"hi")) {
                    Ok(_) => {
                        println!("peer={}", s.peer_addr().unwrap());
                        let mut buf = [0u8; 128];
                        let n = s.recv(&mut buf).unwrap();
                        println!("answer={}", String::from_utf8_lossy(&buf[..n]).trim());
                    }
                    Err(e) => println!("error={e}"),
                }
                // Unconnected: recvfrom names the VIP as the sender.
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_read_timeout(timeout).unwrap();
                match s.send_to(b"hi", udp_vip) {
                    Ok(_) => {
                        let mut buf = [0u8; 128];
                        let (n, from) = s.recv_from(&mut buf).unwrap();
                        println!("from={from}");
                        println!("answer={}", String::from_utf8_lossy(&buf[..n]).trim());
                    }
                    Err(e) => println!("error={e}"),
                }
            }
        }
        other => panic!("unknown mode {other}"),
    }
}

#[test]
fn socket_lb_translates_at_connect_time_and_shows_the_vip() {
    require_root();
    let cluster = Cluster::builder()
        .nodes(2)
        .socket_lb(true)
        .default_routes(false)
        .build()
        .unwrap();
    let spec = |name: &str| {
        PodSpec::new(name)
            .label("app", "sock")
            .port("http", 8080, Proto::Tcp)
            .port("dns", 5353, Proto::Udp)
    };
    let (s1, _a) = cluster.add_backend(1, spec("s1")).unwrap();
    let (s2, _b) = cluster.add_backend(2, spec("s2")).unwrap();
    cluster
        .apply(
            "sock.yaml",
            &[service(
                "sock",
                VIP,
                json!({"selector": {"app": "sock"}, "ports": [
                    port("http", Proto::Tcp, 80, json!("http")),
                    port("dns", Proto::Udp, 53, json!("dns")),
                ]}),
            )],
        )
        .unwrap();
    cluster
        .wait_backends(
            VIP,
            80,
            Proto::Tcp,
            &[
                SocketAddrV4::new(s1.ip(), 8080),
                SocketAddrV4::new(s2.ip(), 8080),
            ],
        )
        .unwrap();
    cluster
        .wait_backends(
            VIP,
            53,
            Proto::Udp,
            &[
                SocketAddrV4::new(s1.ip(), 5353),
                SocketAddrV4::new(s2.ip(), 5353),
            ],
        )
        .unwrap();

    for node in [1, 2] {
        // The kernel picks the source by the route to the backend: the
        // node IP towards another node, the gateway address on a local
        // pod's veth.
        let node_addrs = [cluster.node(node).ip(), cluster.node(node).gateway()];
        // TCP: connect() to the VIP is translated, getpeername shows the VIP.
        let lines = child(&cluster, node, "tcp", true);
        assert!(
            values(&lines, "error").is_empty(),
            "node{node} tcp: {lines:?}"
        );
        let peers = values(&lines, "peer");
        assert_eq!(peers.len(), 30, "node{node}: {lines:?}");
        assert!(
            peers.iter().all(|p| *p == "10.96.6.10:80"),
            "node{node}: {peers:?}"
        );
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for answer in values(&lines, "answer") {
            let reply = Reply::parse(answer).unwrap();
            // The backend sees one of the node's own addresses.
            let client = *reply.client.unwrap().ip();
            assert!(node_addrs.contains(&client), "node{node}: {answer}");
            *counts.entry(reply.backend).or_default() += 1;
        }
        println!("node{node} tcp via socket LB: {counts:?}");
        // 30 uniform draws over two backends: one missing has p = 2^-29.
        assert_eq!(counts.len(), 2, "node{node}: both backends: {counts:?}");

        // UDP, connected and unconnected.
        let lines = child(&cluster, node, "udp", true);
        assert!(
            values(&lines, "error").is_empty(),
            "node{node} udp: {lines:?}"
        );
        let peers = values(&lines, "peer");
        assert_eq!(peers.len(), 30);
        assert!(
            peers.iter().all(|p| *p == "10.96.6.10:53"),
            "node{node}: {peers:?}"
        );
        let froms = values(&lines, "from");
        assert_eq!(froms.len(), 30);
        assert!(
            froms.iter().all(|p| *p == "10.96.6.10:53"),
            "node{node}: recvfrom {froms:?}"
        );
        let backends: std::collections::BTreeSet<String> = values(&lines, "answer")
            .iter()
            .map(|a| Reply::parse(a).unwrap().backend)
            .collect();
        assert_eq!(
            backends.len(),
            2,
            "node{node} udp: both backends: {backends:?}"
        );

        // Outside the cgroup nothing translates, and there is no route.
        let lines = child(&cluster, node, "tcp", false);
        let errors = values(&lines, "error");
        assert_eq!(errors.len(), 30, "node{node}, no cgroup: {lines:?}");
        assert!(
            errors.iter().all(|e| e.contains("unreachable")),
            "node{node}, no cgroup: {errors:?}"
        );
    }
    // The root cgroup is untouched: the programs sit on our cgroups only.
    let root = weir_lab::cluster::cgroup::cgroup2_root().unwrap();
    let out = std::process::Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(&root)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("weir_sock"),
        "weir programs on the root cgroup: {text}"
    );
    let out = std::process::Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(cluster.cgroup(1).unwrap().path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for program in [
        "weir_sock_connect4",
        "weir_sock_sendmsg4",
        "weir_sock_recvmsg4",
        "weir_sock_getpeername4",
    ] {
        assert!(
            text.contains(program),
            "{program} on node1's cgroup: {text}"
        );
    }
}
