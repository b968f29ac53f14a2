//! Running kernel work inside another network namespace.
//!
//! Interface indices, tcx attachment and netlink are per network namespace,
//! and `setns(2)` switches only the calling thread. So work for another
//! namespace runs on a dedicated OS thread that enters it and then ends:
//! no other thread of the process ever changes namespace.

use std::{fs::File, path::Path};

use nix::sched::{CloneFlags, setns};

use super::error::{DatapathError, DatapathResult};

/// Runs `f` on a fresh thread inside the network namespace at `netns`
/// (e.g. `/run/netns/NAME` or `/proc/PID/ns/net`) and returns its result.
/// A panic in `f` propagates to the caller.
pub fn in_netns<T, F>(netns: &Path, f: F) -> DatapathResult<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let file = File::open(netns).map_err(|e| DatapathError::io("opening netns", netns, e))?;
    std::thread::scope(|scope| {
        let handle = scope.spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| DatapathError::io("setns into", netns, e.into()))?;
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
