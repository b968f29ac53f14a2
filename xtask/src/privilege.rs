//! Root checks, so commands that need root fail up front with a clear message.

use anyhow::{Context, Result, bail};

/// The effective uid of this process, from `/proc/self/status` (line `Uid: real effective ...`).
pub fn effective_uid() -> Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("cannot read /proc/self/status to find the effective uid")?;
    parse_effective_uid(&status).context("no parsable `Uid:` line in /proc/self/status")
}

fn parse_effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Fails unless running as root, naming what needs root.
pub fn require_root(what: &str) -> Result<()> {
    let euid = effective_uid()?;
    if euid != 0 {
        bail!(
            "{what} needs root (effective uid is {euid}); rerun as root, \
             e.g. `sudo -E env PATH=\"$PATH\" cargo xtask ...`"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_the_effective_not_the_real_uid() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_effective_uid(status), Some(0));
    }

    #[test]
    fn missing_uid_line_is_none() {
        assert_eq!(parse_effective_uid("Name:\tx\n"), None);
        assert_eq!(parse_effective_uid("Uid:\t1000\n"), None);
    }
}
