//! rustc's own libLLVM, and an `LLVM_PREFIX` that lets bpf-linker link against it.
//!
//! bpf-linker must use the same LLVM as rustc (it reads rustc's bitcode). rustc ships its LLVM as
//! `$SYSROOT/lib/libLLVM.so.<ver>-rust-<release>` without the `libLLVM.so` name a linker looks
//! for, so we make a prefix whose `lib/` holds two symlinks to it: `libLLVM.so` (to link) and
//! its SONAME (to load at run time). All names are derived, none hard-coded.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use object::elf::{DT_SONAME, FileHeader64};
use object::read::ReadCache;
use object::read::elf::FileHeader;
use object::{Endianness, ReadRef};

use crate::{paths, proc};

/// What `rustc -vV` and `rustc --print sysroot` say about the active toolchain.
pub struct RustcInfo {
    /// The full `rustc -vV` text; it identifies the toolchain for the prefix directory name.
    pub verbose_version: String,
    /// LLVM major version, e.g. 22 for `LLVM version: 22.1.2`.
    pub llvm_major: u32,
    pub sysroot: PathBuf,
}

impl RustcInfo {
    pub fn query() -> Result<Self> {
        let verbose_version = proc::output(Command::new("rustc").arg("-vV"))?;
        let llvm_major = parse_llvm_major(&verbose_version).with_context(|| {
            format!("no `LLVM version: N...` line in `rustc -vV`:\n{verbose_version}")
        })?;
        let sysroot = proc::output(Command::new("rustc").args(["--print", "sysroot"]))?;
        Ok(Self {
            verbose_version,
            llvm_major,
            sysroot: PathBuf::from(sysroot.trim()),
        })
    }
}

fn parse_llvm_major(verbose_version: &str) -> Option<u32> {
    let version = verbose_version
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version:"))?;
    version.trim().split('.').next()?.parse().ok()
}

/// rustc's libLLVM shared object and its SONAME.
pub struct LibLlvm {
    pub path: PathBuf,
    pub soname: String,
}

/// Finds the real libLLVM ELF file in `$SYSROOT/lib` (next to it there may be a linker-script
/// stub such as `libLLVM-22-rust-1.95.0-stable.so`, which is skipped because it is not ELF).
pub fn find_lib_llvm(sysroot: &Path) -> Result<LibLlvm> {
    let lib_dir = sysroot.join("lib");
    let entries = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("cannot list {}", lib_dir.display()))?;
    let mut seen = Vec::new();
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", lib_dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("libLLVM") {
            continue;
        }
        let path = entry.path();
        if is_elf(&path)? {
            let soname = read_soname(&path)?;
            found.push(LibLlvm { path, soname });
        }
        seen.push(name);
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!(
            "no libLLVM shared object in {} (libLLVM* entries: {seen:?}); \
             does this rustc ship LLVM as a shared library?",
            lib_dir.display()
        ),
        _ => bail!(
            "several libLLVM shared objects in {}: {:?}; cannot tell which one rustc uses",
            lib_dir.display(),
            found
                .iter()
                .map(|lib| lib.path.display().to_string())
                .collect::<Vec<_>>()
        ),
    }
}

fn is_elf(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(file.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF")
}

/// Reads `DT_SONAME` from a 64-bit ELF shared object, without loading the whole file.
pub fn read_soname(path: &Path) -> Result<String> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let data = ReadCache::new(file);
    soname_from(&data).with_context(|| format!("cannot read the SONAME of {}", path.display()))
}

fn soname_from<'data, R: ReadRef<'data>>(data: R) -> Result<String> {
    let header = FileHeader64::<Endianness>::parse(data).context("not a 64-bit ELF file")?;
    let endian = header.endian().context("unknown ELF byte order")?;
    let sections = header
        .sections(endian, data)
        .context("bad ELF section table")?;
    let dynamic = sections
        .dynamic_table(endian, data)
        .context("bad ELF dynamic section")?;
    for entry in dynamic.iter() {
        if entry.tag == DT_SONAME {
            let name = dynamic.string(entry).context("bad DT_SONAME string")?;
            return String::from_utf8(name.to_vec()).context("DT_SONAME is not UTF-8");
        }
    }
    bail!("no DT_SONAME entry in the dynamic section")
}

/// A stable 64-bit FNV-1a hash (std's hasher may change between releases; this must not, so a
/// prefix made today is found again tomorrow).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Creates (or repairs) `~/.cache/weir/llvm-prefix-<hash of rustc -vV>/lib/{libLLVM.so,SONAME}`.
/// The prefix must outlive the install: bpf-linker's RUNPATH points into it.
pub fn make_prefix(rustc: &RustcInfo, lib: &LibLlvm) -> Result<PathBuf> {
    let prefix = paths::cache_dir()?.join(format!(
        "llvm-prefix-{:016x}",
        fnv1a(&rustc.verbose_version)
    ));
    let lib_dir = prefix.join("lib");
    std::fs::create_dir_all(&lib_dir)
        .with_context(|| format!("cannot create {}", lib_dir.display()))?;
    for name in ["libLLVM.so", lib.soname.as_str()] {
        ensure_symlink(&lib.path, &lib_dir.join(name))?;
    }
    Ok(prefix)
}

fn ensure_symlink(target: &Path, link: &Path) -> Result<()> {
    if std::fs::read_link(link).is_ok_and(|current| current == target) {
        return Ok(());
    }
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(link)
            .with_context(|| format!("cannot replace stale {}", link.display()))?;
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("cannot symlink {} -> {}", link.display(), target.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn llvm_major_comes_from_the_llvm_line() {
        let text = "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\nrelease: 1.95.0\nLLVM version: 22.1.2\n";
        assert_eq!(parse_llvm_major(text), Some(22));
        assert_eq!(parse_llvm_major("rustc 1.95.0\n"), None);
        assert_eq!(parse_llvm_major("LLVM version: x.1\n"), None);
    }

    #[test]
    fn fnv1a_is_stable_and_input_sensitive() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fnv1a("LLVM version: 22"), fnv1a("LLVM version: 23"));
    }

    #[test]
    fn soname_of_a_system_library_is_read() {
        // libc's SONAME is `libc.so.6` on every glibc system this project targets.
        let libc = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ]
        .into_iter()
        .map(Path::new)
        .find(|path| path.exists())
        .expect("glibc's libc.so.6 exists");
        assert_eq!(read_soname(libc).unwrap(), "libc.so.6");
    }

    #[test]
    fn non_elf_input_is_an_error_not_a_panic() {
        assert!(soname_from(&b"INPUT(libLLVM.so.22)"[..]).is_err());
        assert!(soname_from(&[0x7f, b'E', b'L', b'F', 2, 1][..]).is_err());
    }

    #[test]
    fn symlinks_are_created_and_repaired() {
        let dir = std::env::temp_dir().join(format!("xtask-symlink-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("libLLVM.so");
        ensure_symlink(Path::new("/nonexistent/old"), &link).unwrap();
        ensure_symlink(Path::new("/nonexistent/new"), &link).unwrap();
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("/nonexistent/new")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
