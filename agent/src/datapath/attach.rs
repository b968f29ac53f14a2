//! Attaching programs with pinned bpf_links, so the datapath keeps running
//! when the agent dies.
//!
//! * TC programs use **tcx links** (kernel ≥ 6.6): a link pinned under
//!   `DIR/links/` stays attached to its interface without any process; it
//!   goes away with the interface (the link turns defunct, `ifindex` 0) or
//!   when we detach it.
//! * Cgroup sock_addr programs use **cgroup links**, pinned the same way.
//!
//! Pin names say what a link is for, so a restarted agent knows which
//! program each link must run: `pod-<ifindex>-ingress`, `pod-<ifindex>-egress`,
//! `netdev-<ifindex>-ingress`, `netdev-<ifindex>-egress`,
//! `cgroup-<cgroup id>-<program>`. On start the agent swaps its freshly
//! loaded programs into the existing links with `BPF_LINK_UPDATE`, which is
//! atomic: every packet sees the old or the new program, never none, and
//! nothing is detached and re-attached. Defunct links are unpinned.
//!
//! Attach and detach are idempotent. Interface indices and names are those
//! of the calling thread's network namespace (see [`super::netns`]).

use std::{
    fs::File,
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::Path,
};

use aya::programs::{
    CgroupAttachMode, CgroupSockAddr, LinkOrder, Program, SchedClassifier, TcAttachType,
    links::FdLink, tc::TcAttachOptions,
};
use tracing::{debug, info, warn};
use weir_common::programs as progs;

use super::{
    error::{DatapathError, DatapathResult},
    pin::{PinLayout, remove_pin},
    sys::{self, LinkTarget},
};

/// `enum bpf_attach_type` values of tcx links.
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// An interface, by index or by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Iface {
    Index(u32),
    Name(String),
}

impl From<u32> for Iface {
    fn from(index: u32) -> Self {
        Self::Index(index)
    }
}

impl From<&str> for Iface {
    fn from(name: &str) -> Self {
        Self::Name(name.to_string())
    }
}

impl From<String> for Iface {
    fn from(name: String) -> Self {
        Self::Name(name)
    }
}

impl Iface {
    /// The interface index in the calling thread's network namespace.
    pub fn index(&self) -> DatapathResult<u32> {
        match self {
            Self::Index(i) => Ok(*i),
            Self::Name(name) => nix::net::if_::if_nametoindex(name.as_str())
                .map_err(|e| DatapathError::Interface(name.clone(), e.into())),
        }
    }
}

fn ifname(ifindex: u32) -> DatapathResult<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires; it
    // writes a NUL-terminated name into it or returns NULL.
    let ret = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if ret.is_null() {
        return Err(DatapathError::Interface(
            format!("#{ifindex}"),
            std::io::Error::last_os_error(),
        ));
    }
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Where a TC program hooks in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcHook {
    /// Ingress of a pod's host-side veth: `weir_from_pod`.
    PodIngress,
    /// Egress of a pod's host-side veth: `weir_to_pod`.
    PodEgress,
    /// Ingress of the node's uplink: `weir_from_netdev`.
    NetdevIngress,
    /// Egress of the node's uplink: `weir_to_netdev`.
    NetdevEgress,
}

impl TcHook {
    pub const ALL: [TcHook; 4] = [
        Self::PodIngress,
        Self::PodEgress,
        Self::NetdevIngress,
        Self::NetdevEgress,
    ];

    pub fn program(self) -> &'static str {
        match self {
            Self::PodIngress => progs::FROM_POD,
            Self::PodEgress => progs::TO_POD,
            Self::NetdevIngress => progs::FROM_NETDEV,
            Self::NetdevEgress => progs::TO_NETDEV,
        }
    }

    fn ingress(self) -> bool {
        matches!(self, Self::PodIngress | Self::NetdevIngress)
    }

    fn attach_type(self) -> TcAttachType {
        if self.ingress() {
            TcAttachType::Ingress
        } else {
            TcAttachType::Egress
        }
    }

    fn tcx_attach_type(self) -> u32 {
        if self.ingress() {
            BPF_TCX_INGRESS
        } else {
            BPF_TCX_EGRESS
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::PodIngress => "pod-",
            Self::PodEgress => "pod-",
            Self::NetdevIngress => "netdev-",
            Self::NetdevEgress => "netdev-",
        }
    }

    fn suffix(self) -> &'static str {
        if self.ingress() {
            "-ingress"
        } else {
            "-egress"
        }
    }

    pub fn pin_name(self, ifindex: u32) -> String {
        format!("{}{ifindex}{}", self.prefix(), self.suffix())
    }

    /// The hook and interface index a pin name stands for.
    pub fn parse_pin_name(name: &str) -> Option<(TcHook, u32)> {
        Self::ALL.into_iter().find_map(|hook| {
            let index = name
                .strip_prefix(hook.prefix())?
                .strip_suffix(hook.suffix())?;
            Some((hook, index.parse().ok()?))
        })
    }
}

