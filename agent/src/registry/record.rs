//! Endpoint records: one JSON file per registered attachment in
//! `DIR/endpoints/<container_id>-<ifname>.json`, written atomically
//! (temp file, fsync, rename, fsync of the directory), so a crash leaves
//! either the old or the new record, never half of one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::protocol::EndpointSpec;

/// Record format version (inside the file).
pub const RECORD_VERSION: u32 = 1;

/// Who an attachment is: CNI's (container id, ifname) pair.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttachmentKey {
    pub container_id: String,
    pub ifname: String,
}

impl AttachmentKey {
    pub fn new(container_id: impl Into<String>, ifname: impl Into<String>) -> Self {
        Self {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }

    /// `<container_id>-<ifname>.json`.
    pub fn file_name(&self) -> String {
        format!("{}-{}.json", self.container_id, self.ifname)
    }
}

impl std::fmt::Display for AttachmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.container_id, self.ifname)
    }
}

/// What the agent keeps about a registered pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub v: u32,
    #[serde(flatten)]
    pub endpoint: EndpointSpec,
    /// Seconds since the Unix epoch when the agent accepted it.
    pub registered_at: u64,
}

impl EndpointRecord {
    /// A record for a validated spec, stamped now.
    pub fn new(endpoint: EndpointSpec) -> Self {
        let registered_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            v: RECORD_VERSION,
            endpoint,
            registered_at,
        }
    }

    pub fn key(&self) -> AttachmentKey {
        AttachmentKey::new(&self.endpoint.container_id, &self.endpoint.ifname)
    }

    /// `namespace/name` of the pod, or the attachment when the runtime
    /// sent no pod name (for logs).
    pub fn pod(&self) -> String {
        if self.endpoint.pod_name.is_empty() {
            format!("<container {}>", self.key())
        } else {
            format!("{}/{}", self.endpoint.pod_namespace, self.endpoint.pod_name)
        }
    }

    /// The pod's primary address.
    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.endpoint.ips.first().copied()
    }
}

/// Checks what the agent relies on: names that are safe as file names and
/// interface names, a host link, an address.
pub fn validate(spec: &EndpointSpec) -> Result<(), String> {
    validate_container_id(&spec.container_id)?;
    validate_ifname("ifname", &spec.ifname)?;
    validate_ifname("host_ifname", &spec.host_ifname)?;
    if spec.host_ifindex == 0 {
        return Err("host_ifindex must not be 0".into());
    }
    if spec.netns.is_empty() {
        return Err("netns must not be empty".into());
    }
    if spec.ips.is_empty() {
        return Err("the endpoint has no address (ips is empty)".into());
    }
    for (what, mac) in [("mac", &spec.mac), ("host_mac", &spec.host_mac)] {
        if let Some(mac) = mac {
            parse_mac(mac)
                .ok_or_else(|| format!("{what} {mac:?} is not of the form aa:bb:cc:dd:ee:ff"))?;
        }
    }
    Ok(())
}

/// The CNI spec's container id: an alphanumeric first character, then
/// alphanumerics, `_`, `.` or `-`.
pub fn validate_container_id(id: &str) -> Result<(), String> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || id.len() > 1024 {
        return Err(format!(
            "container_id {id:?} is not a valid CNI container id (alphanumeric first, then [A-Za-z0-9_.-])"
        ));
    }
    Ok(())
}

/// The CNI spec's interface name rules (those of the kernel): 1..=15
/// bytes, not `.` or `..`, no `/`, `:` or whitespace.
pub fn validate_ifname(what: &str, name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(format!("{what} {name:?} is not a valid interface name"));
    }
    Ok(())
}

/// `aa:bb:cc:dd:ee:ff` → bytes.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// A failed record file operation, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct StoreError {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn store_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError { what, path, source }
}

/// A record file that could not be used at load time.
#[derive(Debug)]
pub struct BadRecord {
    pub path: PathBuf,
    pub reason: String,
}

/// The record directory.
#[derive(Clone, Debug)]
pub struct RecordStore {
    dir: PathBuf,
}

