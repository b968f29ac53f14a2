//! What every runtime test shares: a test directory under the lab's state dir,
//! the image archives, the weir-cni plugin dir and conflist for one node, a
//! cgroup parent and a mount sandbox.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::cgroup::{self, CgroupParent};
use super::exec::LogDir;
use super::image;
use super::sandbox::{Mount, MountSandbox};
use crate::lab::{Lab, NETWORK_NAME, Node};

/// The image both runtimes run.
pub const IMAGE_REF: &str = "localhost/weir-busybox:test";

/// The CNI version the conflists declare. podman 4.3 and containerd 1.6 link
/// libcni 1.1, which speaks up to 1.0.0.
pub const CONFLIST_CNI_VERSION: &str = "1.0.0";

static ENV_COUNTER: AtomicU32 = AtomicU32::new(1);

/// Directories, image and isolation for one runtime on one lab node.
#[derive(Debug)]
pub struct RuntimeEnv {
    node: Node,
    dir: PathBuf,
    logs: LogDir,
    rootfs_tar: PathBuf,
    oci_tar: PathBuf,
    // Drop order matters: the cgroup guard kills leftover containers and conmon
    // before the sandbox (its mount namespace) goes away.
    cgroup: CgroupParent,
    sandbox: MountSandbox,
}

impl RuntimeEnv {
    /// Prepares `<lab dir>/rt-<kind>` for a runtime on `node`. `mounts` lists the
    /// sandbox mounts; build them with [`RuntimeEnv::path_in`] as sources.
    pub fn new(
        lab: &Lab,
        node: &Node,
        kind: &str,
        mounts: impl FnOnce(&Path) -> Vec<Mount>,
    ) -> Result<RuntimeEnv> {
        super::sweep_dead();
        let dir = lab.dir().join(format!("rt-{kind}"));
        if dir.exists() {
            bail!(
                "{} already exists: one {kind} environment per lab",
                dir.display()
            );
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let logs = LogDir::new(&dir.join("logs"))?;
        let (rootfs_tar, oci_tar) = image::write_images(&dir.join("images"), IMAGE_REF)?;
        let cgroup = CgroupParent::new(&format!(
            "{}{}-{}",
            cgroup::PREFIX,
            lab.id(),
            ENV_COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let mounts = mounts(&dir);
        for mount in &mounts {
            if let Mount::Bind { source, .. } = mount {
                std::fs::create_dir_all(source)
                    .with_context(|| format!("creating {}", source.display()))?;
            }
        }
        let sandbox = MountSandbox::start(mounts)?;
        Ok(RuntimeEnv {
            node: node.clone(),
            dir,
            logs,
            rootfs_tar,
            oci_tar,
            cgroup,
            sandbox,
        })
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// `<lab dir>/rt-<kind>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn logs(&self) -> &LogDir {
        &self.logs
    }

    /// The busybox rootfs tar (`podman import`).
    pub fn rootfs_tar(&self) -> &Path {
        &self.rootfs_tar
    }

    /// The OCI image layout archive (`ctr images import`).
    pub fn oci_tar(&self) -> &Path {
        &self.oci_tar
    }

    pub fn cgroup(&self) -> &CgroupParent {
        &self.cgroup
    }

    pub fn sandbox(&self) -> &MountSandbox {
        &self.sandbox
    }

    /// A command running `prog` in the node's netns and the mount sandbox.
    pub fn command(&self, prog: &str) -> std::process::Command {
        self.sandbox.command(self.node.netns(), prog)
    }

    /// Creates `dir` holding `weir-cni` (a symlink to the built binary).
    pub fn install_plugin(&self, dir: &Path) -> Result<PathBuf> {
        let plugin = self.node.cni_plugin()?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let link = dir.join("weir-cni");
        std::os::unix::fs::symlink(&plugin, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), plugin.display()))?;
        Ok(link)
    }

    /// Writes the node's weir network as `<dir>/10-weir.conflist`.
    pub fn write_conflist(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("10-weir.conflist");
        let text = format!("{:#}\n", conflist(&self.node));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// The node's weir-cni config as a conflist, as a runtime reads it from disk:
/// the lab's plugin config (same subnet and IPAM dataDir as the lab's own pods)
/// without `name`/`cniVersion`, which the list carries.
pub fn conflist(node: &Node) -> Value {
    let mut plugin = node.cni_config();
    if let Some(obj) = plugin.as_object_mut() {
        obj.remove("name");
        obj.remove("cniVersion");
    }
    json!({
        "cniVersion": CONFLIST_CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [plugin],
    })
}

/// A path as a TOML basic string (for the runtimes' config files).
pub fn toml_str(path: &Path) -> String {
    let s = path.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// An allocation file in the node's IPAM dir: `<ip>` holding `id\r\nifname`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: Ipv4Addr,
    pub container_id: String,
    pub ifname: String,
}

/// Every allocation file in `node`'s IPAM dir.
pub fn allocations(node: &Node) -> Vec<Allocation> {
    node.allocated_ips()
        .into_iter()
        .filter_map(|ip| {
            let text = std::fs::read_to_string(node.ipam_dir().join(ip.to_string())).ok()?;
            let mut lines = text.split(['\r', '\n']).filter(|l| !l.is_empty());
            Some(Allocation {
                ip,
                container_id: lines.next().unwrap_or_default().to_string(),
                ifname: lines.next().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

/// The allocations held by `container_id`.
pub fn allocations_of(node: &Node, container_id: &str) -> Vec<Allocation> {
    allocations(node)
        .into_iter()
        .filter(|a| a.container_id == container_id)
        .collect()
}

/// Parses `ip -4 -o addr show dev eth0` output into the first IPv4 address
/// and its prefix length.
pub fn parse_ip_addr(output: &str) -> Option<(Ipv4Addr, u8)> {
    let mut words = output.split_whitespace();
    while let Some(word) = words.next() {
        if word == "inet" {
            let (ip, prefix) = words.next()?.split_once('/')?;
            return Some((ip.parse().ok()?, prefix.parse().ok()?));
        }
    }
    None
}

/// Links in `node`'s netns that are not in `before` (the container's host veth).
pub fn new_links(node: &Node, before: &[String]) -> Result<Vec<String>> {
    Ok(node
        .links()?
        .into_iter()
        .filter(|l| !before.contains(l))
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_busybox_ip_addr_output() {
        let out = "2: eth0    inet 10.244.1.5/32 scope global eth0\\       valid_lft forever preferred_lft forever\n";
        assert_eq!(parse_ip_addr(out), Some((Ipv4Addr::new(10, 244, 1, 5), 32)));
        assert_eq!(parse_ip_addr("nothing here"), None);
        assert_eq!(parse_ip_addr("inet garbage"), None);
    }
}
