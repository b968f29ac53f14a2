//! Reading a manifest directory, re-reading only the files that changed.
//!
//! The directory is read non-recursively, as `kubectl apply -f DIR` without
//! `-R`: regular files (or symlinks to them) named `*.yaml`, `*.yml` or
//! `*.json`. Names starting with `.` are skipped: editors' swap and backup
//! files and atomic writers' temporaries live there, as do the `..data`
//! links of a mounted ConfigMap (whose visible files are followed).
//!
//! A file counts as changed when its (device, inode, size, mtime, ctime)
//! differ, taken through symlinks, so in-place edits, rename-over writes
//! and ConfigMap-style symlink swaps all show.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{Location, ManifestError, Reason};
use super::parse::{Format, ParsedFile, ParsedObject, parse_file};
use crate::k8s::{ObjectKey, Snapshot};

/// What one load of the directory gave.
#[derive(Clone, Debug, Default)]
pub struct ManifestSet {
    pub snapshot: Snapshot,
    /// Skipped documents and files, in file then document order.
    pub errors: Vec<ManifestError>,
    /// Manifest files read.
    pub files: usize,
    /// Non-empty documents seen, good and bad.
    pub documents: usize,
    /// Counts loads that changed something, from 1.
    pub generation: u64,
}

impl ManifestSet {
    /// Errors per [`Reason::code`], for metrics.
    pub fn error_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for e in &self.errors {
            *counts.entry(e.reason.code()).or_default() += 1;
        }
        counts
    }
}

/// Merges parsed files (in the given order) into one snapshot. Of two
/// documents defining the same object the later wins, and the later one
/// is reported as a [`Reason::Duplicate`].
pub fn assemble<'a>(
    files: impl IntoIterator<Item = (&'a Path, &'a ParsedFile)>,
) -> (Snapshot, Vec<ManifestError>) {
    let mut snapshot = Snapshot::new();
    let mut errors = Vec::new();
    let mut done: Vec<(&Path, &ParsedFile)> = Vec::new();
    // Where each object was defined; built only once a duplicate shows up
    // (rare), so the common load hashes no keys.
    let mut sites: Option<HashMap<ObjectKey, (&Path, Location)>> = None;
    for (path, file) in files {
        errors.extend(file.errors.iter().cloned());
        for parsed in &file.objects {
            let replaced = snapshot.insert(parsed.object.clone()).is_some();
            if !replaced && sites.is_none() {
                continue;
            }
            let sites = sites.get_or_insert_with(|| definition_sites(&done, (path, file), parsed));
            let key = parsed.object.key();
            let previous = sites.insert(key.clone(), (path, parsed.location));
            if let (true, Some((previous_path, previous))) = (replaced, previous) {
                errors.push(ManifestError {
                    path: path.to_path_buf(),
                    location: Some(parsed.location),
                    reason: Reason::Duplicate {
                        key,
                        previous: format!("{}: {previous}", previous_path.display()),
                    },
                });
            }
        }
        done.push((path, file));
    }
    (snapshot, errors)
}

/// Where every object before `upto` (in the `done` files, then in the
/// current file) was last defined.
fn definition_sites<'a>(
    done: &[(&'a Path, &'a ParsedFile)],
    current: (&'a Path, &'a ParsedFile),
    upto: &ParsedObject,
) -> HashMap<ObjectKey, (&'a Path, Location)> {
    let mut sites = HashMap::new();
    let (current_path, current_file) = current;
    let earlier_in_current = current_file
        .objects
        .iter()
        .take_while(|p| !std::ptr::eq(*p, upto))
        .map(|p| (current_path, p));
    let all_done = done
        .iter()
        .flat_map(|(path, file)| file.objects.iter().map(move |p| (*path, p)));
    for (path, parsed) in all_done.chain(earlier_in_current) {
        sites.insert(parsed.object.key(), (path, parsed.location));
    }
    sites
}

/// Reads the whole directory once.
pub fn load_dir(dir: &Path) -> ManifestSet {
    let mut loader = DirLoader::new(dir);
    match loader.poll() {
        Poll::Changed(set) => set,
        Poll::Unchanged => ManifestSet::default(),
        Poll::Unavailable(error) => ManifestSet {
            errors: vec![error],
            generation: 1,
            ..ManifestSet::default()
        },
    }
}

