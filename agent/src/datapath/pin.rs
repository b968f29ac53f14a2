//! Pin layout under `--bpffs DIR`, and the checks that keep a restarted
//! agent from misreading a pinned map:
//!
//! ```text
//! DIR/weir_<what>_v<N>        every map of the object, pinned by its full name
//! DIR/links/<hook>-<id>-<dir> one bpf_link per attachment (see attach.rs)
//! ```
//!
//! Before loading, a pinned map whose layout (type, key/value size,
//! capacity, flags) differs from the object's is set aside: its pin is
//! removed so the loader creates a fresh map, and when only the capacity
//! changed its entries are copied over afterwards. After loading, pins of
//! maps the object no longer declares (older `_vN` names) are removed.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
};

use tracing::{info, warn};

use super::{
    error::{DatapathError, DatapathResult},
    object::{MAP_PREFIX, MapSpec},
    sys,
};

/// Where each pinned object lives.
#[derive(Clone, Debug)]
pub struct PinLayout {
    root: PathBuf,
}

impl PinLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn link(&self, name: &str) -> PathBuf {
        self.links_dir().join(name)
    }
}

/// A pinned map set aside because its layout changed.
#[derive(Debug)]
pub struct Replaced {
    pub name: String,
    pub old: MapSpec,
    /// Keeps the old map alive until its entries are copied.
    pub old_fd: OwnedFd,
    /// Only the capacity changed: copy the entries into the new map.
    pub migrate: bool,
}

/// The layout of the map pinned at `path`, with its fd.
pub fn pinned_spec(name: &str, path: &Path) -> DatapathResult<(OwnedFd, MapSpec)> {
    let fd = sys::obj_get(path).map_err(|e| DatapathError::sys("BPF_OBJ_GET", name, e))?;
    let info = sys::map_info(fd.as_fd())
        .map_err(|e| DatapathError::sys("BPF_OBJ_GET_INFO_BY_FD", name, e))?;
    let spec = MapSpec {
        name: name.to_string(),
        map_type: info.map_type,
        key_size: info.key_size,
        value_size: info.value_size,
        max_entries: info.max_entries,
        flags: info.map_flags,
    };
    Ok((fd, spec))
}

/// Sets aside every pinned map whose layout differs from `specs`.
pub fn reconcile_maps(
    layout: &PinLayout,
    specs: &BTreeMap<String, MapSpec>,
) -> DatapathResult<Vec<Replaced>> {
    let mut replaced = Vec::new();
    for (name, want) in specs {
        let path = layout.map(name);
        if !path.exists() {
            continue;
        }
        let (old_fd, old) = match pinned_spec(name, &path) {
            Ok(found) => found,
            Err(e) => {
                // Not a map (or unreadable): nothing we could adopt.
                warn!(map = %name, path = %path.display(), error = %e,
                      "pin is not a readable map; replacing it");
                remove_pin(&path)?;
                continue;
            }
        };
        let Some(diff) = want.mismatch(&old) else {
            continue;
        };
        let migrate = want.migratable_from(&old);
        warn!(map = %name, difference = %diff, migrate,
              "pinned map has a different layout; replacing it deliberately");
        remove_pin(&path)?;
        replaced.push(Replaced {
            name: name.clone(),
            old,
            old_fd,
            migrate,
        });
    }
    Ok(replaced)
}

/// Copies the entries of set-aside maps into their new pinned maps.
pub fn migrate(layout: &PinLayout, replaced: &[Replaced], specs: &BTreeMap<String, MapSpec>) {
    for r in replaced.iter().filter(|r| r.migrate) {
        let Some(spec) = specs.get(&r.name) else {
            continue;
        };
        let result = sys::obj_get(&layout.map(&r.name)).and_then(|new_fd| {
            sys::copy_hash_entries(
                r.old_fd.as_fd(),
                new_fd.as_fd(),
                spec.key_size as usize,
                spec.value_size as usize,
                u64::from(r.old.max_entries),
            )
        });
        match result {
            Ok((copied, failed)) => info!(map = %r.name, copied, failed,
                                          from = r.old.max_entries, to = spec.max_entries,
                                          "migrated the entries of a resized map"),
            Err(e) => warn!(map = %r.name, error = %e,
                            "could not migrate the entries of a resized map; it starts empty"),
        }
    }
}

/// Removes pins of `weir_*` maps the object no longer declares (other
/// versions). Returns their names.
pub fn remove_stale_maps(
    layout: &PinLayout,
    specs: &BTreeMap<String, MapSpec>,
) -> DatapathResult<Vec<String>> {
    let root = layout.root();
    let entries = std::fs::read_dir(root).map_err(|e| DatapathError::io("reading", root, e))?;
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if !is_file || !name.starts_with(MAP_PREFIX) || specs.contains_key(&name) {
            continue;
        }
        info!(pin = %name, "removing the pin of a map this version no longer uses");
        remove_pin(&entry.path())?;
        removed.push(name);
    }
    removed.sort();
    Ok(removed)
}

pub fn remove_pin(path: &Path) -> DatapathResult<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DatapathError::io("removing pin", path, e)),
    }
}
