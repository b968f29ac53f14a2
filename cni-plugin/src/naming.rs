//! The host-side veth name, derived from the attachment so DEL and GC can
//! find the link again without any state.

/// Prefix of every host-side veth; the agent can recognise pod links by it.
pub const HOST_VETH_PREFIX: &str = "weir";

/// `"weir"` + the first 11 hex digits of the 64-bit FNV-1a hash of
/// `container_id`, a NUL byte and `ifname`: 15 bytes, the kernel's limit.
/// FNV-1a is fixed by its definition, so the name never changes between
/// builds or versions. 44 bits make accidental collisions negligible on a
/// node; a collision would surface as an ADD error, never as a shared link.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let hash = fnv1a64(
        container_id
            .bytes()
            .chain(std::iter::once(0))
            .chain(ifname.bytes()),
    );
    let hex = format!("{hash:016x}");
    format!("{HOST_VETH_PREFIX}{}", hex.get(..11).unwrap_or(&hex))
}

fn fnv1a64(bytes: impl Iterator<Item = u8>) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn fnv1a_reference_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a64("".bytes()), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64("a".bytes()), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64("foobar".bytes()), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn name_is_stable_and_fits_ifnamsiz() {
        let name = host_veth_name("abc123", "eth0");
        assert_eq!(name, host_veth_name("abc123", "eth0"));
        assert_eq!(name.len(), 15);
        assert!(name.starts_with("weir"));
        assert!(name[4..].chars().all(|c| c.is_ascii_hexdigit()));
        // Pinned: the lab and the agent rely on the exact scheme.
        assert_eq!(host_veth_name("", ""), "weiraf63bd4c860");
    }

    #[test]
    fn name_depends_on_id_and_ifname() {
        let base = host_veth_name("abc", "eth0");
        assert_ne!(base, host_veth_name("abd", "eth0"));
        assert_ne!(base, host_veth_name("abc", "eth1"));
        // The separator keeps ("ab","ceth0") apart from ("abc","eth0").
        assert_ne!(base, host_veth_name("ab", "ceth0"));
    }

    #[test]
    fn no_collisions_among_many_pods() {
        let names: HashSet<String> = (0..20_000)
            .map(|i| host_veth_name(&format!("{i:064x}"), "eth0"))
            .collect();
        assert_eq!(names.len(), 20_000);
    }
}
