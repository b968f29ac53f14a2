//! The pod programs with real traffic between real network stacks: a node
//! (the test thread's own network namespace) with two pods wired like
//! weir-cni does (a /32 on eth0, an on-link gateway on the host veth), the
//! programs attached to the host veths, and the service maps filled through
//! the ABI. Covers what BPF_PROG_TEST_RUN cannot: redirects, the kernel's
//! handling of translated packets, and the clients' view of rejects.
//!
//! Pods are `unshare --net sleep` children, killed on drop, so nothing is
//! left in the machine's namespaces even after a failure.
#![allow(clippy::unwrap_used)]

mod bpf_support;

use std::{
    fs::File,
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::{Child, Command, Stdio},
    time::Duration,
};

use aya::programs::{SchedClassifier, TcAttachType};
use bpf_support::*;
use weir_common::{
    DropReason,
    metrics::Direction,
    programs::{FROM_POD, TO_POD},
};

const GATEWAY: &str = "169.254.1.1";
const VIP: &str = "10.96.0.40";
const IO_TIMEOUT: Duration = Duration::from_secs(5);

struct Pod {
    child: Child,
    ip: &'static str,
    host_if: String,
    netns: File,
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pod {
    /// A pod netns wired to the calling thread's netns (the node).
    fn new(index: u32, ip: &'static str) -> Self {
        let child = Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn unshare");
        let pid = child.id();
        let ours = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let path = format!("/proc/{pid}/ns/net");
        // unshare(1) switches namespaces before it execs sleep.
        for _ in 0..500 {
            if std::fs::read_link(&path)
                .map(|l| l != ours)
                .unwrap_or(false)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let netns = File::open(&path).unwrap();
        let host_if = format!("wp{index}");
        let pod = Self {
            child,
            ip,
            host_if,
            netns,
        };
        let pid_s = pid.to_string();
        bpf_support::ip(&[
            "link",
            "add",
            &pod.host_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &pid_s,
        ]);
        pod.ip(&["link", "set", "lo", "up"]);
        pod.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
        pod.ip(&["link", "set", "eth0", "up"]);
        pod.ip(&["route", "add", GATEWAY, "dev", "eth0", "scope", "link"]);
        pod.ip(&["route", "add", "default", "via", GATEWAY, "dev", "eth0"]);
        bpf_support::ip(&["addr", "add", &format!("{GATEWAY}/32"), "dev", &pod.host_if]);
        bpf_support::ip(&["link", "set", &pod.host_if, "up"]);
        bpf_support::ip(&["route", "add", &format!("{ip}/32"), "dev", &pod.host_if]);
        pod
    }

    fn ip(&self, args: &[&str]) {
        let pid = self.child.id().to_string();
        let status = Command::new("nsenter")
            .args(["-t", &pid, "-n", "ip"])
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "ip {args:?} in pod {}", self.ip);
    }

    fn mac(&self) -> [u8; 6] {
        let pid = self.child.id().to_string();
        let out = Command::new("nsenter")
            .args(["-t", &pid, "-n", "ip", "-o", "link", "show", "dev", "eth0"])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mac = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap();
        parse_mac(mac)
    }

    /// Runs `f` on a thread inside this pod's network namespace.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let netns = self.netns.try_clone().unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
    }
}

/// A node with two pods and the pod programs on both veths;
/// `register_endpoints`: with their MACs, so the datapath delivers to them.
fn node(register_endpoints: bool) -> (Datapath, Pod, Pod) {
    sysctl("net/ipv4/conf/all/forwarding", "1");
    let pod1 = Pod::new(1, "10.244.1.2");
    let pod2 = Pod::new(2, "10.244.1.3");
    let mut dp = Datapath::load();
    for (name, attach) in [
        (FROM_POD, TcAttachType::Ingress),
        (TO_POD, TcAttachType::Egress),
    ] {
        let program: &mut SchedClassifier = dp.ebpf.program_mut(name).unwrap().try_into().unwrap();
        program.load().unwrap();
        for pod in [&pod1, &pod2] {
            program
                .attach(&pod.host_if, attach)
                .unwrap_or_else(|e| panic!("attach {name} to {}: {e:#?}", pod.host_if));
        }
    }
    for pod in [&pod1, &pod2] {
        // Always registered (from-pod drops sources that are not the pod
        // behind the veth); without MACs the stack delivers to the pod.
        let (mac, host_mac) = if register_endpoints {
            (pod.mac(), mac_of(&pod.host_if))
        } else {
            ([0; 6], [0; 6])
        };
        dp.endpoint(pod.ip, ifindex(&pod.host_if), mac, host_mac);
    }
    (dp, pod1, pod2)
}

fn serve_tcp(pod: &Pod, port: u16, answer: &'static str) -> std::thread::JoinHandle<SocketAddr> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = pod.run(move || {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap();
        ready_tx.send(()).unwrap();
        let (mut stream, peer) = listener.accept().unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut hello = [0u8; 5];
        stream.read_exact(&mut hello).unwrap();
        stream.write_all(answer.as_bytes()).unwrap();
        peer
    });
    ready_rx.recv_timeout(IO_TIMEOUT).unwrap();
    server
}

