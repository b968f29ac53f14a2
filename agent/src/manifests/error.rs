//! Why a manifest document was skipped, and where it is.

use std::fmt;
use std::path::PathBuf;

use crate::k8s::{Kind, ObjectKey};

/// Where in a file a document (or List item) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// 0-based index of the document in the file: YAML documents are
    /// separated by `---` lines; JSON files may hold a stream of values.
    pub document: usize,
    /// 0-based index in a `List`'s `items`.
    pub item: Option<usize>,
    /// 1-based line the document starts on.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        if let Some(item) = self.item {
            write!(f, " item {item}")?;
        }
        Ok(())
    }
}

/// One skipped document (or file), with file, location and reason. The
/// caller logs these and counts them by [`Reason::code`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    pub path: PathBuf,
    /// `None` when the whole file (or directory) is concerned.
    pub location: Option<Location>,
    pub reason: Reason,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(location) = &self.location {
            write!(f, ": {location}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ManifestError {}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// The directory or file could not be read.
    #[error("cannot read: {0}")]
    Read(String),
    #[error("not UTF-8 text")]
    NotUtf8,
    #[error("YAML syntax error: {0}")]
    YamlSyntax(String),
    /// A JSON syntax error also ends the file: the rest of the stream
    /// cannot be delimited.
    #[error("JSON syntax error (rest of the file skipped): {0}")]
    JsonSyntax(String),
    #[error("not an object: want a mapping with apiVersion, kind and metadata")]
    NotAnObject,
    #[error("apiVersion or kind missing")]
    MissingTypeMeta,
    #[error("invalid List: {0}")]
    InvalidList(String),
    #[error(
        "unsupported kind {kind:?} of apiVersion {api_version:?}; Weir reads v1 Service, Pod, \
         Namespace, Node, discovery.k8s.io/v1 EndpointSlice, networking.k8s.io/v1 NetworkPolicy \
         and Lists of them"
    )]
    UnsupportedKind { api_version: String, kind: String },
    #[error("{kind} without metadata.name")]
    MissingName { kind: Kind },
    /// A field has the wrong type or a required field is missing.
    #[error("invalid {kind} {name:?}: {message}")]
    Invalid {
        kind: Kind,
        name: String,
        message: String,
    },
    /// The same object in two documents: the later one wins, as with
    /// `kubectl apply` of both in order.
    #[error("{key} was already defined in {previous}; this later definition replaces it")]
    Duplicate { key: ObjectKey, previous: String },
}

impl Reason {
    /// A short stable label for metrics (`reason="syntax"`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Read(_) | Reason::NotUtf8 => "unreadable",
            Reason::YamlSyntax(_) | Reason::JsonSyntax(_) => "syntax",
            Reason::NotAnObject | Reason::MissingTypeMeta | Reason::InvalidList(_) => {
                "not_an_object"
            }
            Reason::UnsupportedKind { .. } => "unsupported_kind",
            Reason::MissingName { .. } => "missing_name",
            Reason::Invalid { .. } => "invalid",
            Reason::Duplicate { .. } => "duplicate",
        }
    }
}
