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
use std::ffi::{OsStr, OsString};
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
        let mut stale = Vec::new();
        for (name, (path, stamp)) in listing {
            match self.files.remove(&name).filter(|c| c.stamp == stamp) {
                Some(cached) => {
                    files.insert(name, cached);
                }
                None => stale.push((name, path, stamp)),
            }
        }
        changed |= !stale.is_empty();
        files.extend(read_all(stale));
        // Whatever is left in the old cache was deleted.
        changed |= !self.files.is_empty();
        self.files = files;
        if !changed {
            return Poll::Unchanged;
        }
        self.publish()
    }

    /// Re-checks only the named files (as inotify reported them): cheaper
    /// than [`Self::poll`] in a large directory. Names that are not
    /// manifest files are ignored; a file gone is dropped.
    pub fn poll_names(&mut self, names: &[OsString]) -> Poll {
        if self.generation == 0 {
            return self.poll();
        }
        let mut changed = false;
        let mut stale = Vec::new();
        for name in names {
            let path = self.dir.join(name);
            if !is_manifest_name(name, &path) {
                continue;
            }
            match stamp_of(&path) {
                None => changed |= self.files.remove(name).is_some(),
                Some(stamp) => {
                    if self.files.get(name).is_none_or(|c| c.stamp != stamp) {
                        stale.push((name.clone(), path, stamp));
                    }
                }
            }
        }
        changed |= !stale.is_empty();
        self.files.extend(read_all(stale));
        if !changed {
            return Poll::Unchanged;
        }
        self.publish()
    }

    /// A set from the cached files, as a new generation.
    fn publish(&mut self) -> Poll {
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
            let path = entry.path();
            if !is_manifest_name(&name, &path) {
                continue;
            }
            if let Some(stamp) = stamp_of(&path) {
                listing.insert(name, (path, stamp));
            }
        }
        self.dir_identity = Some((dir_meta.dev(), dir_meta.ino()));
        Ok(listing)
    }
}

/// `*.yaml`, `*.yml` or `*.json`, not hidden.
fn is_manifest_name(name: &OsStr, path: &Path) -> bool {
    !name.as_encoded_bytes().starts_with(b".") && Format::of(path).is_some()
}

/// The fingerprint of a regular file, through symlinks; `None` when it is
/// not there (vanished since the listing, a dangling link) or not a file.
fn stamp_of(path: &Path) -> Option<Stamp> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Some(Stamp::Ok(Fingerprint::of(&meta))),
        Ok(_) => None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => Some(Stamp::Err(e.to_string())),
    }
}

/// Files read together: beyond this many the work is split across threads
/// (a first load of 10k files is CPU-bound parsing).
const PARALLEL_FILES: usize = 64;

/// Reads and parses files, on up to `available_parallelism` threads when
/// there are many.
fn read_all(stale: Vec<(OsString, PathBuf, Stamp)>) -> Vec<(OsString, CachedFile)> {
    let read = |(name, path, stamp): (OsString, PathBuf, Stamp)| {
        let parsed = match &stamp {
            Stamp::Ok(_) => read_file(&path),
            Stamp::Err(e) => unreadable(&path, e.clone()),
        };
        let cached = CachedFile {
            parsed: Arc::new(parsed),
            path,
            stamp,
        };
        (name, cached)
    };
    if stale.len() < PARALLEL_FILES {
        return stale.into_iter().map(read).collect();
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let chunk_len = stale.len().div_ceil(threads);
    let mut chunks: Vec<Vec<_>> = Vec::new();
    let mut rest = stale.into_iter();
    loop {
        let chunk: Vec<_> = rest.by_ref().take(chunk_len).collect();
        if chunk.is_empty() {
            break;
        }
        chunks.push(chunk);
    }
    let read = &read;
    std::thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                // Names kept aside: a worker that panics (the parsers are
                // proptested panic-free) still leaves its files reported.
                let names: Vec<(OsString, PathBuf)> = chunk
                    .iter()
                    .map(|(n, p, _)| (n.clone(), p.clone()))
                    .collect();
                (
                    names,
                    scope.spawn(move || chunk.into_iter().map(read).collect::<Vec<_>>()),
                )
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|(names, worker)| {
                worker.join().unwrap_or_else(|_| {
                    names
                        .into_iter()
                        .map(|(name, path)| {
                            let parsed =
                                unreadable(&path, "internal error: the parser failed".into());
                            let cached = CachedFile {
                                parsed: Arc::new(parsed),
                                path,
                                stamp: Stamp::Err("parser failed".into()),
                            };
                            (name, cached)
                        })
                        .collect()
                })
            })
            .collect()
    })
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn service(name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: d}}\n\
             spec: {{clusterIP: 10.96.0.1, ports: [{{port: 80}}]}}\n"
        )
    }

    fn set(poll: Poll) -> ManifestSet {
        match poll {
            Poll::Changed(set) => set,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn polling_named_files_matches_a_full_poll() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for i in 0..3 {
            std::fs::write(d.join(format!("s{i}.yaml")), service(&format!("s{i}"))).unwrap();
        }
        let mut loader = DirLoader::new(d);
        assert_eq!(set(loader.poll()).snapshot.services.len(), 3);

        std::fs::write(d.join("s1.yaml"), service("renamed")).unwrap();
        std::fs::remove_file(d.join("s2.yaml")).unwrap();
        std::fs::write(d.join("s3.yaml"), service("s3")).unwrap();
        std::fs::write(d.join(".hidden.yaml"), service("hidden")).unwrap();
        let names: Vec<OsString> = ["s1.yaml", "s2.yaml", "s3.yaml", ".hidden.yaml", "x.txt"]
            .map(OsString::from)
            .to_vec();
        let by_name = set(loader.poll_names(&names));
        assert!(matches!(loader.poll_names(&names), Poll::Unchanged));
        assert!(matches!(loader.poll(), Poll::Unchanged));

        let full = set(DirLoader::new(d).poll());
        assert_eq!(by_name.snapshot, full.snapshot);
        assert_eq!(by_name.files, 3);
        let services: Vec<&str> = full
            .snapshot
            .services
            .keys()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(services, ["renamed", "s0", "s3"]);
    }

    #[test]
    fn many_files_are_read_in_parallel_with_the_same_result() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for i in 0..PARALLEL_FILES * 2 + 1 {
            std::fs::write(
                d.join(format!("s{i:03}.yaml")),
                service(&format!("s{i:03}")),
            )
            .unwrap();
        }
        std::fs::write(d.join("bad.yaml"), "kind: [").unwrap();
        let set = set(DirLoader::new(d).poll());
        assert_eq!(set.snapshot.services.len(), PARALLEL_FILES * 2 + 1);
        assert_eq!(set.files, PARALLEL_FILES * 2 + 2);
        assert_eq!(set.errors.len(), 1);
        assert!(set.errors[0].path.ends_with("bad.yaml"));
    }
}
