//! The CNI spec's error object and its well-known codes.

use serde::Serialize;

/// Error codes from the CNI spec ("Error" section). Codes 100+ would be
/// plugin-specific; like the reference plugins we use 999 for failures the
/// spec has no code for (netlink errors, exhausted ranges, CHECK drift).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    IncompatibleVersion,
    UnsupportedField,
    UnknownContainer,
    InvalidEnvironment,
    Io,
    Decoding,
    InvalidNetworkConfig,
    InvalidNetns,
    TryAgainLater,
    PluginNotAvailable,
    LimitedConnectivity,
    Internal,
}

impl ErrorCode {
    pub fn number(self) -> u32 {
        match self {
            Self::IncompatibleVersion => 1,
            Self::UnsupportedField => 2,
            Self::UnknownContainer => 3,
            Self::InvalidEnvironment => 4,
            Self::Io => 5,
            Self::Decoding => 6,
            Self::InvalidNetworkConfig => 7,
            Self::InvalidNetns => 8,
            Self::TryAgainLater => 11,
            Self::PluginNotAvailable => 50,
            Self::LimitedConnectivity => 51,
            Self::Internal => 999,
        }
    }
}

/// A failure as the runtime sees it: printed as the spec's error object on
/// stdout, with a non-zero exit status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {}: {msg}{}", code.number(), if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn incompatible_version(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::IncompatibleVersion, msg)
    }
    pub fn unsupported_field(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::UnsupportedField, msg)
    }
    pub fn unknown_container(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::UnknownContainer, msg)
    }
    pub fn invalid_env(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidEnvironment, msg)
    }
    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Io, msg)
    }
    pub fn decoding(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Decoding, msg)
    }
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidNetworkConfig, msg)
    }
    pub fn invalid_netns(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidNetns, msg)
    }
    pub fn not_available(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::PluginNotAvailable, msg)
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, msg)
    }

    /// The spec's JSON error object. `cni_version` echoes the config's
    /// version when it could be read.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        let wire = Wire {
            cni_version,
            code: self.code.number(),
            msg: &self.msg,
            details: &self.details,
        };
        // Serializing plain strings and integers cannot fail; keep a
        // hand-written fallback anyway so the runtime always gets JSON.
        serde_json::to_string_pretty(&wire).unwrap_or_else(|_| {
            format!(
                "{{\"cniVersion\":\"1.1.0\",\"code\":{},\"msg\":\"unprintable error\"}}",
                self.code.number()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn codes_match_the_spec_table() {
        let table = [
            (ErrorCode::IncompatibleVersion, 1),
            (ErrorCode::UnsupportedField, 2),
            (ErrorCode::UnknownContainer, 3),
            (ErrorCode::InvalidEnvironment, 4),
            (ErrorCode::Io, 5),
            (ErrorCode::Decoding, 6),
            (ErrorCode::InvalidNetworkConfig, 7),
            (ErrorCode::InvalidNetns, 8),
            (ErrorCode::TryAgainLater, 11),
            (ErrorCode::PluginNotAvailable, 50),
            (ErrorCode::LimitedConnectivity, 51),
            (ErrorCode::Internal, 999),
        ];
        for (code, number) in table {
            assert_eq!(code.number(), number, "{code:?}");
        }
    }

    #[test]
    fn error_object_has_spec_fields() {
        let err = CniError::invalid_config("missing ipam").with_details("key ipam");
        let v: serde_json::Value = serde_json::from_str(&err.to_json("1.0.0")).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 7);
        assert_eq!(v["msg"], "missing ipam");
        assert_eq!(v["details"], "key ipam");
    }

    #[test]
    fn empty_details_are_omitted() {
        let err = CniError::invalid_env("x");
        let v: serde_json::Value = serde_json::from_str(&err.to_json("1.1.0")).unwrap();
        assert!(v.get("details").is_none());
        assert_eq!(v["code"], 4);
    }
}
