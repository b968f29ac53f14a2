//! Sysctls of the calling thread's network namespace. /proc/sys/net
//! resolves to the netns of the task that opens it, so this must run on the
//! thread that is in the node's netns (the main thread).

use std::fs;
use std::path::Path;

use super::NetError;

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// The routed pod model needs forwarding on the node, as ptp enables it.
pub fn enable_ip_forward() -> Result<(), NetError> {
    ensure(Path::new(IP_FORWARD), "1").map(drop)
}

/// Writes `value` unless the sysctl already has it (saves a write and keeps
/// read-only /proc setups working when nothing needs to change). Returns
/// whether it wrote.
fn ensure(path: &Path, value: &str) -> Result<bool, NetError> {
    let current = fs::read_to_string(path)
        .map_err(|e| NetError::io(format!("read {}", path.display()), e))?;
    if current.trim() == value {
        return Ok(false);
    }
    fs::write(path, value)
        .map_err(|e| NetError::io(format!("write {value} to {}", path.display()), e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ensure_writes_only_when_different() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("knob");
        fs::write(&file, "0\n").unwrap();
        assert!(ensure(&file, "1").unwrap());
        assert_eq!(fs::read_to_string(&file).unwrap(), "1");
        fs::write(&file, "1\n").unwrap();
        assert!(!ensure(&file, "1").unwrap());
        assert_eq!(fs::read_to_string(&file).unwrap(), "1\n");
    }

    #[test]
    fn missing_sysctl_names_the_path() {
        let err = ensure(Path::new("/nonexistent/knob"), "1").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/knob"));
    }
}
