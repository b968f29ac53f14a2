//! Errors of the datapath layer; each names the file, map, program or
//! interface it is about.

use std::{io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "this binary was built without the eBPF object; build it with `cargo xtask build` \
         (which sets WEIR_EBPF_OBJ)"
    )]
    NoObject,

    #[error("parsing the embedded eBPF object: {0}")]
    ParseObject(#[source] Box<aya_obj::ParseError>),

    #[error("loading the eBPF object with pins under {dir}: {source}")]
    Load {
        dir: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },

    #[error("eBPF program {name}: {source}")]
    Program {
        name: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },

    #[error("eBPF program {0} is missing from the object")]
    MissingProgram(String),

    #[error("eBPF map {0} is missing from the object")]
    MissingMap(String),

    #[error("eBPF map {name}: {source}")]
    Map {
        name: String,
        #[source]
        source: Box<aya::maps::MapError>,
    },

    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{call} for {object}: {source}")]
    Sys {
        call: &'static str,
        object: String,
        #[source]
        source: io::Error,
    },

    #[error("interface {0}: {1}")]
    Interface(String, #[source] io::Error),

    #[error("{0}")]
    Invalid(String),
}

impl DatapathError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sys(call: &'static str, object: impl Into<String>, source: io::Error) -> Self {
        Self::Sys {
            call,
            object: object.into(),
            source,
        }
    }

    pub(crate) fn map(name: impl Into<String>, source: aya::maps::MapError) -> Self {
        Self::Map {
            name: name.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn program(name: impl Into<String>, source: aya::programs::ProgramError) -> Self {
        Self::Program {
            name: name.into(),
            source: Box::new(source),
        }
    }
}

pub type DatapathResult<T> = std::result::Result<T, DatapathError>;
