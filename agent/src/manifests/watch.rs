//! Watching the manifest directory: a fresh [`ManifestSet`] per change.
//!
//! Two triggers, one code path. inotify (through `notify`) on the directory
//! and on its parent wakes the watcher at once; after a short quiet period
//! (editors and `kubectl`-style writers touch files several times; a file
//! renamed into place or closed after writing needs none) it re-checks the
//! files the events named, and re-reads those that changed. A timer
//! re-polls every `poll_interval` as well, which covers what inotify
//! cannot see: a directory replaced under its path (re-armed on the next
//! poll), a symlinked directory swapped, network and overlay filesystems,
//! a full inotify queue. Polling is cheap when nothing changed: one
//! listing and one `stat` per file. For a large directory even that adds
//! up (10k files: tens of ms per poll), so the poll interval stretches to
//! keep the safety net under 1/[`POLL_DUTY`] of a core; inotify still
//! delivers ordinary changes at once.
//!
//! The watcher runs on its own thread (parsing 100k documents must not
//! stall the async runtime) and publishes through a
//! `tokio::sync::watch` channel, which keeps only the latest set.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::watch;

use super::dir::{DirLoader, ManifestSet, Poll};

#[derive(Clone, Copy, Debug)]
pub struct WatchConfig {
    /// Re-poll at least this often (the bound when inotify misses).
    pub poll_interval: Duration,
    /// After an inotify event, wait until none came for this long...
    pub quiet: Duration,
    /// ...or only this long once every file named was written completely
    /// (renamed into place, closed after writing, removed).
    pub quiet_finished: Duration,
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
            quiet_finished: Duration::from_millis(2),
            max_delay: Duration::from_millis(100),
            inotify: true,
        }
    }
}

/// A full poll that found nothing costs at most 1/`POLL_DUTY` of the time
/// between polls.
const POLL_DUTY: u32 = 20;

fn stretched_interval(configured: Duration, idle_poll_cost: Duration) -> Duration {
    configured.max(idle_poll_cost.saturating_mul(POLL_DUTY))
}

enum Wake {
    /// Files of the directory changed: their names, or `None` when
    /// anything may have (the directory itself, a rescan, an error).
    Fs(Option<Vec<Touched>>),
    Stop,
}

/// A file an event named, and whether that event finished a write: a
/// rename into place, a close after writing, a removal. Once every named
/// file is finished there is no writer to wait for.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Touched {
    name: OsString,
    finished: bool,
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
            if let Some(wake) = wake_for(&event_dir, event) {
                // The watcher thread may be gone already; nothing to do then.
                let _ = fs_wake.send(wake);
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
            idle_poll_cost: Duration::ZERO,
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

/// What an inotify event asks of the watcher thread: nothing (hidden
/// files, such as atomic writers' temporaries, and other entries of the
/// parent), a look at the files it names, or a full poll.
fn wake_for(dir: &Path, event: notify::Result<notify::Event>) -> Option<Wake> {
    let Ok(event) = event else {
        return Some(Wake::Fs(None));
    };
    if event.need_rescan() || event.paths.is_empty() {
        return Some(Wake::Fs(None));
    }
    // Opens and reads change nothing, and our own polls cause them (the
    // listing opens the directory): waking on them would poll forever.
    if matches!(event.kind, EventKind::Access(access)
        if access != AccessKind::Close(AccessMode::Write))
    {
        return None;
    }
    let finished = matches!(
        event.kind,
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Remove(_)
    );
    let mut names = Vec::new();
    for path in &event.paths {
        if path == dir || dir.starts_with(path) {
            // The directory itself (or a parent on the way) moved or went.
            return Some(Wake::Fs(None));
        }
        match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) if parent == dir => {
                let bytes = name.as_encoded_bytes();
                if bytes.starts_with(b"..") {
                    // A ConfigMap volume swapping its `..data` link: the
                    // visible files change through it.
                    return Some(Wake::Fs(None));
                }
                if !bytes.starts_with(b".") {
                    names.push(Touched {
                        name: name.to_os_string(),
                        finished,
                    });
                }
            }
            _ if path.starts_with(dir) => return Some(Wake::Fs(None)),
            _ => {}
        }
    }
    (!names.is_empty()).then_some(Wake::Fs(Some(names)))
}

fn finished_by_name(touched: Vec<Touched>) -> BTreeMap<OsString, bool> {
    touched.into_iter().map(|t| (t.name, t.finished)).collect()
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
    /// What the last full poll that found nothing cost.
    idle_poll_cost: Duration,
}

