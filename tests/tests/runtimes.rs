//! Real container runtimes as clients of weir-cni: podman 4.3 with its CNI
//! backend, and containerd 1.6 through `ctr run --cni`.
//!
//! Each test builds a two-node lab, starts lab pods `web` (node 1) and `far`
//! (node 2) with weir-serve, then runs a busybox container through the runtime
//! on node 1, whose CNI network is weir-cni with node 1's config. It checks that
//! the container
//!
//! * has an eth0 address (a /32) in node 1's pod CIDR, with an IPAM file in
//!   node 1's dataDir naming its container id, and a host veth in node 1;
//! * reaches `web` and `far` (busybox `nc`), and `web` reaches it back;
//! * releases everything on removal: the IPAM file and the host veth are gone;
//!
//! and that the machine's own container and CNI directories did not change.
//! See `weir_lab::runtimes` for how the runtimes are isolated.
//!
//! Needs root. Run with `--test-threads=1` (as `cargo xtask test` does).

#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use weir_lab::runtimes::env::new_links;
use weir_lab::runtimes::{Containerd, Footprint, Podman, allocations_of, parse_ip_addr};
use weir_lab::{Lab, Node, Pod, Proto, ServeGuard};

/// Port weir-serve answers on in the lab pods.
const WEB_PORT: u16 = 8080;
/// Port the container answers on (busybox `nc -ll -e /bin/weir-hello`).
const CONTAINER_PORT: u16 = 7000;
/// Name of the container in both runtimes (and what it answers with).
const CONTAINER: &str = "c1";

/// Two lab pods serving on [`WEB_PORT`]: `web` on node 1 and `far` on node 2.
struct Peers {
    web: Pod,
    far: Pod,
    _servers: Vec<ServeGuard>,
}

fn lab_with_peers() -> (Lab, Peers) {
    let lab = Lab::builder().nodes(2).build().unwrap();
    let web = lab.node(1).add_pod("web").unwrap();
    let far = lab.node(2).add_pod("far").unwrap();
    let servers = vec![
        web.serve(&[WEB_PORT]).unwrap(),
        far.serve(&[WEB_PORT]).unwrap(),
    ];
    (
        lab,
        Peers {
            web,
            far,
            _servers: servers,
        },
    )
}

/// Shell that asks a lab pod for its name over TCP: `nc` prints the reply.
fn ask(ip: Ipv4Addr) -> String {
    format!("nc -w 5 {ip} {WEB_PORT} </dev/null")
}

/// Checks the container's address and its IPAM file; returns the address.
fn check_address(node: &Node, ip_output: &str, cni_container_id: &str) -> Ipv4Addr {
    let (ip, prefix) = parse_ip_addr(ip_output)
        .unwrap_or_else(|| panic!("no IPv4 address on the container's eth0: {ip_output:?}"));
    assert!(
        node.pod_cidr().contains(ip),
        "container address {ip} is outside {}'s pod CIDR {}",
        node.name(),
        node.pod_cidr()
    );
    assert_eq!(prefix, 32, "pods get a /32 on eth0 (ptp model)");
    let allocations = allocations_of(node, cni_container_id);
    assert_eq!(
        allocations.len(),
        1,
        "expected one IPAM file for container {cni_container_id} in {}; all: {:?}",
        node.ipam_dir().display(),
        weir_lab::runtimes::allocations(node)
    );
    assert_eq!(allocations[0].ip, ip, "IPAM file and eth0 disagree");
    assert_eq!(allocations[0].ifname, "eth0");
    ip
}

/// The one link that appeared in the node since `links_before`.
fn host_veth(node: &Node, links_before: &[String]) -> String {
    let added = new_links(node, links_before).unwrap();
    assert_eq!(
        added.len(),
        1,
        "expected exactly one new host veth in {}, got {added:?}",
        node.name()
    );
    added[0].clone()
}

