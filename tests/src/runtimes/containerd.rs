//! containerd (1.6, Debian) with `ctr run --cni` driving weir-cni on a lab node.
//!
//! The test starts its own daemon, in the node's netns and the mount sandbox:
//!
//! ```text
//! nsenter --net=/run/netns/<node> --mount=/proc/<holder>/ns/mnt -- \
//!   containerd --config <dir>/containerd/config.toml
//! ```
//!
//! with root, state, sockets and runc state in the test dir and the CRI plugin
//! disabled. ctr 1.6 reads the *first* conflist in `/etc/cni/net.d` and plugins
//! from `/opt/cni/bin`, both hard-coded; in the sandbox, test dirs are bound
//! over `/etc/cni/net.d` and `/opt`, and `/var/lib` (libcni's cache) too. The
//! shims' sockets go to the hard-coded `/run/containerd/s`, which the sandbox
//! covers with a tmpfs (on a stub directory when the machine has none).
//!
//! `ctr run --cni --rm` does ADD after the task starts and, after it exits, DEL
//! with `CNI_NETNS=""` (the netns died with the task).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::env::{RuntimeEnv, toml_str};
use super::exec::{self, Interactive, Outcome};
use super::sandbox::Mount;
use crate::lab::{Lab, Node};

/// containerd namespace of the test's containers and images.
pub const NAMESPACE: &str = "weirtest";
/// Deadline of one ctr command (not `ctr run`, which is interactive).
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the daemon may take to answer.
pub const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Plugins a ctr-only daemon does not need (CRI would also read the machine's
/// `/etc/cni/net.d`).
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.internal.v1.opt",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
];

/// A test-only containerd daemon on a lab node; stopped (with its containers)
/// on drop.
#[derive(Debug)]
pub struct Containerd {
    dir: PathBuf,
    daemon: Option<Child>,
    snapshotter: &'static str,
    // Declared last: dropped after `Drop for Containerd` stopped the daemon.
    env: RuntimeEnv,
}

impl Containerd {
    /// Prepares the dirs, starts the daemon, picks a snapshotter and imports
    /// the image.
    pub fn start(lab: &Lab, node: &Node) -> Result<Containerd> {
        let env = RuntimeEnv::new(lab, node, "containerd", |dir| {
            vec![
                Mount::Bind {
                    source: dir.join("varlib"),
                    target: PathBuf::from("/var/lib"),
                },
                Mount::Bind {
                    source: dir.join("etc-cni-net.d"),
                    target: PathBuf::from("/etc/cni/net.d"),
                },
                Mount::Bind {
                    source: dir.join("opt"),
                    target: PathBuf::from("/opt"),
                },
                Mount::Tmpfs {
                    target: PathBuf::from("/run/containerd"),
                },
            ]
        })?;
        env.install_plugin(&env.dir().join("opt/cni/bin"))?;
        env.write_conflist(&env.dir().join("etc-cni-net.d"))?;
        let dir = env.dir().join("containerd");
        for sub in ["root", "state", "fifo", "runc", "runc-v1"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        let mut containerd = Containerd {
            dir,
            daemon: None,
            snapshotter: "native",
            env,
        };
        containerd.snapshotter = containerd.pick_snapshotter()?;
        containerd.write_config()?;
        containerd.start_daemon()?;
        containerd.import_image()?;
        Ok(containerd)
    }

    pub fn env(&self) -> &RuntimeEnv {
        &self.env
    }

    /// `overlayfs` when an overlay mounts on the test dir's filesystem, else `native`.
    pub fn snapshotter(&self) -> &'static str {
        self.snapshotter
    }