impl WatchState {
    fn run(mut self, wakes: mpsc::Receiver<Wake>) {
        let mut next_full = Instant::now() + self.config.poll_interval;
        loop {
            let left = next_full.saturating_duration_since(Instant::now());
            let names = match wakes.recv_timeout(left) {
                Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Wake::Fs(names)) => match self.settle(&wakes, names) {
                    Some(names) => names,
                    None => return,
                },
                Err(RecvTimeoutError::Timeout) => None,
            };
            let full = names.is_none();
            self.poll(names.as_deref());
            if full {
                next_full = Instant::now() + self.poll_interval();
            }
        }
    }

    /// Waits for a quiet moment after an event, merging the names of what
    /// changed meanwhile (`None`: poll everything); `None` when told to
    /// stop.
    fn settle(
        &self,
        wakes: &mpsc::Receiver<Wake>,
        touched: Option<Vec<Touched>>,
    ) -> Option<Option<Vec<OsString>>> {
        let deadline = Instant::now() + self.config.max_delay;
        // The latest event per name decides whether a writer may be busy.
        let mut names: Option<BTreeMap<OsString, bool>> = touched.map(finished_by_name);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let all_finished = names.as_ref().is_some_and(|n| n.values().all(|f| *f));
            let quiet = if all_finished {
                self.config.quiet_finished
            } else {
                self.config.quiet
            };
            match wakes.recv_timeout(quiet.min(left)) {
                Ok(Wake::Fs(more)) => match (names.as_mut(), more) {
                    (Some(names), Some(more)) => names.extend(finished_by_name(more)),
                    _ => names = None,
                },
                Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        Some(names.map(|n| n.into_keys().collect()))
    }

    /// Re-reads what changed: the named files, or everything.
    /// The configured interval, stretched for a directory whose idle poll
    /// is expensive.
    fn poll_interval(&self) -> Duration {
        stretched_interval(self.config.poll_interval, self.idle_poll_cost)
    }

    fn poll(&mut self, names: Option<&[OsString]>) {
        let started = Instant::now();
        let outcome = match names {
            Some(names) => self.loader.poll_names(names),
            None => self.loader.poll(),
        };
        if names.is_none() && matches!(outcome, Poll::Unchanged) {
            self.idle_poll_cost = started.elapsed();
        }
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
                    full = names.is_none(),
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

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, RemoveKind};
    use notify::{Event, EventKind};

    use super::*;

    fn wake(kind: EventKind, paths: &[&str]) -> Option<Wake> {
        let mut event = Event::new(kind);
        for p in paths {
            event = event.add_path(PathBuf::from(p));
        }
        wake_for(Path::new("/m"), Ok(event))
    }

    fn touched(name: &str, finished: bool) -> Touched {
        Touched {
            name: name.into(),
            finished,
        }
    }

    fn names(wake: Option<Wake>) -> Option<Option<Vec<Touched>>> {
        match wake {
            Some(Wake::Fs(names)) => Some(names),
            Some(Wake::Stop) => panic!("a stop"),
            None => None,
        }
    }

    #[test]
    fn opening_or_reading_wakes_nothing() {
        use notify::event::AccessKind::{Close, Open, Read};
        use notify::event::AccessMode::{Any, Read as ReadMode};
        for kind in [Open(Any), Read, Close(ReadMode)] {
            for path in ["/m", "/m/a.yaml"] {
                assert!(names(wake(EventKind::Access(kind), &[path])).is_none());
            }
        }
        let closed = wake(EventKind::Access(Close(AccessMode::Write)), &["/m/a.yaml"]);
        assert!(names(closed).is_some());
    }

    #[test]
    fn the_safety_poll_stretches_only_for_expensive_directories() {
        let configured = Duration::from_millis(250);
        let small = stretched_interval(configured, Duration::from_micros(300));
        assert_eq!(small, configured);
        let large = stretched_interval(configured, Duration::from_millis(60));
        assert_eq!(large, Duration::from_millis(60) * POLL_DUTY);
    }

    #[test]
    fn events_name_the_files_and_whether_their_write_finished() {
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert_eq!(
            names(wake(rename, &["/m/.a.yaml.tmp", "/m/a.yaml"])),
            Some(Some(vec![touched("a.yaml", true)])),
            "an atomic write: the temporary is not looked at"
        );
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert_eq!(
            names(wake(data, &["/m/a.yaml"])),
            Some(Some(vec![touched("a.yaml", false)]))
        );
        let close = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert_eq!(
            names(wake(close, &["/m/a.yaml"])),
            Some(Some(vec![touched("a.yaml", true)]))
        );
        let removed = EventKind::Remove(RemoveKind::File);
        assert_eq!(
            names(wake(removed, &["/m/a.yaml"])),
            Some(Some(vec![touched("a.yaml", true)]))
        );
    }

    #[test]
    fn hidden_files_and_siblings_are_ignored_the_directory_itself_polls_all() {
        let created = EventKind::Create(CreateKind::File);
        assert_eq!(names(wake(created, &["/m/.a.yaml.tmp"])), None);
        assert_eq!(names(wake(created, &["/other/a.yaml"])), None);
        assert_eq!(names(wake(created, &["/m"])), Some(None));
        assert_eq!(names(wake(created, &["/"])), Some(None));
        assert_eq!(
            names(wake(created, &["/m/..data"])),
            Some(None),
            "a ConfigMap volume swapping its data"
        );
        assert_eq!(names(wake(created, &["/m/sub/a.yaml"])), Some(None));
        assert_eq!(
            names(wake_for(Path::new("/m"), Err(notify::Error::generic("x")))),
            Some(None)
        );
    }
}
