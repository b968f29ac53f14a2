//! CNI spec versions this plugin speaks, and the VERSION reply.

use serde::Serialize;

use crate::error::CniError;

/// The protocol versions we implement, oldest first, as VERSION lists them.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// The newest version; used when no config version is known.
pub const LATEST: &str = "1.1.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CniVersion {
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    /// Exact match against the supported list, as libcni's reconciler does.
    /// A config without `cniVersion` means 0.1.0 in libcni, which we reject.
    pub fn parse(raw: Option<&str>) -> Result<Self, CniError> {
        let raw = raw.unwrap_or("");
        match raw {
            "0.4.0" => Ok(Self::V0_4_0),
            "1.0.0" => Ok(Self::V1_0_0),
            "1.1.0" => Ok(Self::V1_1_0),
            _ => {
                let shown = if raw.is_empty() {
                    "0.1.0 (cniVersion missing)"
                } else {
                    raw
                };
                Err(
                    CniError::incompatible_version("incompatible CNI versions").with_details(
                        format!(
                            "config is \"{shown}\", plugin supports [{}]",
                            SUPPORTED_VERSIONS.join(" ")
                        ),
                    ),
                )
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    /// STATUS and GC exist from spec 1.1.0 on.
    pub fn has_status_and_gc(self) -> bool {
        self >= Self::V1_1_0
    }
}

/// The VERSION reply. Like libcni's skel, it ignores stdin.
pub fn version_reply() -> String {
    #[derive(Serialize)]
    struct Reply {
        #[serde(rename = "cniVersion")]
        cni_version: &'static str,
        #[serde(rename = "supportedVersions")]
        supported_versions: [&'static str; 3],
    }
    let reply = Reply {
        cni_version: LATEST,
        supported_versions: SUPPORTED_VERSIONS,
    };
    serde_json::to_string(&reply).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn supported_versions_parse() {
        for v in SUPPORTED_VERSIONS {
            assert_eq!(CniVersion::parse(Some(v)).unwrap().as_str(), v);
        }
    }

    #[test]
    fn other_versions_are_code_1() {
        for v in [
            None,
            Some(""),
            Some("0.3.1"),
            Some("1.0"),
            Some("2.0.0"),
            Some(" 1.0.0"),
        ] {
            let err = CniVersion::parse(v).unwrap_err();
            assert_eq!(err.code, ErrorCode::IncompatibleVersion, "{v:?}");
        }
    }

    #[test]
    fn status_and_gc_only_from_1_1_0() {
        assert!(!CniVersion::V0_4_0.has_status_and_gc());
        assert!(!CniVersion::V1_0_0.has_status_and_gc());
        assert!(CniVersion::V1_1_0.has_status_and_gc());
    }

    #[test]
    fn version_reply_lists_all() {
        let v: serde_json::Value = serde_json::from_str(&version_reply()).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(
            v["supportedVersions"],
            serde_json::json!(["0.4.0", "1.0.0", "1.1.0"])
        );
    }
}
