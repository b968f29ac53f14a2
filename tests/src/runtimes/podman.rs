//! podman (4.3, CNI backend) driving weir-cni on a lab node, with test-only
//! configuration and storage.
//!
//! Every podman call is
//!
//! ```text
//! CONTAINERS_CONF=<dir>/containers.conf CONTAINERS_STORAGE_CONF=<dir>/storage.conf \
//! CONTAINERS_REGISTRIES_CONF=<dir>/registries.conf TMPDIR=<dir>/tmp \
//! nsenter --net=/run/netns/<node> --mount=/proc/<holder>/ns/mnt -- \
//!   podman --root <dir>/root --runroot <dir>/runroot --tmpdir <dir>/tmp \
//!          --storage-driver vfs --cgroup-manager cgroupfs --events-backend none ...
//! ```
//!
//! containers.conf selects the CNI backend with the test conflist dir and a
//! plugin dir holding only weir-cni, runc (crun fails on this machine's hybrid
//! cgroups) through a wrapper that keeps runc's state in the test dir (podman's
//! cleanup process would otherwise use `/run/runc`), lower default ulimits,
//! file locks in the test dir instead of `/dev/shm`, and no events journal.
//! The mount sandbox hides `/var/lib` (libcni cache, blob-info cache) and
//! `/run/netns` (podman's netns files).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::env::{RuntimeEnv, toml_str};
use super::exec::{self, Outcome};
use super::sandbox::Mount;
use crate::lab::{Lab, NETWORK_NAME, Node};

/// Deadline of one podman command.
pub const PODMAN_TIMEOUT: Duration = Duration::from_secs(90);

/// Where runc is looked for (Debian installs it in /usr/sbin, not always on PATH).
const RUNC_DIRS: &[&str] = &[
    "/usr/sbin",
    "/usr/bin",
    "/usr/local/sbin",
    "/usr/local/bin",
    "/sbin",
    "/bin",
];

/// A podman set up for one lab node; removes its containers on drop.
#[derive(Debug)]
pub struct Podman {
    dir: PathBuf,
    // Declared last: dropped after `Drop for Podman` removed the containers.
    env: RuntimeEnv,
}

impl Podman {
    /// Writes the configuration, starts the mount sandbox and imports the image.
    pub fn new(lab: &Lab, node: &Node) -> Result<Podman> {
        let env = RuntimeEnv::new(lab, node, "podman", |dir| {
            vec![
                Mount::Bind {
                    source: dir.join("varlib"),
                    target: PathBuf::from("/var/lib"),
                },
                Mount::Tmpfs {
                    target: PathBuf::from("/run/netns"),
                },
            ]
        })?;
        let dir = env.dir().join("podman");
        for sub in ["root", "runroot", "tmp", "static", "volumes", "runc"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        let podman = Podman { dir, env };
        podman.env.install_plugin(&podman.plugin_dir())?;
        podman.env.write_conflist(&podman.conf_dir())?;
        podman.write_configs()?;
        podman.import_image()?;
        Ok(podman)
    }

    pub fn env(&self) -> &RuntimeEnv {
        &self.env
    }

    /// The CNI plugin dir podman searches (holds only `weir-cni`).
    pub fn plugin_dir(&self) -> PathBuf {
        self.dir.join("cni-bin")
    }

    /// podman's `network_config_dir` (holds `10-weir.conflist`).
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.join("cni-conf")
    }

    fn containers_conf(&self) -> PathBuf {
        self.dir.join("containers.conf")
    }

    fn storage_conf(&self) -> PathBuf {
        self.dir.join("storage.conf")
    }

    fn registries_conf(&self) -> PathBuf {
        self.dir.join("registries.conf")
    }

    fn runc_wrapper(&self) -> PathBuf {
        self.dir.join("runc-wrapper")
    }

