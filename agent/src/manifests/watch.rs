//! Watching the manifest directory: a fresh [`ManifestSet`] per change.
//!
//! Two triggers, one code path. inotify (through `notify`) on the directory
//! and on its parent wakes the watcher at once; after a short quiet period
//! (editors and `kubectl`-style writers touch files several times) it
//! re-polls the [`DirLoader`], which re-reads only changed files. A timer
//! re-polls every `poll_interval` as well, which covers what inotify
//! cannot see: a directory replaced under its path (re-armed on the next
//! poll), a symlinked directory swapped, network and overlay filesystems,
//! a full inotify queue. Polling is cheap when nothing changed: one
//! listing and one `stat` per file.
//!
//! The watcher runs on its own thread (parsing 100k documents must not
//! stall the async runtime) and publishes through a
//! `tokio::sync::watch` channel, which keeps only the latest set.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::watch;

use super::dir::{DirLoader, ManifestSet, Poll};

#[derive(Clone, Copy, Debug)]
pub struct WatchConfig {
    /// Re-poll at least this often (the bound when inotify misses).
    pub poll_interval: Duration,
    /// After an inotify event, wait until none came for this long...
    pub quiet: Duration,
    /// ...but no longer than this.
    pub max_delay: Duration,
    /// Use inotify for prompt wake-ups; off, changes are seen by polling
    /// only.
    pub inotify: bool,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(250),
            quiet: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            inotify: true,
        }
    }
}

enum Wake {
    Fs,
    Stop,
}

/// Handle of the watcher thread; dropping it stops the thread.
pub struct ManifestWatcher {
    wake: mpsc::Sender<Wake>,
    thread: Option<JoinHandle<()>>,
}

impl ManifestWatcher {
    /// Loads `dir` once (the receiver starts with that set, so the caller
    /// can program the first full sync right away), then watches it.
    ///
    /// A missing or unreadable directory is not fatal: the first set is
    /// empty and carries the error, and the watcher keeps looking. Later
    /// on, an unavailable directory keeps the last set in force.
    pub fn start(
        dir: &Path,
        config: WatchConfig,
    ) -> io::Result<(Self, watch::Receiver<Arc<ManifestSet>>)> {
        // Absolute but not canonical: DIR may be a symlink that gets swapped.
        let dir = std::path::absolute(dir)?;
        let mut loader = DirLoader::new(dir.clone());
        let first = match loader.poll() {
            Poll::Changed(set) => set,
            Poll::Unchanged => ManifestSet::default(),
            Poll::Unavailable(error) => {
                tracing::warn!(dir = %dir.display(), %error, "manifest directory unavailable; watching for it");
                ManifestSet {
                    errors: vec![error],
                    ..ManifestSet::default()
                }
            }
        };
        let (publish, receiver) = watch::channel(Arc::new(first));

        let (wake, wakes) = mpsc::channel();
        let fs_wake = wake.clone();
        let event_dir = dir.clone();
        let inotify = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let relevant = match &event {
                Ok(e) => {
                    e.need_rescan()
                        || e.paths.is_empty()
                        || e.paths.iter().any(|p| p.starts_with(&event_dir))
                }
                Err(_) => true,
            };
            if relevant {
                // The watcher thread may be gone already; nothing to do then.
                let _ = fs_wake.send(Wake::Fs);
            }
        });
        let inotify = match inotify {
            Ok(_) if !config.inotify => None,
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "inotify unavailable; polling only");
                None
            }
        };
        let mut state = WatchState {
            loader,
            inotify,
            armed: None,
            config,
            publish,
            unavailable: false,
        };
        // Armed before returning, so no change after `start` is missed by
        // inotify (the poll would still catch it, later).
        state.arm();
        let thread = std::thread::Builder::new()
            .name("weir-manifests".into())
            .spawn(move || state.run(wakes))?;
        Ok((
            Self {
                wake,
                thread: Some(thread),
            },
            receiver,
        ))
    }

    /// Stops the watcher and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.wake.send(Wake::Stop);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("manifest watcher thread panicked");
        }
    }
}

impl Drop for ManifestWatcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct WatchState {
    loader: DirLoader,
    inotify: Option<RecommendedWatcher>,
    /// Directory identity the inotify watch was set up for.
    armed: Option<(u64, u64)>,
    config: WatchConfig,
    publish: watch::Sender<Arc<ManifestSet>>,
    /// The directory was unavailable at the last poll (log once).
    unavailable: bool,
}

impl WatchState {
    fn run(mut self, wakes: mpsc::Receiver<Wake>) {
        loop {
            match wakes.recv_timeout(self.config.poll_interval) {
                Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Wake::Fs) => {
                    if !self.settle(&wakes) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.poll();
        }
    }

    /// Waits for a quiet moment after an event; false when told to stop.
    fn settle(&self, wakes: &mpsc::Receiver<Wake>) -> bool {
        let deadline = Instant::now() + self.config.max_delay;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            match wakes.recv_timeout(self.config.quiet.min(left)) {
                Ok(Wake::Fs) => {}
                Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return false,
                Err(RecvTimeoutError::Timeout) => return true,
            }
        }
    }

    fn poll(&mut self) {
        let started = Instant::now();
        let outcome = self.loader.poll();
        // Re-armed before publishing, so a change made right after a
        // reader saw the new set is not missed by inotify.
        if self.loader.dir_identity() != self.armed {
            self.arm();
        }
        match outcome {
            Poll::Unchanged => {}
            Poll::Changed(set) => {
                self.unavailable = false;
                tracing::debug!(
                    dir = %self.loader.dir().display(),
                    generation = set.generation,
                    files = set.files,
                    objects = set.snapshot.counts().total(),
                    errors = set.errors.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "manifests reloaded"
                );
                self.publish.send_replace(Arc::new(set));
            }
            Poll::Unavailable(error) => {
                if !self.unavailable {
                    tracing::warn!(%error, "manifest directory unavailable; keeping the last objects");
                    self.unavailable = true;
                }
            }
        }
    }

    /// (Re)points inotify at the directory (it follows inodes, so a
    /// replaced directory needs a new watch) and at its parent (to see the
    /// directory appear, vanish or be renamed over).
    fn arm(&mut self) {
        let Some(inotify) = self.inotify.as_mut() else {
            return;
        };
        let dir = self.loader.dir().to_path_buf();
        // Both may fail harmlessly (not watched yet, directory missing);
        // polling covers the gap.
        let _ = inotify.unwatch(&dir);
        let dir_ok = inotify.watch(&dir, RecursiveMode::NonRecursive).is_ok();
        if self.armed.is_none()
            && let Some(parent) = dir.parent().map(PathBuf::from)
        {
            let _ = inotify.watch(&parent, RecursiveMode::NonRecursive);
        }
        self.armed = if dir_ok {
            self.loader.dir_identity()
        } else {
            None
        };
    }
}