/// The lab pod `web` reaches the container's own server (retried briefly: the
/// container starts it in the background).
fn check_reached_from(web: &Pod, ip: Ipv4Addr) {
    let mut last = None;
    for _ in 0..20 {
        let result = web.probe(Proto::Tcp, ip, CONTAINER_PORT).unwrap();
        if result.is_connected() {
            assert_eq!(
                result.reply, CONTAINER,
                "{ip}:{CONTAINER_PORT} answered as someone else"
            );
            return;
        }
        last = Some(result);
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("lab pod web cannot reach the container at {ip}:{CONTAINER_PORT}: {last:?}");
}

fn check_released(node: &Node, cni_container_id: &str, veth: &str) {
    let left = allocations_of(node, cni_container_id);
    assert!(
        left.is_empty(),
        "IPAM file(s) of {cni_container_id} left after removal: {left:?}"
    );
    let links = node.links().unwrap();
    assert!(
        !links.iter().any(|l| l == veth),
        "host veth {veth} left in {} after removal: {links:?}",
        node.name()
    );
}

fn check_footprint(before: &Footprint) {
    let diff = Footprint::take().diff_from(before);
    assert!(
        diff.is_empty(),
        "the machine's own container/CNI directories changed during the test (by the runtime \
         under test, or by another container engine running on this machine):\n{}",
        diff.join("\n")
    );
}

#[test]
fn podman_container_is_networked_by_weir_cni() {
    weir_lab::require_root();
    weir_lab::runtimes::sweep_dead();
    let before = Footprint::take();
    let t0 = Instant::now();
    {
        let (lab, peers) = lab_with_peers();
        let node = lab.node(1);
        let t_lab = t0.elapsed();
        let podman = Podman::new(&lab, node).unwrap();
        let t_setup = t0.elapsed();
        eprintln!("podman {}", podman.version().unwrap());

        let links_before = node.links().unwrap();
        let script = format!("nc -ll -p {CONTAINER_PORT} -e /bin/weir-hello & exec sleep 3600");
        let id = podman
            .run_detached(
                CONTAINER,
                &[("WEIR_NAME", CONTAINER)],
                &["sh", "-c", &script],
            )
            .unwrap();
        let t_run = t0.elapsed();

        let addr = podman
            .exec(&id, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
            .unwrap();
        let ip = check_address(node, &addr.stdout, &id);
        let veth = host_veth(node, &links_before);

        let near = podman
            .exec(&id, &["sh", "-c", &ask(peers.web.ip())])
            .unwrap();
        assert_eq!(
            near.stdout.trim(),
            "web",
            "container -> pod on the same node"
        );
        let far = podman
            .exec(&id, &["sh", "-c", &ask(peers.far.ip())])
            .unwrap();
        assert_eq!(
            far.stdout.trim(),
            "far",
            "container -> pod on the other node"
        );
        check_reached_from(&peers.web, ip);
        let t_traffic = t0.elapsed();

        let rm = podman.remove(&id).unwrap();
        check_released(node, &id, &veth);
        assert!(podman.container_ids().unwrap().is_empty());
        let t_rm = t0.elapsed();

        drop(podman);
        let t_teardown = t0.elapsed();
        eprintln!(
            "podman timings: lab {t_lab:.2?}, podman setup+import {:.2?}, run -d {:.2?}, \
             checks+traffic {:.2?}, rm {:.2?} (rm itself {:.2?}), teardown {:.2?}",
            t_setup - t_lab,
            t_run - t_setup,
            t_traffic - t_run,
            t_rm - t_traffic,
            rm.elapsed,
            t_teardown - t_rm
        );
    }
    check_footprint(&before);
    eprintln!("podman test total {:.2?}", t0.elapsed());
}

#[test]
fn ctr_run_cni_container_is_networked_by_weir_cni() {
    weir_lab::require_root();
    weir_lab::runtimes::sweep_dead();
    let before = Footprint::take();
    let t0 = Instant::now();
    {
        let (lab, peers) = lab_with_peers();
        let node = lab.node(1);
        let t_lab = t0.elapsed();
        let containerd = Containerd::start(&lab, node).unwrap();
        let t_setup = t0.elapsed();
        eprintln!(
            "containerd {} (snapshotter {})",
            containerd.version().unwrap(),
            containerd.snapshotter()
        );

        let links_before = node.links().unwrap();
        // The container reports what it sees, then waits for a line on stdin:
        // meanwhile the test looks at the node and probes it from outside.
        let script = format!(
            "nc -ll -p {CONTAINER_PORT} -e /bin/weir-hello & \
             ip -4 -o addr show dev eth0; \
             echo near=$({}); echo far=$({}); \
             echo READY; read line; echo BYE",
            ask(peers.web.ip()),
            ask(peers.far.ip())
        );
        let mut run = containerd
            .run_interactive(
                CONTAINER,
                &[("WEIR_NAME", CONTAINER)],
                &["sh", "-c", &script],
            )
            .unwrap();
        let lines = run.read_until("READY", Duration::from_secs(60)).unwrap();
        let t_run = t0.elapsed();

        let cni_id = Containerd::cni_container_id(CONTAINER);
        let addr_line = lines
            .iter()
            .find(|l| l.contains("inet "))
            .unwrap_or_else(|| panic!("container printed no address: {lines:?}"));
        let ip = check_address(node, addr_line, &cni_id);
        let veth = host_veth(node, &links_before);
        assert!(
            lines.iter().any(|l| l == "near=web"),
            "container -> pod on the same node: {lines:?}"
        );
        assert!(
            lines.iter().any(|l| l == "far=far"),
            "container -> pod on the other node: {lines:?}"
        );
        check_reached_from(&peers.web, ip);
        let t_traffic = t0.elapsed();

        // The container exits; ctr --rm then sends DEL with CNI_NETNS="".
        run.send_line("done").unwrap();
        let (status, rest) = run.finish(Duration::from_secs(60)).unwrap();
        assert!(
            status.success(),
            "ctr run exited with {status}; output {rest:?}"
        );
        assert!(
            rest.iter().any(|l| l == "BYE"),
            "container output after READY: {rest:?}"
        );
        check_released(node, &cni_id, &veth);
        assert!(containerd.container_ids().unwrap().is_empty());
        let t_rm = t0.elapsed();

        drop(containerd);
        let t_teardown = t0.elapsed();
        eprintln!(
            "containerd timings: lab {t_lab:.2?}, daemon start+import {:.2?}, ctr run to READY {:.2?}, \
             checks+traffic {:.2?}, exit+DEL+rm {:.2?}, teardown {:.2?}",
            t_setup - t_lab,
            t_run - t_setup,
            t_traffic - t_run,
            t_rm - t_traffic,
            t_teardown - t_rm
        );
    }
    check_footprint(&before);
    eprintln!("containerd test total {:.2?}", t0.elapsed());
}