/// The outcome of one [`DirLoader::poll`].
#[derive(Debug)]
pub enum Poll {
    /// Something changed (or this is the first poll): a fresh set.
    Changed(ManifestSet),
    Unchanged,
    /// The directory cannot be listed (missing, no permission). The
    /// previous set stays in force: a directory being replaced by
    /// remove-then-rename must not drop every Service for a moment.
    /// Empty the directory to remove everything.
    Unavailable(ManifestError),
}

/// Identity and change stamp of a file, through symlinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Fingerprint {
    fn of(meta: &std::fs::Metadata) -> Self {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// A file's fingerprint, or why it could not be taken (a symlink loop, a
/// target out of reach): such a file is reported, not fatal.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stamp {
    Ok(Fingerprint),
    Err(String),
}

struct CachedFile {
    path: PathBuf,
    stamp: Stamp,
    parsed: Arc<ParsedFile>,
}

/// Keeps the parsed files of a directory and re-reads what changed.
pub struct DirLoader {
    dir: PathBuf,
    files: BTreeMap<OsString, CachedFile>,
    /// (device, inode) of the directory at the last successful listing.
    dir_identity: Option<(u64, u64)>,
    generation: u64,
}

impl DirLoader {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            files: BTreeMap::new(),
            dir_identity: None,
            generation: 0,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// (device, inode) of the directory when last listed; changes when the
    /// directory is replaced.
    pub fn dir_identity(&self) -> Option<(u64, u64)> {
        self.dir_identity
    }

    /// Lists the directory, re-reads new and changed files, and returns a
    /// fresh set when anything differs from the last poll.
    pub fn poll(&mut self) -> Poll {
        let listing = match self.list() {
            Ok(listing) => listing,
            Err(e) => {
                return Poll::Unavailable(ManifestError {
                    path: self.dir.clone(),
                    location: None,
                    reason: Reason::Read(e.to_string()),
                });
            }
        };
        let mut changed = self.generation == 0 || listing.len() != self.files.len();
        let mut files = BTreeMap::new();
        for (name, (path, stamp)) in listing {
            let cached = self.files.remove(&name).filter(|c| c.stamp == stamp);
            let entry = match cached {
                Some(c) => c,
                None => {
                    changed = true;
                    let parsed = match &stamp {
                        Stamp::Ok(_) => read_file(&path),
                        Stamp::Err(e) => unreadable(&path, e.clone()),
                    };
                    CachedFile {
                        parsed: Arc::new(parsed),
                        path,
                        stamp,
                    }
                }
            };
            files.insert(name, entry);
        }
        // Whatever is left in the old cache was deleted.
        changed |= !self.files.is_empty();
        self.files = files;
        if !changed {
            return Poll::Unchanged;
        }
        self.generation += 1;
        let (snapshot, errors) = assemble(
            self.files
                .values()
                .map(|c| (c.path.as_path(), c.parsed.as_ref())),
        );
        Poll::Changed(ManifestSet {
            snapshot,
            errors,
            files: self.files.len(),
            documents: self.files.values().map(|c| c.parsed.documents).sum(),
            generation: self.generation,
        })
    }

    /// Manifest files by name, with their fingerprints.
    fn list(&mut self) -> io::Result<BTreeMap<OsString, (PathBuf, Stamp)>> {
        let dir_meta = std::fs::metadata(&self.dir)?;
        if !dir_meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            ));
        }
        let mut listing = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let path = entry.path();
            if Format::of(&path).is_none() {
                continue;
            }
            // Through symlinks; a file that vanished since the listing (or
            // a dangling link) is simply not there.
            let stamp = match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => Stamp::Ok(Fingerprint::of(&meta)),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => Stamp::Err(e.to_string()),
            };
            listing.insert(name, (path, stamp));
        }
        self.dir_identity = Some((dir_meta.dev(), dir_meta.ino()));
        Ok(listing)
    }
}

/// Reads and parses one file; a read failure becomes the file's error.
fn read_file(path: &Path) -> ParsedFile {
    match std::fs::read(path) {
        Ok(bytes) => parse_file(path, &bytes),
        Err(e) => unreadable(path, e.to_string()),
    }
}

fn unreadable(path: &Path, error: String) -> ParsedFile {
    ParsedFile {
        errors: vec![ManifestError {
            path: path.to_path_buf(),
            location: None,
            reason: Reason::Read(error),
        }],
        ..ParsedFile::default()
    }
}