impl RecordStore {
    /// Opens (creating, mode 0700) the directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(store_error("creating", &dir))?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_for(&self, key: &AttachmentKey) -> PathBuf {
        self.dir.join(key.file_name())
    }

    /// Writes (or replaces) the record of `record.key()` atomically. A
    /// file of that name that belongs to another attachment (the name
    /// scheme is ambiguous for ids ending in `-<ifname>`) is not
    /// overwritten.
    pub fn write(&self, record: &EndpointRecord) -> Result<PathBuf, StoreError> {
        let key = record.key();
        let path = self.path_for(&key);
        if let Ok(existing) = read_record(&path)
            && existing.key() != key
        {
            return Err(StoreError {
                what: "refusing to overwrite the record of another attachment",
                path,
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("it belongs to {}", existing.key()),
                ),
            });
        }
        let mut body = serde_json::to_vec_pretty(record).map_err(|e| StoreError {
            what: "encoding",
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        body.push(b'\n');
        // Names starting with "." are never loaded as records.
        let tmp = self
            .dir
            .join(format!(".{}.tmp-{}", key.file_name(), std::process::id()));
        let written = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&body)?;
            file.sync_all()
        })();
        if let Err(source) = written {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError {
                what: "writing",
                path: tmp,
                source,
            });
        }
        if let Err(source) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError {
                what: "renaming a temporary record to",
                path,
                source,
            });
        }
        self.sync_dir()?;
        Ok(path)
    }

    /// Removes the record of `key`; `Ok(false)` when there was none.
    pub fn remove(&self, key: &AttachmentKey) -> Result<bool, StoreError> {
        let path = self.path_for(key);
        match fs::remove_file(&path) {
            Ok(()) => {
                self.sync_dir()?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(store_error("removing", &path)(e)),
        }
    }

    /// Every readable record, in file name order, and the files that are
    /// not records (unparsable, wrong version, invalid, misnamed). Leftover
    /// temporary files of interrupted writes are deleted.
    pub fn load_all(&self) -> Result<(Vec<EndpointRecord>, Vec<BadRecord>), StoreError> {
        let entries = fs::read_dir(&self.dir).map_err(store_error("listing", &self.dir))?;
        let mut names: Vec<(String, PathBuf)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(store_error("listing", &self.dir))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.starts_with('.') {
                if name.contains(".tmp-") {
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            if name.ends_with(".json") {
                names.push((name, path));
            }
        }
        names.sort();
        let mut records = Vec::new();
        let mut bad = Vec::new();
        for (name, path) in names {
            match read_record(&path).and_then(|r| check_loaded(&r, &name).map(|()| r)) {
                Ok(record) => records.push(record),
                Err(reason) => bad.push(BadRecord { path, reason }),
            }
        }
        Ok((records, bad))
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(store_error("syncing", &self.dir))
    }
}

fn read_record(path: &Path) -> Result<EndpointRecord, String> {
    let bytes = fs::read(path).map_err(|e| format!("unreadable: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("not a record: {e}"))
}

fn check_loaded(record: &EndpointRecord, file_name: &str) -> Result<(), String> {
    if record.v != RECORD_VERSION {
        return Err(format!(
            "record version {} (this agent reads {RECORD_VERSION})",
            record.v
        ));
    }
    validate(&record.endpoint)?;
    let expected = record.key().file_name();
    if expected != file_name {
        return Err(format!(
            "holds {} but should be named {expected}",
            record.key()
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub(crate) fn spec(container_id: &str, index: u32) -> EndpointSpec {
        EndpointSpec {
            container_id: container_id.into(),
            netns: format!("/run/netns/{container_id}"),
            ifname: "eth0".into(),
            host_ifindex: index,
            host_ifname: format!("weir{index:08x}"),
            ips: vec![Ipv4Addr::new(10, 244, 1, index as u8)],
            mac: None,
            host_mac: None,
            pod_namespace: "default".into(),
            pod_name: format!("pod-{container_id}"),
        }
    }

    #[test]
    fn write_load_replace_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path().join("endpoints")).unwrap();
        let a = EndpointRecord::new(spec("a1", 5));
        let b = EndpointRecord::new(spec("b2", 6));
        let path = store.write(&a).unwrap();
        assert_eq!(path, dir.path().join("endpoints/a1-eth0.json"));
        store.write(&b).unwrap();
        let (records, bad) = store.load_all().unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(records, vec![a.clone(), b.clone()]);

        let mut moved = a.clone();
        moved.endpoint.host_ifindex = 9;
        store.write(&moved).unwrap();
        let (records, _) = store.load_all().unwrap();
        assert_eq!(records[0].endpoint.host_ifindex, 9);

        assert!(store.remove(&a.key()).unwrap());
        assert!(
            !store.remove(&a.key()).unwrap(),
            "second removal finds nothing"
        );
        let (records, _) = store.load_all().unwrap();
        assert_eq!(records, vec![b]);
        let leftovers: Vec<_> = fs::read_dir(store.dir()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files stay behind");
    }

    #[test]
    fn bad_files_are_reported_and_temporaries_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        store.write(&EndpointRecord::new(spec("good", 3))).unwrap();
        fs::write(dir.path().join("torn-eth0.json"), b"{\"v\":1,\"contai").unwrap();
        let mut misnamed = serde_json::to_value(EndpointRecord::new(spec("x", 4))).unwrap();
        fs::write(dir.path().join("y-eth0.json"), misnamed.to_string()).unwrap();
        misnamed["v"] = 7.into();
        fs::write(dir.path().join("x-eth0.json"), misnamed.to_string()).unwrap();
        fs::write(dir.path().join(".good-eth0.json.tmp-1"), b"partial").unwrap();
        fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();

        let (records, bad) = store.load_all().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].endpoint.container_id, "good");
        let reasons: Vec<(String, String)> = bad
            .iter()
            .map(|b| {
                (
                    b.path.file_name().unwrap().to_string_lossy().into_owned(),
                    b.reason.clone(),
                )
            })
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].0 == "torn-eth0.json" && reasons[0].1.starts_with("not a record"));
        assert!(reasons[1].1.contains("record version 7"), "{reasons:?}");
        assert!(
            reasons[2].1.contains("should be named x-eth0.json"),
            "{reasons:?}"
        );
        assert!(!dir.path().join(".good-eth0.json.tmp-1").exists());
    }

    #[test]
    fn ambiguous_file_names_never_overwrite_another_attachment() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        let mut first = spec("a-b", 3);
        first.ifname = "c".into();
        let mut second = spec("a", 4);
        second.ifname = "b-c".into();
        store.write(&EndpointRecord::new(first)).unwrap();
        let err = store.write(&EndpointRecord::new(second)).unwrap_err();
        assert!(err.to_string().contains("belongs to a-b/c"), "{err}");
    }

    #[test]
    fn validation_rejects_unsafe_names_and_missing_parts() {
        assert!(validate(&spec("ok_1.2-3", 1)).is_ok());
        let cases: Vec<(EndpointSpec, &str)> = vec![
            (
                EndpointSpec {
                    container_id: "../etc".into(),
                    ..spec("a", 1)
                },
                "container_id",
            ),
            (
                EndpointSpec {
                    container_id: "".into(),
                    ..spec("a", 1)
                },
                "container_id",
            ),
            (
                EndpointSpec {
                    container_id: "a/b".into(),
                    ..spec("a", 1)
                },
                "container_id",
            ),
            (
                EndpointSpec {
                    ifname: "a/b".into(),
                    ..spec("a", 1)
                },
                "ifname",
            ),
            (
                EndpointSpec {
                    ifname: "sixteen_chars_xx".into(),
                    ..spec("a", 1)
                },
                "ifname",
            ),
            (
                EndpointSpec {
                    host_ifname: "".into(),
                    ..spec("a", 1)
                },
                "host_ifname",
            ),
            (
                EndpointSpec {
                    host_ifindex: 0,
                    ..spec("a", 1)
                },
                "host_ifindex",
            ),
            (
                EndpointSpec {
                    ips: vec![],
                    ..spec("a", 1)
                },
                "no address",
            ),
            (
                EndpointSpec {
                    netns: "".into(),
                    ..spec("a", 1)
                },
                "netns",
            ),
            (
                EndpointSpec {
                    mac: Some("0a:58".into()),
                    ..spec("a", 1)
                },
                "mac",
            ),
            (
                EndpointSpec {
                    host_mac: Some("x".into()),
                    ..spec("a", 1)
                },
                "host_mac",
            ),
        ];
        for (bad, what) in cases {
            let err = validate(&bad).unwrap_err();
            assert!(err.contains(what), "{err} should mention {what}");
        }
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            parse_mac("0a:58:0A:f4:01:ff"),
            Some([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0xff])
        );
        for bad in [
            "",
            "0a:58:0a:f4:01",
            "0a:58:0a:f4:01:ff:00",
            "0a:58:0a:f4:01:f",
            "zz:58:0a:f4:01:05",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