fn cgroup_pin_name(cgroup_id: u64, program: &str) -> String {
    format!("cgroup-{cgroup_id}-{program}")
}

fn parse_cgroup_pin_name(name: &str) -> Option<(u64, &str)> {
    let rest = name.strip_prefix("cgroup-")?;
    let (id, program) = rest.split_once('-')?;
    Some((id.parse().ok()?, program))
}

/// The program a pinned link should run, from its pin name.
pub fn program_of_pin(name: &str) -> Option<&str> {
    if let Some((hook, _)) = TcHook::parse_pin_name(name) {
        return Some(hook.program());
    }
    parse_cgroup_pin_name(name).map(|(_, program)| program)
}

/// What an attach call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// A new link was created and pinned.
    Created,
    /// The pinned link already ran this program.
    Unchanged,
    /// The pinned link now runs this program (atomic swap).
    Updated,
}

/// The pinned link at `path` and its info; `None` when there is no pin.
fn open_link(path: &Path) -> DatapathResult<Option<(std::os::fd::OwnedFd, sys::LinkInfo)>> {
    if !path.exists() {
        return Ok(None);
    }
    let object = path.display().to_string();
    let fd = sys::obj_get(path).map_err(|e| DatapathError::sys("BPF_OBJ_GET", &object, e))?;
    let info = sys::link_info(fd.as_fd())
        .map_err(|e| DatapathError::sys("BPF_OBJ_GET_INFO_BY_FD", &object, e))?;
    Ok(Some((fd, info)))
}

/// Makes the link at `path` run `program`; returns whether it swapped.
fn ensure_program(
    path: &Path,
    link: &std::os::fd::OwnedFd,
    info: &sys::LinkInfo,
    name: &str,
    program: &Program,
) -> DatapathResult<Attached> {
    let prog_id = program
        .info()
        .map_err(|e| DatapathError::program(name, e))?
        .id();
    if info.prog_id == prog_id {
        return Ok(Attached::Unchanged);
    }
    let fd = program.fd().map_err(|e| DatapathError::program(name, e))?;
    sys::link_update(link.as_fd(), fd.as_fd())
        .map_err(|e| DatapathError::sys("BPF_LINK_UPDATE", path.display().to_string(), e))?;
    Ok(Attached::Updated)
}

/// Detaches the link pinned at `path` and removes the pin. Missing: Ok.
pub fn detach_pin(path: &Path) -> DatapathResult<bool> {
    let Some((fd, _)) = open_link(path).ok().flatten() else {
        remove_pin(path)?;
        return Ok(false);
    };
    if let Err(e) = sys::link_detach(fd.as_fd()) {
        // A defunct link cannot be detached twice; unpinning frees it.
        debug!(pin = %path.display(), error = %e, "BPF_LINK_DETACH");
    }
    remove_pin(path)?;
    Ok(true)
}

