//! The manifest watcher publishes every kind of directory change: create,
//! edit, delete, rename, atomic rename-over, and the directory itself
//! being replaced. Each change must arrive; how long it took is printed
//! (the bound is 1 s), never asserted.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use weir_agent::manifests::{ManifestSet, ManifestWatcher, WatchConfig};

/// Long enough that only a change that never arrives fails the test.
const NEVER: Duration = Duration::from_secs(20);

fn ns(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n")
}

fn names(set: &ManifestSet) -> Vec<String> {
    set.snapshot
        .namespaces
        .keys()
        .map(|k| k.name.clone())
        .collect()
}

/// Waits until the published set has exactly `want`; prints the delay.
fn expect(rx: &mut watch::Receiver<Arc<ManifestSet>>, step: &str, want: &[&str]) {
    let started = Instant::now();
    loop {
        let set = rx.borrow_and_update().clone();
        if names(&set) == want {
            println!("{step}: seen after {} ms", started.elapsed().as_millis());
            return;
        }
        assert!(
            started.elapsed() < NEVER,
            "{step}: still {:?} after {NEVER:?}, want {want:?}",
            names(&set)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn write_atomically(dir: &Path, name: &str, text: &str) {
    weir_lab::write_atomic(dir, name, text).unwrap();
}

#[test]
fn every_directory_change_is_published() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("manifests");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("a.yaml"), ns("a")).unwrap();

    let (watcher, mut rx) = ManifestWatcher::start(&dir, WatchConfig::default()).unwrap();
    assert_eq!(
        names(&rx.borrow_and_update()),
        vec!["a"],
        "the first load is there at once"
    );

    fs::write(dir.join("b.yaml"), ns("b")).unwrap();
    expect(&mut rx, "create", &["a", "b"]);

    fs::write(dir.join("b.yaml"), ns("c")).unwrap();
    expect(&mut rx, "edit in place", &["a", "c"]);

    fs::rename(dir.join("b.yaml"), dir.join("b2.json.yaml")).unwrap();
    fs::rename(dir.join("a.yaml"), dir.join("a.txt")).unwrap();
    expect(&mut rx, "rename (in and out of the pattern)", &["c"]);

    write_atomically(&dir, "b2.json.yaml", &ns("d"));
    expect(&mut rx, "atomic rename-over", &["d"]);

    fs::write(
        dir.join("bad.yaml"),
        "kind: [\n---\n".to_string() + &ns("e"),
    )
    .unwrap();
    expect(&mut rx, "a file with a bad document", &["d", "e"]);
    assert_eq!(rx.borrow().errors.len(), 1);

    fs::remove_file(dir.join("b2.json.yaml")).unwrap();
    expect(&mut rx, "delete", &["e"]);

    // The directory replaced wholesale: staged, old one removed, renamed in.
    let staged = base.path().join("staged");
    fs::create_dir(&staged).unwrap();
    fs::write(staged.join("f.yaml"), ns("f")).unwrap();
    fs::remove_dir_all(&dir).unwrap();
    fs::rename(&staged, &dir).unwrap();
    expect(&mut rx, "directory replaced", &["f"]);

    // The new directory is watched too.
    fs::write(dir.join("g.yaml"), ns("g")).unwrap();
    expect(&mut rx, "create in the replaced directory", &["f", "g"]);

    watcher.stop();
}

#[test]
fn a_directory_that_appears_later_is_read() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("later");
    let (watcher, mut rx) = ManifestWatcher::start(&dir, WatchConfig::default()).unwrap();
    {
        let first = rx.borrow_and_update();
        assert!(first.snapshot.is_empty());
        assert_eq!(first.errors.len(), 1, "the missing directory is reported");
    }
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("a.yaml"), ns("a")).unwrap();
    expect(&mut rx, "directory created", &["a"]);
    drop(watcher);
}

#[test]
fn a_swapped_directory_symlink_is_followed() {
    let base = tempfile::tempdir().unwrap();
    let real = base.path().join("v1");
    fs::create_dir(&real).unwrap();
    fs::write(real.join("a.yaml"), ns("a")).unwrap();
    let link = base.path().join("current");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (watcher, mut rx) = ManifestWatcher::start(&link, WatchConfig::default()).unwrap();
    assert_eq!(names(&rx.borrow_and_update()), vec!["a"]);

    let v2 = base.path().join("v2");
    fs::create_dir(&v2).unwrap();
    fs::write(v2.join("b.yaml"), ns("b")).unwrap();
    let tmp = base.path().join("current.tmp");
    std::os::unix::fs::symlink(&v2, &tmp).unwrap();
    fs::rename(&tmp, &link).unwrap();
    expect(&mut rx, "symlinked directory swapped", &["b"]);

    // Edits in the new target are seen too (the watch moved with it).
    fs::write(v2.join("c.yaml"), ns("c")).unwrap();
    expect(&mut rx, "create in the new target", &["b", "c"]);
    watcher.stop();
}

#[test]
fn polling_alone_sees_changes() {
    let config = WatchConfig {
        inotify: false,
        ..WatchConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let (watcher, mut rx) = ManifestWatcher::start(dir.path(), config).unwrap();
    fs::write(dir.path().join("a.yaml"), ns("a")).unwrap();
    expect(&mut rx, "create, polling only", &["a"]);
    write_atomically(dir.path(), "a.yaml", &ns("b"));
    expect(&mut rx, "rename-over, polling only", &["b"]);
    watcher.stop();
}
