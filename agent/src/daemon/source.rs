//! The standalone source: the manifest directory watcher behind the
//! [`Source`] seam. The in-cluster source lives in [`super::cluster`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tracing::{info, warn};

use super::seams::{Source, SourceView};
use crate::manifests::{ManifestSet, ManifestWatcher, WatchConfig};

/// `--manifests DIR`.
pub struct ManifestSource {
    _watcher: ManifestWatcher,
    dir: PathBuf,
    rx: watch::Receiver<Arc<ManifestSet>>,
    /// Bad documents already logged (by their description), so a bad file
    /// is reported when it appears, not at every reload.
    logged: HashSet<String>,
}

impl ManifestSource {
    /// Reads the directory once and starts watching it.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let (watcher, rx) = ManifestWatcher::start(dir, WatchConfig::default()).map_err(|e| {
            anyhow::anyhow!("watching the manifest directory {}: {e}", dir.display())
        })?;
        Ok(Self {
            _watcher: watcher,
            dir: std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()),
            rx,
            logged: HashSet::new(),
        })
    }
}

impl Source for ManifestSource {
    async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }

    fn current(&mut self) -> SourceView {
        let set = self.rx.borrow_and_update().clone();
        let mut now = HashSet::with_capacity(set.errors.len());
        for error in &set.errors {
            let text = error.to_string();
            if !self.logged.contains(&text) {
                match error.location {
                    Some(location) => warn!(
                        file = %error.path.display(),
                        document = location.document,
                        item = location.item,
                        line = location.line,
                        reason = %error.reason,
                        code = error.reason.code(),
                        "skipping a bad manifest document"
                    ),
                    // The directory itself: the watcher reports that.
                    None if error.path == self.dir => {}
                    None => warn!(
                        file = %error.path.display(),
                        reason = %error.reason,
                        code = error.reason.code(),
                        "skipping a bad manifest file"
                    ),
                }
            }
            now.insert(text);
        }
        self.logged = now;
        if set.generation > 0 {
            info!(
                generation = set.generation,
                files = set.files,
                documents = set.documents,
                objects = set.snapshot.counts().total(),
                bad_documents = set.errors.len(),
                "manifests loaded"
            );
        }
        // The directory itself being unreadable is not a bad document.
        let mut bad_documents = std::collections::BTreeMap::new();
        for error in set.errors.iter().filter(|e| e.path != self.dir) {
            *bad_documents.entry(error.reason.code()).or_default() += 1;
        }
        SourceView {
            bad_documents,
            // Generation 0 is the placeholder of a directory that could not
            // be read yet: not the whole truth, never to be applied.
            synced: set.generation > 0,
            generation: set.generation,
            objects: set,
        }
    }
}
