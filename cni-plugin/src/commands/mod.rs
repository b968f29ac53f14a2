//! One module per CNI verb, plus the error mapping they share.

pub mod add;
pub mod check;
pub mod del;
pub mod gc;
pub mod status;

use std::path::Path;

use crate::cni_args::CniArgs;
use crate::config::NetConf;
use crate::env::CniEnv;
use crate::error::CniError;
use crate::ipam::{AllocError, DiskStore, StoreError};
use crate::net::NetError;
use crate::net::netns::{Netns, OpenError};

/// A validated call: environment, config and CNI_ARGS.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub env: CniEnv,
    pub conf: NetConf,
    pub args: CniArgs,
}

pub fn open_store(conf: &NetConf) -> Result<DiskStore, CniError> {
    DiskStore::open(&conf.ipam.data_dir, &conf.name).map_err(store_error)
}

/// Store I/O is code 5 (the spec's I/O failure).
pub fn store_error(err: StoreError) -> CniError {
    match err {
        StoreError::Io { .. } => CniError::io(err.to_string()),
        StoreError::Misuse(_) => CniError::internal(err.to_string()),
    }
}

/// Requests that cannot fit the config are code 7; conflicts and exhausted
/// ranges have no spec code and get 999 like host-local's errors.
pub fn alloc_error(err: AllocError) -> CniError {
    match err {
        AllocError::Store(e) => store_error(e),
        AllocError::RequestedIsGateway { .. } | AllocError::RequestedOutsideRanges { .. } => {
            CniError::invalid_config(err.to_string())
        }
        AllocError::Duplicate { .. }
        | AllocError::Exhausted { .. }
        | AllocError::RequestedTaken { .. } => CniError::internal(err.to_string()),
    }
}

pub fn net_error(err: NetError) -> CniError {
    CniError::internal(err.to_string())
}

/// A missing netns is code 3 (container unknown); a path that is not a
/// netns is code 4 (bad CNI_NETNS); the plugin's own netns is code 8.
pub fn open_netns(path: &str) -> Result<Netns, CniError> {
    Netns::open(Path::new(path)).map_err(|err| match err {
        OpenError::Missing(_) => CniError::unknown_container(err.to_string()),
        OpenError::NotANetns(_) => CniError::invalid_env(format!("CNI_NETNS: {err}")),
        OpenError::OwnNetns(_) => CniError::invalid_netns(format!(
            "CNI_NETNS: {err}; plugin's netns and netns from CNI_NETNS should not be the same"
        )),
        OpenError::Io { .. } => CniError::io(err.to_string()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::net::Ipv4Addr;

    use super::*;
    use crate::error::ErrorCode;
    use crate::ipam::Attachment;

    #[test]
    fn allocation_errors_map_to_codes() {
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        let cases = [
            (
                AllocError::Duplicate {
                    ip,
                    owner: Attachment::new("a", "eth0"),
                },
                ErrorCode::Internal,
            ),
            (
                AllocError::Exhausted {
                    range_set: "x".into(),
                },
                ErrorCode::Internal,
            ),
            (
                AllocError::RequestedTaken {
                    ip,
                    range_set: "x".into(),
                },
                ErrorCode::Internal,
            ),
            (
                AllocError::RequestedIsGateway {
                    ip,
                    range_set: "x".into(),
                },
                ErrorCode::InvalidNetworkConfig,
            ),
            (
                AllocError::RequestedOutsideRanges { ips: vec![ip] },
                ErrorCode::InvalidNetworkConfig,
            ),
            (
                AllocError::Store(StoreError::io(
                    "create",
                    "/x",
                    std::io::Error::from(std::io::ErrorKind::PermissionDenied),
                )),
                ErrorCode::Io,
            ),
        ];
        for (err, code) in cases {
            let text = err.to_string();
            let mapped = alloc_error(err);
            assert_eq!(mapped.code, code, "{text}");
            assert_eq!(mapped.msg, text);
        }
    }

    #[test]
    fn netns_errors_map_to_codes() {
        assert_eq!(
            open_netns("/run/netns/weir-missing-4711").unwrap_err().code,
            ErrorCode::UnknownContainer
        );
        assert_eq!(
            open_netns("/proc/self/ns/net").unwrap_err().code,
            ErrorCode::InvalidNetns
        );
        let plain = tempfile::NamedTempFile::new().unwrap();
        let path = plain.path().to_str().unwrap();
        assert_eq!(
            open_netns(path).unwrap_err().code,
            ErrorCode::InvalidEnvironment
        );
    }
}
