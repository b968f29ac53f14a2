//! host-local's on-disk store, file for file:
//!
//! ```text
//! <dataDir>/<network>/lock                  flock(LOCK_EX) serialises writers
//! <dataDir>/<network>/<ip>                  "CONTAINERID\r\nIFNAME", created with O_EXCL
//! <dataDir>/<network>/last_reserved_ip.<N>  last address handed out from range set N
//! ```
//!
//! Durability: every write is complete before the call returns (the page
//! cache survives any crash of the plugin itself), `last_reserved_ip.N` is
//! replaced atomically, and a reservation file is only left behind with its
//! full content. Like host-local there is no fsync: the only thing it would
//! protect against is a kernel crash or power loss, and that ends every pod
//! on the node too, so no running pod can lose its reservation. (An fsync
//! of file and directory costs ~6 ms per ADD on a VM disk.)

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::store::{Attachment, Reservation, Store, StoreError};

const LINE_BREAK: &str = "\r\n";
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const LOCK_FILE: &str = "lock";

#[derive(Debug)]
enum LockState {
    Unlocked(File),
    Locked(Flock<File>),
    /// Only while switching states, or after an unlock failure.
    Broken,
}

#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
    lock: LockState,
}

impl DiskStore {
    /// Opens (creating if needed) `<data_dir>/<network>` and its lock file.
    /// `network` must already be validated as a plain name (no '/').
    pub fn open(data_dir: &Path, network: &str) -> Result<Self, StoreError> {
        if network.is_empty() || network.contains('/') || network.starts_with('.') {
            return Err(StoreError::Misuse(format!(
                "network name {network:?} cannot be a directory name"
            )));
        }
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("create directory", &dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| StoreError::io("open lock file", &lock_path, e))?;
        Ok(Self {
            dir,
            lock: LockState::Unlocked(lock_file),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ip_path(&self, ip: Ipv4Addr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    fn last_reserved_path(&self, range_set: usize) -> PathBuf {
        self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}"))
    }

    /// Writes `last_reserved_ip.N` atomically (temp file + rename), so a
    /// reader never sees a half-written address.
    fn write_last_reserved(&self, ip: Ipv4Addr, range_set: usize) -> Result<(), StoreError> {
        let path = self.last_reserved_path(range_set);
        let tmp = self
            .dir
            .join(format!(".{LAST_RESERVED_PREFIX}{range_set}.tmp"));
        fs::write(&tmp, ip.to_string()).map_err(|e| StoreError::io("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| StoreError::io("rename into", &path, e))
    }

    /// All `(ip, owner)` files in the directory; other names are skipped.
    fn scan(&self) -> Result<Vec<Reservation>, StoreError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| StoreError::io("list", &self.dir, e))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("list", &self.dir, e))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let content = match fs::read_to_string(&path) {
                Ok(content) => content,
                // Released concurrently by a reader that did not lock.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("read", &path, e)),
            };
            found.push(Reservation {
                ip,
                owner: parse_owner(&content),
            });
        }
        found.sort();
        Ok(found)
    }
}

/// host-local's file content: the trimmed container id, CRLF, the ifname.
pub fn format_owner(owner: &Attachment) -> String {
    format!("{}{LINE_BREAK}{}", owner.container_id.trim(), owner.ifname)
}

/// Reads a reservation file; very old host-local files hold only the id.
pub fn parse_owner(content: &str) -> Attachment {
    let content = content.trim();
    match content.split_once(LINE_BREAK) {
        Some((id, ifname)) => Attachment::new(id.trim(), ifname.trim()),
        None => Attachment::new(content, ""),
    }
}

impl Store for DiskStore {
    fn lock(&mut self) -> Result<(), StoreError> {
        let lock_path = self.dir.join(LOCK_FILE);
        match std::mem::replace(&mut self.lock, LockState::Broken) {
            LockState::Unlocked(file) => match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(held) => {
                    self.lock = LockState::Locked(held);
                    Ok(())
                }
                Err((file, errno)) => {
                    self.lock = LockState::Unlocked(file);
                    Err(StoreError::io("lock", lock_path, errno.into()))
                }
            },
            other => {
                self.lock = other;
                Err(StoreError::Misuse(format!(
                    "lock {} taken twice or after a failed unlock",
                    lock_path.display()
                )))
            }
        }
    }

