//! The CNI_* environment a runtime passes, validated like libcni's skel.

use std::ffi::OsString;

use crate::error::CniError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(raw: &str) -> Result<Self, CniError> {
        match raw {
            "ADD" => Ok(Self::Add),
            "DEL" => Ok(Self::Del),
            "CHECK" => Ok(Self::Check),
            "VERSION" => Ok(Self::Version),
            "STATUS" => Ok(Self::Status),
            "GC" => Ok(Self::Gc),
            other => Err(CniError::invalid_env(format!(
                "unknown CNI_COMMAND: {other}"
            ))),
        }
    }

    /// Commands that act on one attachment (container id + ifname).
    fn is_per_attachment(self) -> bool {
        matches!(self, Self::Add | Self::Del | Self::Check)
    }

    /// CNI_NETNS is required for ADD and CHECK only: a runtime may send DEL
    /// without it (containerd does, once the sandbox is gone).
    fn needs_netns(self) -> bool {
        matches!(self, Self::Add | Self::Check)
    }
}

/// The validated CNI_* variables. Unset optional ones are empty strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
}

/// Reads and validates the CNI_* variables through `lookup` (the process
/// environment in `main`, a map in tests).
pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<CniEnv, CniError> {
    let get = |name: &str| -> Result<String, CniError> {
        match lookup(name) {
            None => Ok(String::new()),
            Some(value) => value
                .into_string()
                .map_err(|_| CniError::invalid_env(format!("{name} is not valid UTF-8"))),
        }
    };
    let command_raw = get("CNI_COMMAND")?;
    if command_raw.is_empty() {
        return Err(CniError::invalid_env(
            "required env variables [CNI_COMMAND] missing",
        ));
    }
    let command = Command::parse(&command_raw)?;
    let env = CniEnv {
        command,
        container_id: get("CNI_CONTAINERID")?,
        netns: get("CNI_NETNS")?,
        ifname: get("CNI_IFNAME")?,
        args: get("CNI_ARGS")?,
        path: get("CNI_PATH")?,
    };

    let mut missing = Vec::new();
    if command.is_per_attachment() {
        if env.container_id.is_empty() {
            missing.push("CNI_CONTAINERID");
        }
        if command.needs_netns() && env.netns.is_empty() {
            missing.push("CNI_NETNS");
        }
        if env.ifname.is_empty() {
            missing.push("CNI_IFNAME");
        }
        if env.path.is_empty() {
            missing.push("CNI_PATH");
        }
    }
    if !missing.is_empty() {
        return Err(CniError::invalid_env(format!(
            "required env variables [{}] missing",
            missing.join(",")
        )));
    }
    if command.is_per_attachment() {
        validate_container_id(&env.container_id)?;
        validate_ifname(&env.ifname)?;
    }
    Ok(env)
}

/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, the pattern libcni uses for container ids
/// and network names.
pub fn is_valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) if first.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if id.is_empty() {
        return Err(CniError::unknown_container("missing containerID"));
    }
    if !is_valid_identifier(id) {
        return Err(
            CniError::invalid_env("invalid characters in CNI_CONTAINERID").with_details(id),
        );
    }
    Ok(())
}

/// Linux interface name rules (IFNAMSIZ, no '/', ':' or whitespace).
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::invalid_env("CNI_IFNAME is empty"));
    }
    if name.len() > 15 {
        return Err(CniError::invalid_env(format!(
            "CNI_IFNAME {name:?} is longer than 15 bytes"
        )));
    }
    if name == "." || name == ".." {
        return Err(CniError::invalid_env(format!(
            "CNI_IFNAME {name:?} is not a valid interface name"
        )));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(CniError::invalid_env(format!(
            "CNI_IFNAME {name:?} contains '/', ':' or whitespace"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use super::*;
    use crate::error::ErrorCode;

    fn env_of(pairs: &[(&str, &str)]) -> Result<CniEnv, CniError> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        from_lookup(|name| map.get(name).cloned())
    }

    const FULL_ADD: [(&str, &str); 5] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];

    #[test]
    fn full_add_env_parses() {
        let env = env_of(&FULL_ADD).unwrap();
        assert_eq!(env.command, Command::Add);
        assert_eq!(env.container_id, "abc123");
        assert_eq!(env.ifname, "eth0");
        assert_eq!(env.args, "");
    }

    #[test]
    fn missing_command_is_code_4() {
        let err = env_of(&[]).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEnvironment);
        assert!(err.msg.contains("CNI_COMMAND"));
    }

    #[test]
    fn unknown_command_is_code_4() {
        let err = env_of(&[("CNI_COMMAND", "FROB")]).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEnvironment);
        assert!(err.msg.contains("FROB"));
    }

    #[test]
    fn missing_vars_are_all_named() {
        let err = env_of(&[("CNI_COMMAND", "ADD")]).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEnvironment);
        for name in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
            assert!(err.msg.contains(name), "{}", err.msg);
        }
    }

    #[test]
    fn del_does_not_need_netns() {
        let pairs: Vec<_> = FULL_ADD
            .iter()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .map(|(k, v)| {
                if *k == "CNI_COMMAND" {
                    (*k, "DEL")
                } else {
                    (*k, *v)
                }
            })
            .collect();
        let env = env_of(&pairs).unwrap();
        assert_eq!(env.command, Command::Del);
        assert_eq!(env.netns, "");
    }

    #[test]
    fn check_needs_netns() {
        let pairs: Vec<_> = FULL_ADD
            .iter()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .map(|(k, v)| {
                if *k == "CNI_COMMAND" {
                    (*k, "CHECK")
                } else {
                    (*k, *v)
                }
            })
            .collect();
        let err = env_of(&pairs).unwrap_err();
        assert!(err.msg.contains("CNI_NETNS"));
    }

    #[test]
    fn gc_status_version_need_only_the_command() {
        for cmd in ["GC", "STATUS", "VERSION"] {
            env_of(&[("CNI_COMMAND", cmd)]).unwrap();
        }
    }

    #[test]
    fn bad_container_id_is_code_4() {
        let mut pairs = FULL_ADD;
        pairs[1] = ("CNI_CONTAINERID", "../etc");
        assert_eq!(
            env_of(&pairs).unwrap_err().code,
            ErrorCode::InvalidEnvironment
        );
    }

    #[test]
    fn bad_ifnames_are_code_4() {
        for name in ["a/b", "a:b", "a b", ".", "..", "sixteen-chars-xx"] {
            let mut pairs = FULL_ADD;
            pairs[3] = ("CNI_IFNAME", name);
            let err = env_of(&pairs).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidEnvironment, "{name}");
        }
    }

    #[test]
    fn identifiers() {
        assert!(is_valid_identifier("a"));
        assert!(is_valid_identifier("weir-net_1.2"));
        assert!(!is_valid_identifier(""));
        assert!(!is_valid_identifier("-x"));
        assert!(!is_valid_identifier("a/b"));
        assert!(!is_valid_identifier("ä"));
    }
}