    fn write_configs(&self) -> Result<()> {
        let d = |sub: &str| toml_str(&self.dir.join(sub));
        let containers = format!(
            r#"# weir runtime test: podman with weir-cni, nothing from the machine's defaults
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
log_driver = "k8s-file"

[network]
network_backend = "cni"
network_config_dir = {conf}
cni_plugin_dirs = [{plugins}]
default_network = "{net}"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "none"
lock_type = "file"
tmp_dir = {tmp}
static_dir = {static_dir}
volume_path = {volumes}
image_copy_tmp_dir = {tmp}

[engine.runtimes]
runc = [{wrapper}]
"#,
            conf = toml_str(&self.conf_dir()),
            plugins = toml_str(&self.plugin_dir()),
            net = NETWORK_NAME,
            tmp = d("tmp"),
            static_dir = d("static"),
            volumes = d("volumes"),
            wrapper = toml_str(&self.runc_wrapper()),
        );
        let storage = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = {}\nrunroot = {}\n",
            d("root"),
            d("runroot")
        );
        let runc = find_runc()?;
        let wrapper = format!(
            "#!/bin/sh\n# runc with its state in the test dir, whoever calls it\nexec '{}' --root '{}' \"$@\"\n",
            runc.display(),
            self.dir.join("runc").display()
        );
        write(&self.containers_conf(), &containers)?;
        write(&self.storage_conf(), &storage)?;
        write(
            &self.registries_conf(),
            "unqualified-search-registries = []\n",
        )?;
        write(&self.runc_wrapper(), &wrapper)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.runc_wrapper(), std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", self.runc_wrapper().display()))?;
        Ok(())
    }

    /// A podman command with the test configuration, in the node netns and sandbox.
    pub fn command(&self) -> Command {
        let mut cmd = self.env.command("podman");
        let d = |sub: &str| self.dir.join(sub);
        cmd.env("CONTAINERS_CONF", self.containers_conf())
            .env("CONTAINERS_STORAGE_CONF", self.storage_conf())
            .env("CONTAINERS_REGISTRIES_CONF", self.registries_conf())
            .env("TMPDIR", d("tmp"))
            .arg("--root")
            .arg(d("root"))
            .arg("--runroot")
            .arg(d("runroot"))
            .arg("--tmpdir")
            .arg(d("tmp"))
            .args(["--storage-driver", "vfs"])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "none"]);
        cmd
    }

    /// Runs `podman args...`; an error unless it exits 0.
    pub fn run(&self, args: &[&str]) -> Result<Outcome> {
        let mut cmd = self.command();
        cmd.args(args);
        let label = format!("podman-{}", args.first().copied().unwrap_or(""));
        exec::run(&mut cmd, PODMAN_TIMEOUT, self.env.logs(), &label)?.ok()
    }

    fn import_image(&self) -> Result<()> {
        let tar = self.env.rootfs_tar().display().to_string();
        self.run(&["import", &tar, super::env::IMAGE_REF])
            .context("podman import of the busybox rootfs")?;
        Ok(())
    }

    /// `podman run -d` of `argv` in the image on the weir network; returns the
    /// container id (what podman passes as CNI_CONTAINERID).
    pub fn run_detached(&self, name: &str, env: &[(&str, &str)], argv: &[&str]) -> Result<String> {
        let cgroup_parent = self.env.cgroup().path();
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            name,
            "--network",
            NETWORK_NAME,
            "--cgroup-parent",
            &cgroup_parent,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        for (k, v) in env {
            args.push("--env".to_string());
            args.push(format!("{k}={v}"));
        }
        args.push(super::env::IMAGE_REF.to_string());
        args.extend(argv.iter().map(ToString::to_string));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run(&refs)?;
        let id = out.stdout.trim().to_string();
        if id.len() != 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!("podman run -d printed {:?}, not a container id", out.stdout);
        }
        Ok(id)
    }

    /// `podman exec <id> argv...`.
    pub fn exec(&self, id: &str, argv: &[&str]) -> Result<Outcome> {
        let mut args = vec!["exec", id];
        args.extend_from_slice(argv);
        self.run(&args)
    }

    /// `podman rm -f -t 0 <id>`: stops the container and tears down its network.
    pub fn remove(&self, id: &str) -> Result<Outcome> {
        self.run(&["rm", "-f", "-t", "0", id])
    }

    /// Ids of all containers podman knows.
    pub fn container_ids(&self) -> Result<Vec<String>> {
        let out = self.run(&["ps", "-a", "-q", "--no-trunc"])?;
        Ok(out.stdout.split_whitespace().map(str::to_string).collect())
    }

    /// podman's own version string.
    pub fn version(&self) -> Result<String> {
        Ok(self
            .run(&["version", "--format", "{{.Client.Version}}"])?
            .stdout
            .trim()
            .to_string())
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Removes whatever a failed test left running, with its network.
        match self.run(&["rm", "-a", "-f", "-t", "0"]) {
            Ok(_) => {}
            Err(err) => eprintln!("weir-lab runtimes: podman cleanup: {err:#}"),
        }
    }
}

/// The runc binary (the Debian package `runc`).
fn find_runc() -> Result<PathBuf> {
    RUNC_DIRS
        .iter()
        .map(|dir| Path::new(dir).join("runc"))
        .find(|p| p.is_file())
        .with_context(|| format!("runc not found in {RUNC_DIRS:?}; install Debian's runc"))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