/// Connects to `to`, says hello, returns (what the socket calls its peer,
/// the answer).
/// Sends one UDP query from `pod` to `to` and returns how the answer
/// failed (an ICMP error surfaces as `ConnectionRefused`).
fn udp_query_error(pod: &Pod, to: &'static str) -> ErrorKind {
    pod.run(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        socket.connect(to).unwrap();
        socket.send(b"query").unwrap();
        let mut buf = [0u8; 16];
        socket.recv(&mut buf).unwrap_err().kind()
    })
    .join()
    .unwrap()
}

fn tcp_client(
    pod: &Pod,
    to: &'static str,
) -> std::thread::JoinHandle<std::io::Result<(SocketAddr, String)>> {
    pod.run(move || {
        let mut stream = TcpStream::connect_timeout(&to.parse().unwrap(), IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.write_all(b"hello")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok((stream.peer_addr()?, answer))
    })
}

fn cluster_ip_tcp_round_trip(register_endpoints: bool) {
    in_netns(move || {
        let (mut dp, pod1, pod2) = node(register_endpoints);
        dp.service(
            &Service::new(VIP, 80, TCP, 40).backends(&[Backend::new(1, pod2.ip, 8080).local()]),
        );
        let server = serve_tcp(&pod2, 8080, "pod2");

        let (peer, answer) = tcp_client(&pod1, "10.96.0.40:80").join().unwrap().unwrap();

        assert_eq!(answer, "pod2");
        assert_eq!(peer.to_string(), "10.96.0.40:80");
        let seen = server.join().unwrap();
        assert_eq!(
            seen.ip().to_string(),
            pod1.ip,
            "the backend sees the client"
        );
        assert!(dp.count(Direction::FromPod, DropReason::Forwarded) >= 6);
        assert_eq!(dp.ct().len(), 2);
    });
}

#[test]
fn cluster_ip_tcp_to_a_local_pod_through_redirects() {
    cluster_ip_tcp_round_trip(true);
}

#[test]
fn cluster_ip_tcp_to_a_local_pod_through_the_stack() {
    cluster_ip_tcp_round_trip(false);
}

#[test]
fn a_pod_reaches_itself_through_its_service() {
    in_netns(|| {
        let (mut dp, pod1, _pod2) = node(true);
        dp.service(
            &Service::new(VIP, 80, TCP, 41).backends(&[Backend::new(1, pod1.ip, 8080).local()]),
        );
        let server = serve_tcp(&pod1, 8080, "self");
        let (peer, answer) = tcp_client(&pod1, "10.96.0.40:80").join().unwrap().unwrap();
        assert_eq!(
            (peer.to_string().as_str(), answer.as_str()),
            ("10.96.0.40:80", "self")
        );
        assert_eq!(server.join().unwrap().ip().to_string(), "169.254.42.1");
    });
}

#[test]
fn clients_are_refused_by_a_service_without_backends() {
    in_netns(|| {
        let (mut dp, pod1, _pod2) = node(true);
        dp.service(&Service::new(VIP, 80, TCP, 42));
        dp.service(&Service::new(VIP, 53, UDP, 43));
        let tcp = tcp_client(&pod1, "10.96.0.40:80").join().unwrap();
        assert_eq!(
            tcp.unwrap_err().kind(),
            ErrorKind::ConnectionRefused,
            "TCP RST"
        );
        let udp = udp_query_error(&pod1, "10.96.0.40:53");
        assert_eq!(udp, ErrorKind::ConnectionRefused, "ICMP port unreachable");
        assert_eq!(dp.count(Direction::FromPod, DropReason::NoBackend), 2);
    });
}

#[test]
fn cluster_ip_udp_answers_come_from_the_service() {
    in_netns(|| {
        let (mut dp, pod1, pod2) = node(true);
        dp.service(
            &Service::new(VIP, 53, UDP, 44).backends(&[Backend::new(1, pod2.ip, 5353).local()]),
        );
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let server = pod2.run(move || {
            let socket = UdpSocket::bind("0.0.0.0:5353").unwrap();
            ready_tx.send(()).unwrap();
            socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut buf = [0u8; 16];
            let (n, from) = socket.recv_from(&mut buf).unwrap();
            socket.send_to(&buf[..n], from).unwrap();
            from
        });
        ready_rx.recv_timeout(IO_TIMEOUT).unwrap();
        let (from, answer) = pod1
            .run(|| {
                let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
                socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                socket.send_to(b"query", "10.96.0.40:53").unwrap();
                let mut buf = [0u8; 16];
                let (n, from) = socket.recv_from(&mut buf).unwrap();
                (from, buf[..n].to_vec())
            })
            .join()
            .unwrap();
        assert_eq!(from.to_string(), "10.96.0.40:53");
        assert_eq!(answer, b"query");
        assert_eq!(server.join().unwrap().ip().to_string(), pod1.ip);
    });
}

#[test]
fn a_udp_backend_that_does_not_listen_refuses_through_the_service() {
    in_netns(|| {
        let (mut dp, pod1, pod2) = node(true);
        dp.service(
            &Service::new(VIP, 53, UDP, 45).backends(&[Backend::new(1, pod2.ip, 5353).local()]),
        );
        let err = udp_query_error(&pod1, "10.96.0.40:53");
        assert_eq!(
            err,
            ErrorKind::ConnectionRefused,
            "the backend's port unreachable, translated back"
        );
    });
}
