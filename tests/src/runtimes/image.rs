//! A container image built without any registry: a busybox-static rootfs, as a
//! plain tar (for `podman import`) and as an OCI image layout archive (for
//! `ctr images import`).
//!
//! Both are byte-for-byte deterministic (fixed mtimes, owners and order), so the
//! same busybox gives the same digests in every run.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Where Debian's `busybox-static` package puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Applets linked into `/bin` of the image (the tests use sh, nc, ip, cat, ...).
const APPLETS: &[&str] = &[
    "sh", "ash", "cat", "echo", "env", "hostname", "id", "ip", "ls", "mkdir", "nc", "ping", "ps",
    "sleep", "test", "timeout", "true", "false", "wget", "grep", "head", "tr",
];

/// `/bin/weir-hello`: what the container's own TCP server answers with (via
/// `nc -ll -e`), so a lab pod can check it reached this very container.
const HELLO_SCRIPT: &str = "#!/bin/sh\necho \"${WEIR_NAME:-container}\"\n";

/// Fixed mtime of every entry (2024-01-01), so the archives are reproducible.
const MTIME: u64 = 1_704_067_200;

const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Whether an ELF image has no program interpreter (PT_INTERP), i.e. is static.
/// A dynamic busybox (Debian's `busybox` package) would not run in an image
/// without a libc.
pub fn is_static_elf(bytes: &[u8]) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
        bail!("not an ELF file");
    }
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        bail!("not a 64-bit little-endian ELF file");
    }
    let u16_at = |off: usize| -> Result<u16> {
        let b = bytes.get(off..off + 2).context("truncated ELF header")?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |off: usize| -> Result<u32> {
        let b = bytes
            .get(off..off + 4)
            .context("truncated ELF program header")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let phoff_bytes = bytes.get(0x20..0x28).context("truncated ELF header")?;
    let mut phoff_arr = [0u8; 8];
    phoff_arr.copy_from_slice(phoff_bytes);
    let phoff = usize::try_from(u64::from_le_bytes(phoff_arr)).context("ELF phoff")?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let off = i
            .checked_mul(phentsize)
            .and_then(|o| o.checked_add(phoff))
            .context("ELF program header offset overflows")?;
        if u32_at(off)? == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The rootfs as an uncompressed tar: `/bin/busybox`, applet symlinks, a
/// `weir-hello` script and the usual empty mount points.
pub fn rootfs_tar(busybox: &[u8]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for dir in [
        "bin", "dev", "etc", "proc", "root", "run", "sys", "tmp", "var",
    ] {
        let mode = if dir == "tmp" { 0o1777 } else { 0o755 };
        append_dir(&mut builder, dir, mode)?;
    }
    append_file(&mut builder, "bin/busybox", 0o755, busybox)?;
    append_file(
        &mut builder,
        "bin/weir-hello",
        0o755,
        HELLO_SCRIPT.as_bytes(),
    )?;
    for applet in APPLETS {
        append_symlink(&mut builder, &format!("bin/{applet}"), "busybox")?;
    }
    append_file(
        &mut builder,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\n",
    )?;
    append_file(&mut builder, "etc/group", 0o644, b"root:x:0:\n")?;
    builder.into_inner().context("finishing the rootfs tar")
}

/// Reads [`BUSYBOX`], checks it is static and builds [`rootfs_tar`].
pub fn rootfs_tar_from_host() -> Result<Vec<u8>> {
    let busybox = std::fs::read(BUSYBOX).with_context(|| {
        format!(
            "reading {BUSYBOX}; install Debian's busybox-static (`apt-get install busybox-static`)"
        )
    })?;
    if !is_static_elf(&busybox).with_context(|| format!("inspecting {BUSYBOX}"))? {
        bail!("{BUSYBOX} is dynamically linked; install busybox-static instead of busybox");
    }
    rootfs_tar(&busybox)
}

/// GOARCH name of the machine, as image configs and platforms spell it.
pub fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// An OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`) as a tar
/// archive holding one image: `layer` (an uncompressed rootfs tar) plus a
/// config and a manifest. `reference` (e.g. `localhost/weir-busybox:test`) goes
/// into the index annotations that `ctr images import` names the image by.
pub fn oci_archive(layer: &[u8], reference: &str) -> Result<Vec<u8>> {
    let layer_digest = sha256_digest(layer);
    let config = serde_json::to_vec(&json!({
        "architecture": oci_architecture(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin"],
            "Cmd": ["/bin/sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))?;
    let config_digest = sha256_digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": layer.len()}],
    }))?;
    let manifest_digest = sha256_digest(&manifest);
    let tag = reference.rsplit_once(':').map_or("latest", |(_, tag)| tag);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": {"architecture": oci_architecture(), "os": "linux"},
            "annotations": {
                "io.containerd.image.name": reference,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))?;

    let mut builder = tar::Builder::new(Vec::new());
    append_file(
        &mut builder,
        "oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    append_file(&mut builder, "index.json", 0o644, &index)?;
    append_dir(&mut builder, "blobs", 0o755)?;
    append_dir(&mut builder, "blobs/sha256", 0o755)?;
    for blob in [layer, &config, &manifest] {
        let digest = sha256_digest(blob);
        let hex = digest.trim_start_matches("sha256:");
        append_file(&mut builder, &format!("blobs/sha256/{hex}"), 0o644, blob)?;
    }
    builder.into_inner().context("finishing the OCI archive")
}

/// Writes both archives into `dir`: `rootfs.tar` and `oci-image.tar`.
pub fn write_images(
    dir: &Path,
    reference: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let rootfs = rootfs_tar_from_host()?;
    let oci = oci_archive(&rootfs, reference)?;
    let rootfs_path = dir.join("rootfs.tar");
    let oci_path = dir.join("oci-image.tar");
    std::fs::write(&rootfs_path, &rootfs)
        .with_context(|| format!("writing {}", rootfs_path.display()))?;
    std::fs::write(&oci_path, &oci).with_context(|| format!("writing {}", oci_path.display()))?;
    Ok((rootfs_path, oci_path))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    header.set_size(size);
    header
}

fn append_dir(builder: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> Result<()> {
    let mut header = header(tar::EntryType::Directory, mode, 0);
    builder
        .append_data(&mut header, format!("{path}/"), std::io::empty())
        .with_context(|| format!("adding directory {path} to a tar"))
}

fn append_file(
    builder: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> Result<()> {
    let size = u64::try_from(data.len()).context("file size")?;
    let mut header = header(tar::EntryType::Regular, mode, size);
    builder
        .append_data(&mut header, path, data)
        .with_context(|| format!("adding file {path} to a tar"))
}

fn append_symlink(builder: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) -> Result<()> {
    let mut header = header(tar::EntryType::Symlink, 0o777, 0);
    builder
        .append_link(&mut header, path, target)
        .with_context(|| format!("adding symlink {path} -> {target} to a tar"))
}

/// Parses an OCI archive back into `(path, bytes)` entries (for tests).
pub fn archive_entries(archive: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut reader = tar::Archive::new(archive);
    for entry in reader.entries().context("reading tar entries")? {
        let mut entry = entry.context("reading a tar entry")?;
        let path = entry
            .path()
            .context("tar entry path")?
            .display()
            .to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).context("tar entry data")?;
        out.push((path, data));
    }
    Ok(out)
}

/// The blob a descriptor (`{"digest": ...}`) points to inside parsed entries.
pub fn blob<'a>(entries: &'a [(String, Vec<u8>)], descriptor: &Value) -> Option<&'a [u8]> {
    let digest = descriptor.get("digest")?.as_str()?;
    let hex = digest.strip_prefix("sha256:")?;
    let path = format!("blobs/sha256/{hex}");
    entries
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, data)| data.as_slice())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A minimal 64-bit little-endian ELF header with one program header of `p_type`.
    fn fake_elf(p_type: u32) -> Vec<u8> {
        let mut elf = vec![0u8; 0x40 + 0x38];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[0x40..0x44].copy_from_slice(&p_type.to_le_bytes());
        elf
    }

    #[test]
    fn tells_static_from_dynamic_elf() {
        assert!(is_static_elf(&fake_elf(1)).unwrap());
        assert!(!is_static_elf(&fake_elf(3)).unwrap());
        assert!(is_static_elf(b"#!/bin/sh\n").is_err());
        assert!(is_static_elf(&fake_elf(1)[..0x30]).is_err());
    }

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            sha256_digest(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn rootfs_has_busybox_and_applets() {
        let tar = rootfs_tar(b"fake busybox").unwrap();
        let entries = archive_entries(&tar).unwrap();
        let names: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
        assert!(names.contains(&"bin/busybox"));
        assert!(names.contains(&"bin/nc"));
        assert!(names.contains(&"bin/weir-hello"));
        assert!(names.contains(&"tmp/"));
        let busybox = entries.iter().find(|(p, _)| p == "bin/busybox").unwrap();
        assert_eq!(busybox.1, b"fake busybox");
    }

    #[test]
    fn archives_are_deterministic() {
        let a = oci_archive(&rootfs_tar(b"x").unwrap(), "localhost/t:1").unwrap();
        let b = oci_archive(&rootfs_tar(b"x").unwrap(), "localhost/t:1").unwrap();
        assert_eq!(sha256_digest(&a), sha256_digest(&b));
    }

    #[test]
    fn oci_archive_is_a_consistent_layout() {
        let layer = rootfs_tar(b"fake busybox").unwrap();
        let archive = oci_archive(&layer, "localhost/weir-busybox:test").unwrap();
        let entries = archive_entries(&archive).unwrap();

        let layout: Value =
            serde_json::from_slice(&entries.iter().find(|(p, _)| p == "oci-layout").unwrap().1)
                .unwrap();
        assert_eq!(layout["imageLayoutVersion"], "1.0.0");

        // Every blob is stored under its own digest.
        for (path, data) in entries
            .iter()
            .filter(|(p, d)| p.starts_with("blobs/sha256/") && !d.is_empty())
        {
            let hex = path.trim_start_matches("blobs/sha256/");
            assert_eq!(sha256_digest(data), format!("sha256:{hex}"), "{path}");
        }

        let index: Value =
            serde_json::from_slice(&entries.iter().find(|(p, _)| p == "index.json").unwrap().1)
                .unwrap();
        let desc = &index["manifests"][0];
        assert_eq!(
            desc["annotations"]["io.containerd.image.name"],
            "localhost/weir-busybox:test"
        );
        assert_eq!(
            desc["annotations"]["org.opencontainers.image.ref.name"],
            "test"
        );
        let manifest_bytes = blob(&entries, desc).unwrap();
        assert_eq!(desc["size"].as_u64().unwrap(), manifest_bytes.len() as u64);
        let manifest: Value = serde_json::from_slice(manifest_bytes).unwrap();
        assert_eq!(manifest["mediaType"], MEDIA_MANIFEST);

        let layer_desc = &manifest["layers"][0];
        assert_eq!(blob(&entries, layer_desc).unwrap(), layer.as_slice());
        assert_eq!(layer_desc["size"].as_u64().unwrap(), layer.len() as u64);

        let config: Value =
            serde_json::from_slice(blob(&entries, &manifest["config"]).unwrap()).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], layer_desc["digest"]);
        assert_eq!(config["architecture"], oci_architecture());
    }
}