fn pin_link(link: FdLink, path: &Path) -> DatapathResult<()> {
    link.pin(path).map_err(|e| {
        DatapathError::sys(
            "BPF_OBJ_PIN",
            path.display().to_string(),
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok(())
}

/// Attaches `hook`'s program to interface `ifindex` (idempotent).
pub fn attach_tc(
    ebpf: &mut aya::Ebpf,
    pins: &PinLayout,
    hook: TcHook,
    ifindex: u32,
) -> DatapathResult<Attached> {
    let name = hook.program();
    let path = pins.link(&hook.pin_name(ifindex));
    if let Some((fd, info)) = open_link(&path)? {
        let expected = LinkTarget::Tcx {
            ifindex,
            attach_type: hook.tcx_attach_type(),
        };
        if info.target == expected {
            let program = ebpf
                .program(name)
                .ok_or_else(|| DatapathError::MissingProgram(name.to_string()))?;
            return ensure_program(&path, &fd, &info, name, program);
        }
        // Defunct (the interface went away) or not ours: start over.
        info!(pin = %path.display(), target = ?info.target, "replacing a stale tc link");
        detach_pin(&path)?;
    }
    let ifname = ifname(ifindex)?;
    let program: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or_else(|| DatapathError::MissingProgram(name.to_string()))?
        .try_into()
        .map_err(|e| DatapathError::program(name, e))?;
    let id = program
        .attach_with_options(
            &ifname,
            hook.attach_type(),
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| DatapathError::program(format!("{name} on {ifname}"), e))?;
    let link = program
        .take_link(id)
        .map_err(|e| DatapathError::program(name, e))?;
    let link = FdLink::try_from(link)
        .map_err(|e| DatapathError::Invalid(format!("{name} on {ifname}: not a tcx link: {e}")))?;
    pin_link(link, &path)?;
    info!(program = name, interface = %ifname, ifindex, "attached (tcx, pinned)");
    Ok(Attached::Created)
}

/// Detaches `hook`'s link from interface `ifindex` (idempotent).
pub fn detach_tc(pins: &PinLayout, hook: TcHook, ifindex: u32) -> DatapathResult<bool> {
    detach_pin(&pins.link(&hook.pin_name(ifindex)))
}

/// The cgroup's id (its inode number on cgroup2) and an open fd.
fn open_cgroup(path: &Path) -> DatapathResult<(File, u64)> {
    let file = File::open(path).map_err(|e| DatapathError::io("opening cgroup", path, e))?;
    let id = file
        .metadata()
        .map_err(|e| DatapathError::io("stat of cgroup", path, e))?
        .ino();
    Ok((file, id))
}

/// The socket LB programs the object carries.
pub fn sock_programs(ebpf: &aya::Ebpf) -> Vec<&'static str> {
    progs::SOCK
        .into_iter()
        .filter(|name| ebpf.program(name).is_some())
        .collect()
}

/// Attaches every socket LB program to the cgroup at `path` (idempotent).
pub fn attach_cgroup(
    ebpf: &mut aya::Ebpf,
    pins: &PinLayout,
    path: &Path,
) -> DatapathResult<Vec<(&'static str, Attached)>> {
    let names = sock_programs(ebpf);
    if names.is_empty() {
        return Err(DatapathError::MissingProgram(progs::SOCK.join(", ")));
    }
    let (cgroup, cgroup_id) = open_cgroup(path)?;
    let mut out = Vec::new();
    for name in names {
        let pin = pins.link(&cgroup_pin_name(cgroup_id, name));
        if let Some((fd, info)) = open_link(&pin)? {
            if matches!(info.target, LinkTarget::Cgroup { cgroup_id: id, .. } if id == cgroup_id) {
                let program = ebpf
                    .program(name)
                    .ok_or_else(|| DatapathError::MissingProgram(name.to_string()))?;
                out.push((name, ensure_program(&pin, &fd, &info, name, program)?));
                continue;
            }
            detach_pin(&pin)?;
        }
        let program: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or_else(|| DatapathError::MissingProgram(name.to_string()))?
            .try_into()
            .map_err(|e| DatapathError::program(name, e))?;
        let id = program
            .attach(&cgroup, CgroupAttachMode::Single)
            .map_err(|e| DatapathError::program(format!("{name} on {}", path.display()), e))?;
        let link = program
            .take_link(id)
            .map_err(|e| DatapathError::program(name, e))?;
        let link = FdLink::try_from(link).map_err(|e| {
            DatapathError::Invalid(format!("{name} on {}: not a bpf_link: {e}", path.display()))
        })?;
        pin_link(link, &pin)?;
        info!(program = name, cgroup = %path.display(), "attached (cgroup link, pinned)");
        out.push((name, Attached::Created));
    }
    Ok(out)
}

/// Detaches the socket LB programs from the cgroup at `path` (idempotent;
/// the cgroup must still exist).
pub fn detach_cgroup(pins: &PinLayout, path: &Path) -> DatapathResult<usize> {
    let (_, cgroup_id) = open_cgroup(path)?;
    let mut detached = 0;
    for name in progs::SOCK {
        if detach_pin(&pins.link(&cgroup_pin_name(cgroup_id, name)))? {
            detached += 1;
        }
    }
    Ok(detached)
}

/// What [`refresh_links`] did on start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkRefresh {
    /// Links now running the freshly loaded program.
    pub updated: usize,
    /// Links that already ran it.
    pub unchanged: usize,
    /// Pins of defunct links (interface or cgroup gone) removed.
    pub pruned: usize,
    /// Links whose program this version no longer has: detached.
    pub dropped: usize,
    /// Links whose program swap failed; they keep the old program.
    pub failed: usize,
}

/// Swaps the loaded programs into every pinned link and prunes dead ones.
pub fn refresh_links(ebpf: &aya::Ebpf, pins: &PinLayout) -> DatapathResult<LinkRefresh> {
    let dir = pins.links_dir();
    let mut out = LinkRefresh::default();
    let entries = std::fs::read_dir(&dir).map_err(|e| DatapathError::io("reading", &dir, e))?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let Some((fd, info)) = open_link(&path).ok().flatten() else {
            warn!(pin = %path.display(), "not a readable link; removing the pin");
            remove_pin(&path)?;
            out.pruned += 1;
            continue;
        };
        let defunct = matches!(
            info.target,
            LinkTarget::Tcx { ifindex: 0, .. } | LinkTarget::Cgroup { cgroup_id: 0, .. }
        );
        if defunct {
            debug!(pin = %name, "link is defunct (its interface or cgroup is gone); unpinning");
            detach_pin(&path)?;
            out.pruned += 1;
            continue;
        }
        let program = program_of_pin(&name).and_then(|p| ebpf.program(p).map(|prog| (p, prog)));
        match program {
            Some((program_name, program)) => {
                match ensure_program(&path, &fd, &info, program_name, program) {
                    Ok(Attached::Updated) => out.updated += 1,
                    Ok(_) => out.unchanged += 1,
                    Err(e) => {
                        // The old program keeps running: better than a gap.
                        warn!(pin = %name, error = %e, "could not swap in the new program");
                        out.failed += 1;
                    }
                }
            }
            None => {
                warn!(pin = %name, "this version has no program for this link; detaching it");
                detach_pin(&path)?;
                out.dropped += 1;
            }
        }
    }
    Ok(out)
}

