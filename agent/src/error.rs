//! The agent's error type: every variant says which object it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "this binary was built without the eBPF object; build it with `cargo xtask build` \
         (which sets WEIR_EBPF_OBJ)"
    )]
    NoEbpfObject,

    #[error("loading the eBPF object: {0}")]
    LoadObject(#[source] aya::EbpfError),

    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },

    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },

    #[error("eBPF program {0} is missing from the object")]
    MissingProgram(&'static str),

    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
