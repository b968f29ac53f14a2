//! Running a child process with stdin, captured output and a deadline, so a hung
//! plugin or probe fails the test instead of hanging it.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// What a finished child left behind.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Spawns `cmd`, feeds it `stdin`, collects stdout and stderr, and kills it when
/// it is not done after `timeout`. `what` names the command in errors.
pub(crate) fn run_with_timeout(
    cmd: &mut Command,
    stdin: &[u8],
    timeout: Duration,
    what: &str,
) -> Result<Finished> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {what}"))?;
    let pid = child.id();

    // Writing stdin on its own thread: a child that does not read it must not block us.
    let input = stdin.to_vec();
    let stdin_pipe = child.stdin.take();
    let writer = thread::spawn(move || {
        if let Some(mut pipe) = stdin_pipe {
            // A child that exits without reading gives EPIPE; that is its business.
            let _ = pipe.write_all(&input);
        }
    });
    let out_reader = child.stdout.take().map(spawn_reader);
    let err_reader = child.stderr.take().map(spawn_reader);

    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(status);
    });
    let status = match rx.recv_timeout(timeout) {
        Ok(status) => status.with_context(|| format!("waiting for {what}"))?,
        Err(_) => {
            // The waiter thread has not reaped the child yet, so the pid is still ours.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = rx.recv();
            let _ = waiter.join();
            bail!("{what} did not finish within {timeout:?} and was killed");
        }
    };
    let _ = waiter.join();
    let _ = writer.join();
    let stdout = join_reader(out_reader);
    let stderr = join_reader(err_reader);
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}

fn spawn_reader<R: Read + Send + 'static>(mut pipe: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn join_reader(handle: Option<thread::JoinHandle<Vec<u8>>>) -> Vec<u8> {
    handle.and_then(|h| h.join().ok()).unwrap_or_default()
}