/// Pins of links whose interface or cgroup is gone: unpins them.
pub fn prune_defunct(pins: &PinLayout) -> DatapathResult<usize> {
    let dir = pins.links_dir();
    let entries = std::fs::read_dir(&dir).map_err(|e| DatapathError::io("reading", &dir, e))?;
    let mut pruned = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if let Some((_, info)) = open_link(&path).ok().flatten()
            && matches!(
                info.target,
                LinkTarget::Tcx { ifindex: 0, .. } | LinkTarget::Cgroup { cgroup_id: 0, .. }
            )
        {
            detach_pin(&path)?;
            pruned += 1;
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_round_trip() {
        for hook in TcHook::ALL {
            let name = hook.pin_name(42);
            assert_eq!(TcHook::parse_pin_name(&name), Some((hook, 42)), "{name}");
            assert_eq!(program_of_pin(&name), Some(hook.program()));
        }
        assert_eq!(TcHook::PodIngress.pin_name(7), "pod-7-ingress");
        assert_eq!(TcHook::NetdevEgress.pin_name(2), "netdev-2-egress");
        let cg = cgroup_pin_name(1234, progs::SOCK_CONNECT4);
        assert_eq!(cg, "cgroup-1234-weir_sock_connect4");
        assert_eq!(
            parse_cgroup_pin_name(&cg),
            Some((1234, progs::SOCK_CONNECT4))
        );
        assert_eq!(program_of_pin(&cg), Some(progs::SOCK_CONNECT4));
        assert_eq!(TcHook::parse_pin_name("pod-x-ingress"), None);
        assert_eq!(program_of_pin("junk"), None);
    }
}