    fn unlock(&mut self) -> Result<(), StoreError> {
        match std::mem::replace(&mut self.lock, LockState::Broken) {
            LockState::Locked(held) => match held.unlock() {
                Ok(file) => {
                    self.lock = LockState::Unlocked(file);
                    Ok(())
                }
                Err((held, errno)) => {
                    self.lock = LockState::Locked(held);
                    Err(StoreError::io(
                        "unlock",
                        self.dir.join(LOCK_FILE),
                        errno.into(),
                    ))
                }
            },
            other => {
                self.lock = other;
                Ok(())
            }
        }
    }

    fn reserve(
        &mut self,
        owner: &Attachment,
        ip: Ipv4Addr,
        range_set: usize,
    ) -> Result<bool, StoreError> {
        let path = self.ip_path(ip);
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(StoreError::io("create", &path, e)),
        };
        if let Err(e) = file.write_all(format_owner(owner).as_bytes()) {
            // Never leave a half-written reservation behind.
            let _ = fs::remove_file(&path);
            return Err(StoreError::io("write", &path, e));
        }
        self.write_last_reserved(ip, range_set)?;
        Ok(true)
    }

    fn last_reserved_ip(&self, range_set: usize) -> Result<Option<Ipv4Addr>, StoreError> {
        let path = self.last_reserved_path(range_set);
        match fs::read_to_string(&path) {
            // A garbled hint only costs round-robin order, as in host-local.
            Ok(content) => Ok(content.trim().parse().ok()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("read", &path, e)),
        }
    }

    fn release_by_id(&mut self, owner: &Attachment) -> Result<Vec<Ipv4Addr>, StoreError> {
        let mut released = Vec::new();
        for reservation in self.scan()? {
            if reservation.owner == *owner {
                let path = self.ip_path(reservation.ip);
                match fs::remove_file(&path) {
                    Ok(()) => released.push(reservation.ip),
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io("remove", &path, e)),
                }
            }
        }
        Ok(released)
    }

    fn get_by_id(&self, owner: &Attachment) -> Result<Vec<Ipv4Addr>, StoreError> {
        Ok(self
            .scan()?
            .into_iter()
            .filter(|r| r.owner == *owner)
            .map(|r| r.ip)
            .collect())
    }

    fn reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        self.scan()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use super::*;
    use crate::ipam::store::lock;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, 1, last)
    }

    #[test]
    fn layout_and_content_match_host_local() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = DiskStore::open(tmp.path(), "weir").unwrap();
        let owner = Attachment::new("abc123", "eth0");
        assert!(lock(&mut store).unwrap().reserve(&owner, ip(5), 0).unwrap());
        let dir = tmp.path().join("weir");
        assert_eq!(fs::read(dir.join("10.244.1.5")).unwrap(), b"abc123\r\neth0");
        assert_eq!(
            fs::read(dir.join("last_reserved_ip.0")).unwrap(),
            b"10.244.1.5"
        );
        assert!(dir.join("lock").is_file());
        let mode = fs::metadata(dir.join("10.244.1.5")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
    }

    #[test]
    fn existing_file_blocks_reservation() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = DiskStore::open(tmp.path(), "weir").unwrap();
        // Written by someone else, e.g. Debian's host-local on the same dir.
        fs::write(tmp.path().join("weir/10.244.1.5"), "other\r\neth0").unwrap();
        let mut locked = lock(&mut store).unwrap();
        let owner = Attachment::new("abc123", "eth0");
        assert!(!locked.reserve(&owner, ip(5), 0).unwrap());
        assert_eq!(
            fs::read(tmp.path().join("weir/10.244.1.5")).unwrap(),
            b"other\r\neth0"
        );
        assert_eq!(locked.last_reserved_ip(0).unwrap(), None);
        assert!(locked.reserve(&owner, ip(6), 0).unwrap());
    }

    #[test]
    fn release_by_id_matches_id_and_ifname() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = DiskStore::open(tmp.path(), "weir").unwrap();
        let a0 = Attachment::new("a", "eth0");
        let a1 = Attachment::new("a", "eth1");
        let b0 = Attachment::new("b", "eth0");
        let mut locked = lock(&mut store).unwrap();
        assert!(locked.reserve(&a0, ip(2), 0).unwrap());
        assert!(locked.reserve(&a1, ip(3), 0).unwrap());
        assert!(locked.reserve(&b0, ip(4), 0).unwrap());
        assert!(locked.reserve(&a0, ip(9), 1).unwrap());
        assert_eq!(locked.get_by_id(&a0).unwrap(), vec![ip(2), ip(9)]);
        assert_eq!(locked.release_by_id(&a0).unwrap(), vec![ip(2), ip(9)]);
        assert!(locked.release_by_id(&a0).unwrap().is_empty());
        let left: Vec<_> = locked.reservations().unwrap();
        assert_eq!(
            left,
            vec![
                Reservation {
                    ip: ip(3),
                    owner: a1
                },
                Reservation {
                    ip: ip(4),
                    owner: b0
                },
            ]
        );
        assert_eq!(locked.last_reserved_ip(1).unwrap(), Some(ip(9)));
    }

    #[test]
    fn scan_skips_lock_and_bookkeeping_files() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = DiskStore::open(tmp.path(), "weir").unwrap();
        let owner = Attachment::new("a", "eth0");
        assert!(lock(&mut store).unwrap().reserve(&owner, ip(7), 3).unwrap());
        fs::write(tmp.path().join("weir/README"), "not an ip").unwrap();
        let all = store.reservations().unwrap();
        assert_eq!(all, vec![Reservation { ip: ip(7), owner }]);
    }

    #[test]
    fn owner_format_round_trips_and_reads_legacy_files() {
        let owner = Attachment::new(" id-1 ", "net1");
        assert_eq!(format_owner(&owner), "id-1\r\nnet1");
        assert_eq!(parse_owner("id-1\r\nnet1"), Attachment::new("id-1", "net1"));
        assert_eq!(parse_owner("id-1\n"), Attachment::new("id-1", ""));
    }

    #[test]
    fn garbled_last_reserved_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DiskStore::open(tmp.path(), "weir").unwrap();
        fs::write(tmp.path().join("weir/last_reserved_ip.0"), "garbage").unwrap();
        assert_eq!(store.last_reserved_ip(0).unwrap(), None);
        fs::write(tmp.path().join("weir/last_reserved_ip.0"), "10.244.1.9\n").unwrap();
        assert_eq!(store.last_reserved_ip(0).unwrap(), Some(ip(9)));
    }

    #[test]
    fn unusable_data_dir_is_an_io_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain-file");
        fs::write(&file, "x").unwrap();
        let err = DiskStore::open(&file, "weir").unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err}");
        assert!(err.to_string().contains("plain-file"), "{err}");
    }

    #[test]
    fn bad_network_names_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["", "a/b", "..", ".hidden"] {
            assert!(DiskStore::open(tmp.path(), name).is_err(), "{name}");
        }
    }

    #[test]
    fn lock_excludes_a_second_store_on_the_same_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let mut first = DiskStore::open(tmp.path(), "weir").unwrap();
        let mut second = DiskStore::open(tmp.path(), "weir").unwrap();
        first.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            second.lock().unwrap();
            tx.send(()).unwrap();
            second.unlock().unwrap();
        });
        // The second locker must still be waiting: it can only get past
        // flock once the first one unlocks.
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        first.unlock().unwrap();
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
        waiter.join().unwrap();
    }

    #[test]
    fn double_lock_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = DiskStore::open(tmp.path(), "weir").unwrap();
        store.lock().unwrap();
        assert!(store.lock().is_err());
        store.unlock().unwrap();
        store.lock().unwrap();
    }

    #[test]
    fn parallel_openers_see_one_winner_per_file() {
        let tmp = tempfile::tempdir().unwrap();
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let dir = tmp.path().to_path_buf();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let mut store = DiskStore::open(&dir, "weir").unwrap();
                    barrier.wait();
                    // No lock on purpose: O_EXCL alone must pick one owner.
                    store
                        .reserve(&Attachment::new(format!("c{i}"), "eth0"), ip(42), 0)
                        .unwrap()
                })
            })
            .collect();
        let winners = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|won| *won)
            .count();
        assert_eq!(winners, 1);
    }
}
