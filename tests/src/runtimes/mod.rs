//! Real container runtimes as CNI clients of weir-cni: podman 4.3 (CNI
//! backend) and containerd 1.6 (`ctr run --cni`), each on a lab node.
//!
//! The runtime processes (podman, conmon, containerd, ctr) run with their
//! network namespace set to the node's netns, so the plugin they exec runs
//! there too and the host side of each veth lands in the node. Everything else
//! they touch is test-only:
//!
//! * configuration, storage, state, sockets, logs: `<lab dir>/rt-<runtime>/`;
//! * paths the runtimes hard-code (libcni's cache in `/var/lib/cni`, ctr's
//!   `/etc/cni/net.d` and `/opt/cni/bin`, containerd's `/run/containerd/s`,
//!   podman's `/run/netns` files): covered by test dirs inside a private mount
//!   namespace ([`sandbox::MountSandbox`]) that only the runtimes enter;
//! * container cgroups: below one test-named parent ([`cgroup::CgroupParent`]);
//! * the image: a busybox-static rootfs built here ([`image`]), imported with
//!   `podman import` and, as an OCI image layout archive, `ctr images import`.
//!
//! [`footprint::Footprint`] snapshots the machine's own container and CNI
//! directories so a test can prove they did not change.
//!
//! Every external command has a deadline ([`exec`]); dropping [`Podman`] or
//! [`Containerd`] removes the containers, stops the daemon, kills leftovers in
//! the cgroup parent, ends the mount namespace and removes stub mount points.
//! Drop them before the [`crate::Lab`] (declare them after it).

pub mod cgroup;
pub mod containerd;
pub mod env;
pub mod exec;
pub mod footprint;
pub mod image;
pub mod podman;
pub mod sandbox;

pub use containerd::Containerd;
pub use env::{Allocation, RuntimeEnv, allocations, allocations_of, parse_ip_addr};
pub use footprint::Footprint;
pub use podman::Podman;

/// Every machine path a runtime sandbox mounts over (podman's and containerd's).
pub const SANDBOX_TARGETS: &[&str] = &[
    "/var/lib",
    "/run/netns",
    "/etc/cni/net.d",
    "/opt",
    "/run/containerd",
];

/// Removes what crashed runtime tests left: cgroup parents and stub mount
/// points of dead pids. [`RuntimeEnv::new`] runs it too; call it before taking
/// a [`Footprint`], so the sweep is not mistaken for a change.
pub fn sweep_dead() {
    cgroup::sweep_dead();
    sandbox::sweep_dead_stubs(SANDBOX_TARGETS.iter().map(std::path::Path::new));
}
