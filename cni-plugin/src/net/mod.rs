//! Kernel-facing work: network namespaces, rtnetlink, sysctls.
//!
//! Every rtnetlink socket is bound to the netns it was created in, so each
//! namespace gets its own current-thread runtime and connection, and work
//! inside a container's netns runs on a dedicated OS thread that entered
//! it with setns(2) (see [`netns::run_in`]). No tokio worker ever setns'.

pub mod links;
pub mod netns;
pub mod sysctl;
pub mod wiring;

use std::future::Future;

use rtnetlink::Handle;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{context}: {source}")]
    Netlink {
        context: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Live state differs from what it should be (CHECK), or a conflict.
    #[error("{0}")]
    State(String),
}

impl NetError {
    pub fn netlink(context: impl Into<String>, source: rtnetlink::Error) -> Self {
        Self::Netlink {
            context: context.into(),
            source,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// The positive errno of a netlink failure, if it is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Netlink { source, .. } => errno_of(source),
            Self::Io { source, .. } => source.raw_os_error(),
            Self::State(_) => None,
        }
    }
}

pub fn errno_of(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| c.get().abs()),
        _ => None,
    }
}

/// Runs `f` with a fresh rtnetlink connection in the calling thread's
/// network namespace, on a current-thread runtime owned by this call.
pub fn with_netlink<T, F, Fut>(f: F) -> Result<T, NetError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, NetError>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| NetError::io("start the netlink runtime", e))?;
    runtime.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| NetError::io("open an rtnetlink socket", e))?;
        tokio::spawn(connection);
        f(handle).await
    })
}

/// `aa:bb:cc:dd:ee:ff`, as CNI results spell MACs.
pub fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_format() {
        assert_eq!(
            format_mac(&[0x0a, 0xbc, 0, 1, 0xff, 0x10]),
            "0a:bc:00:01:ff:10"
        );
        assert_eq!(format_mac(&[]), "");
    }
}