    /// The daemon's gRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    fn write_config(&self) -> Result<()> {
        let d = |sub: &str| toml_str(&self.dir.join(sub));
        let disabled: Vec<String> = DISABLED_PLUGINS
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect();
        let config = format!(
            r#"# weir runtime test: a ctr-only containerd, nothing from the machine's defaults
version = 2
root = {root}
state = {state}
disabled_plugins = [{disabled}]

[grpc]
  address = {sock}

[ttrpc]
  address = {ttrpc}

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = {runc_v1}
"#,
            root = d("root"),
            state = d("state"),
            disabled = disabled.join(", "),
            sock = toml_str(&self.socket()),
            ttrpc = toml_str(&self.dir.join("containerd.sock.ttrpc")),
            runc_v1 = d("runc-v1"),
        );
        let path = self.config_path();
        std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))
    }

    /// Mounts a throwaway overlay on the test dir's filesystem, inside the
    /// sandbox, to learn whether the overlayfs snapshotter can work here.
    fn pick_snapshotter(&self) -> Result<&'static str> {
        let probe = self.dir.join("overlay-probe");
        for sub in ["lower", "upper", "work", "merged"] {
            let path = probe.join(sub);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            probe.join("lower").display(),
            probe.join("upper").display(),
            probe.join("work").display()
        );
        let merged = probe.join("merged");
        let mut mount = self.env.command("mount");
        mount
            .args(["-n", "-t", "overlay", "overlay", "-o", &options])
            .arg(&merged);
        let mounted = exec::run(&mut mount, CTR_TIMEOUT, self.env.logs(), "overlay-probe")?;
        if !mounted.status.success() {
            eprintln!(
                "weir-lab runtimes: overlay does not mount here ({}), using the native snapshotter",
                mounted.stderr.trim()
            );
            return Ok("native");
        }
        let mut umount = self.env.command("umount");
        umount.arg("-n").arg(&merged);
        exec::run(
            &mut umount,
            CTR_TIMEOUT,
            self.env.logs(),
            "overlay-probe-umount",
        )?
        .ok()?;
        Ok("overlayfs")
    }

    fn start_daemon(&mut self) -> Result<()> {
        let log_path = self.dir.join("containerd.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .with_context(|| format!("cloning {}", log_path.display()))?;
        let mut cmd = self.env.command("containerd");
        cmd.arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        exec::die_with_parent(&mut cmd);
        let line = exec::command_line(&cmd);
        eprintln!("weir-lab runtimes: [daemon] {line}");
        let child = cmd.spawn().with_context(|| format!("spawning `{line}`"))?;
        self.daemon = Some(child);

        let deadline = Instant::now() + DAEMON_START_TIMEOUT;
        loop {
            if let Some(daemon) = self.daemon.as_mut()
                && let Ok(Some(status)) = daemon.try_wait()
            {
                bail!(
                    "containerd exited during startup ({status}); log {}:\n{}",
                    log_path.display(),
                    tail(&log_path, 30)
                );
            }
            if self.socket().exists() {
                let mut version = self.ctr_command();
                version.arg("version");
                if let Ok(out) =
                    exec::run(&mut version, CTR_TIMEOUT, self.env.logs(), "ctr-version")
                    && out.status.success()
                {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "containerd did not answer within {DAEMON_START_TIMEOUT:?}; log {}:\n{}",
                    log_path.display(),
                    tail(&log_path, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ctr --address <sock> --namespace weirtest`, in the node netns and sandbox.
    pub fn ctr_command(&self) -> Command {
        let mut cmd = self.env.command("ctr");
        cmd.arg("--address")
            .arg(self.socket())
            .arg("--namespace")
            .arg(NAMESPACE);
        cmd
    }

    /// Runs `ctr args...`; an error unless it exits 0.
    pub fn ctr(&self, args: &[&str]) -> Result<Outcome> {
        let mut cmd = self.ctr_command();
        cmd.args(args);
        let label = format!("ctr-{}", args.first().copied().unwrap_or(""));
        exec::run(&mut cmd, CTR_TIMEOUT, self.env.logs(), &label)?.ok()
    }

    fn import_image(&self) -> Result<()> {
        let tar = self.env.oci_tar().display().to_string();
        self.ctr(&["images", "import", "--snapshotter", self.snapshotter, &tar])
            .context("ctr images import of the OCI archive")?;
        let images = self.ctr(&["images", "ls", "-q"])?;
        if !images
            .stdout
            .lines()
            .any(|l| l.trim() == super::env::IMAGE_REF)
        {
            bail!(
                "ctr images import did not create {}; images: {}",
                super::env::IMAGE_REF,
                images.stdout.trim()
            );
        }
        Ok(())
    }

    /// `ctr run --cni --rm` of `argv` as container `name`, attached: stdin,
    /// stdout and the exit go through the returned handle.
    pub fn run_interactive(
        &self,
        name: &str,
        env: &[(&str, &str)],
        argv: &[&str],
    ) -> Result<Interactive> {
        let mut cmd = self.ctr_command();
        cmd.args(["run", "--cni", "--rm", "--snapshotter", self.snapshotter])
            .arg("--fifo-dir")
            .arg(self.dir.join("fifo"))
            .arg("--runc-root")
            .arg(self.dir.join("runc"))
            .arg("--cgroup")
            .arg(format!("{}/{name}", self.env.cgroup().path()));
        for (k, v) in env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        cmd.arg(super::env::IMAGE_REF).arg(name).args(argv);
        Interactive::spawn(&mut cmd, self.env.logs(), &format!("ctr-run-{name}"))
    }

    /// The CNI_CONTAINERID ctr uses for container `name`: `<namespace>-<name>`.
    pub fn cni_container_id(name: &str) -> String {
        format!("{NAMESPACE}-{name}")
    }

    /// Container ids containerd knows in the test namespace.
    pub fn container_ids(&self) -> Result<Vec<String>> {
        let out = self.ctr(&["containers", "ls", "-q"])?;
        Ok(out.stdout.split_whitespace().map(str::to_string).collect())
    }

    /// containerd's version line.
    pub fn version(&self) -> Result<String> {
        let out = self.ctr(&["version"])?;
        Ok(out
            .stdout
            .lines()
            .filter(|l| l.trim_start().starts_with("Version:"))
            .map(|l| l.trim().to_string())
            .collect::<Vec<_>>()
            .join(" / "))
    }

    /// Removes every task and container in the test namespace.
    fn remove_all(&self) -> Result<()> {
        let tasks = self.ctr(&["tasks", "ls", "-q"])?;
        for id in tasks.stdout.split_whitespace() {
            let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
            let _ = self.ctr(&["tasks", "delete", "-f", id]);
        }
        for id in self.container_ids()? {
            let _ = self.ctr(&["containers", "delete", &id]);
        }
        Ok(())
    }

    fn stop_daemon(&mut self) {
        let Some(mut daemon) = self.daemon.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(daemon.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        if exec::wait_deadline(&mut daemon, Duration::from_secs(10)).is_none() {
            eprintln!("weir-lab runtimes: containerd ignored SIGTERM and was killed");
        }
    }

    /// Shims outlive the daemon; kill those whose bundle is still there.
    fn kill_shims(&self) {
        let tasks = self
            .dir
            .join("state/io.containerd.runtime.v2.task")
            .join(NAMESPACE);
        let Ok(bundles) = std::fs::read_dir(&tasks) else {
            return;
        };
        for bundle in bundles.filter_map(|e| e.ok()) {
            for file in ["init.pid", "shim.pid"] {
                if let Some(pid) = std::fs::read_to_string(bundle.path().join(file))
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    eprintln!(
                        "weir-lab runtimes: killing leftover {file} {pid} of {}",
                        bundle.path().display()
                    );
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.daemon.is_some()
            && let Err(err) = self.remove_all()
        {
            eprintln!("weir-lab runtimes: containerd cleanup: {err:#}");
        }
        self.stop_daemon();
        self.kill_shims();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
