//! Running runtime commands (podman, ctr, containerd) with a deadline and a log.
//!
//! Output goes to files, not pipes: podman and containerd fork daemons (conmon,
//! shims) that could inherit a pipe and keep a reader waiting forever. A command
//! that outlives its deadline is killed, so a hung runtime fails the test instead
//! of hanging CI.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How often a waiting loop looks at the child again.
const POLL: Duration = Duration::from_millis(10);

/// A finished command.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What ran (program and arguments), for messages.
    pub command_line: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
}

impl Outcome {
    /// `Ok(self)` when the command exited 0, else an error with its stderr.
    pub fn ok(self) -> Result<Outcome> {
        if self.status.success() {
            return Ok(self);
        }
        bail!(
            "`{}` failed ({}):\nstderr: {}\nstdout: {}",
            self.command_line,
            self.status,
            self.stderr.trim(),
            self.stdout.trim()
        )
    }
}

/// A directory of numbered log files, one pair per command.
#[derive(Debug)]
pub struct LogDir {
    dir: PathBuf,
    seq: AtomicU32,
}

impl LogDir {
    pub fn new(dir: &Path) -> Result<LogDir> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(LogDir {
            dir: dir.to_path_buf(),
            seq: AtomicU32::new(1),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/<nnn>-<label>` (the caller appends `.out` / `.err`).
    fn next(&self, label: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        self.dir.join(format!("{n:03}-{label}"))
    }
}

/// The command line of `cmd` as one string, with the environment variables it
/// sets in front (for errors and for reproducing a call by hand).
pub fn command_line(cmd: &Command) -> String {
    let envs = cmd.get_envs().filter_map(|(key, value)| {
        value.map(|v| format!("{}={}", key.to_string_lossy(), v.to_string_lossy()))
    });
    let argv = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned());
    envs.chain(argv).collect::<Vec<_>>().join(" ")
}

/// Runs `cmd` with stdin from /dev/null and its output in two log files; kills
/// it after `timeout` (or when the calling thread ends). `label` names the log
/// files.
pub fn run(cmd: &mut Command, timeout: Duration, logs: &LogDir, label: &str) -> Result<Outcome> {
    let base = logs.next(label);
    let out_path = base.with_extension("out");
    let err_path = base.with_extension("err");
    let line = command_line(cmd);
    let stdout =
        File::create(&out_path).with_context(|| format!("creating {}", out_path.display()))?;
    let stderr =
        File::create(&err_path).with_context(|| format!("creating {}", err_path.display()))?;
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    die_with_parent(cmd);
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("spawning `{line}`"))?;
    let status = wait_deadline(&mut child, timeout);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    // Shown by the test harness when a test fails (or with --nocapture).
    eprintln!(
        "weir-lab runtimes: [{:.2?}, {}] {line}",
        start.elapsed(),
        status.map_or_else(|| "timed out".to_string(), |s| s.to_string())
    );
    match status {
        Some(status) => Ok(Outcome {
            command_line: line,
            status,
            stdout: read(&out_path),
            stderr: read(&err_path),
            elapsed: start.elapsed(),
        }),
        None => bail!(
            "`{line}` did not finish within {timeout:?} and was killed; stderr: {}",
            read(&err_path).trim()
        ),
    }
}

/// Waits for `child` until `timeout`; on expiry kills and reaps it and returns None.
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Makes the child get SIGKILL when the thread that spawned it ends, so a
/// daemon or namespace holder never outlives a crashed test process.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl(2) is async-signal-safe and the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A running interactive command: stdin is a pipe, stdout arrives line by line,
/// stderr goes to a log file. Killed on drop if still running.
#[derive(Debug)]
pub struct Interactive {
    command_line: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    err_path: PathBuf,
}

impl Interactive {
    pub fn spawn(cmd: &mut Command, logs: &LogDir, label: &str) -> Result<Interactive> {
        let base = logs.next(label);
        let out_path = base.with_extension("out");
        let err_path = base.with_extension("err");
        let line = command_line(cmd);
        let stderr =
            File::create(&err_path).with_context(|| format!("creating {}", err_path.display()))?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        die_with_parent(cmd);
        eprintln!("weir-lab runtimes: [interactive] {line}");
        let mut child = cmd.spawn().with_context(|| format!("spawning `{line}`"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("child has no stdout pipe")?;
        let mut log = File::create(&out_path).ok();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(log) = log.as_mut() {
                    let _ = writeln!(log, "{line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Interactive {
            command_line: line,
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
            err_path,
        })
    }

    /// Collects stdout lines until one equals `marker`; returns the lines before it.
    pub fn read_until(&mut self, marker: &str, timeout: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut collected = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.trim() == marker {
                        return Ok(collected);
                    }
                    collected.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "`{}` printed no {marker:?} within {timeout:?}; stdout so far: {:?}; stderr: {}",
                    self.command_line,
                    self.seen,
                    self.stderr().trim()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = wait_deadline(&mut self.child, Duration::from_secs(5));
                    bail!(
                        "`{}` ended ({status:?}) before printing {marker:?}; stdout: {:?}; stderr: {}",
                        self.command_line,
                        self.seen,
                        self.stderr().trim()
                    )
                }
            }
        }
    }

    /// Writes one line to the child's stdin.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("writing to stdin of `{}`", self.command_line))
    }

    /// Closes stdin and waits for the exit; returns the status and all stdout
    /// lines seen after the last [`Interactive::read_until`].
    pub fn finish(mut self, timeout: Duration) -> Result<(ExitStatus, Vec<String>)> {
        self.stdin = None;
        let Some(status) = wait_deadline(&mut self.child, timeout) else {
            bail!(
                "`{}` did not exit within {timeout:?} and was killed; stderr: {}",
                self.command_line,
                self.stderr().trim()
            );
        };
        // The reader thread ends at EOF, which follows the exit closely.
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            rest.push(line);
        }
        Ok((status, rest))
    }

    /// What the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err_path).unwrap_or_default()
    }

    pub fn command_line(&self) -> &str {
        &self.command_line
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
