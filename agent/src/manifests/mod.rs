//! The standalone source (`--manifests DIR`): Kubernetes objects from YAML
//! and JSON files in a directory, as the API server would hold them.
//!
//! - [`parse`]: pure text → objects; a bad document (syntax error, unknown
//!   kind or apiVersion, missing name, wrong field types) becomes a
//!   [`ManifestError`] with file, document index, line and reason, and the
//!   rest of the file still applies.
//! - [`dir`]: a directory → a [`ManifestSet`] (snapshot + errors),
//!   re-reading only changed files.
//! - [`watch`]: a thread that publishes a fresh set after each change,
//!   within the poll interval (250 ms by default; inotify makes it ~20 ms).

mod convert;
pub mod dir;
mod error;
pub mod parse;
mod split;
pub mod watch;

pub use dir::{DirLoader, ManifestSet, Poll, assemble, load_dir};
pub use error::{Location, ManifestError, Reason};
pub use parse::{ParsedFile, ParsedObject, parse_file, parse_json, parse_yaml};
pub use watch::{ManifestWatcher, WatchConfig};

#[cfg(test)]
mod tests;
