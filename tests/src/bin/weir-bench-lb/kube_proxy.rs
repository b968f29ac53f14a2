//! kube-proxy's rule layouts for ClusterIP services, generated the way kube-proxy writes them,
//! to be loaded into a lab node's own network namespace (never the machine's).
//!
//! * **iptables mode** (`iptables-restore` input): `PREROUTING`/`OUTPUT` → `KUBE-SERVICES`, one
//!   rule per service port matching address, protocol and port → `KUBE-SVC-<hash>`, which marks
//!   off-cluster sources for masquerade and picks an endpoint with cascading
//!   `-m statistic --mode random --probability 1/n` rules → `KUBE-SEP-<hash>`, which marks
//!   hairpin traffic and DNATs. `KUBE-SERVICES` ends with the NodePort jump; the filter table
//!   gets kube-proxy's `KUBE-FORWARD`, `KUBE-PROXY-FIREWALL`, ... jumps. Chain names are
//!   kube-proxy's (base32 of SHA-256, 16 characters).
//! * **nftables mode** (`nft -f` input): table `ip kube-proxy` with kube-proxy's base chains, the
//!   `services` chain dispatching through the `service-ips` verdict map (address . protocol .
//!   port → `goto service-<hash>-<ns>/<name>/tcp/<port>`), per-service chains with the masquerade
//!   rule and `numgen random mod n vmap { ... }`, per-endpoint chains with the hairpin mark and
//!   `dnat to`. Modelled on kube-proxy's nftables proxier (`setupNFTables`, `syncProxyRules`).
//!
//! Services keep the order given: in iptables mode a service's position in `KUBE-SERVICES` is
//! how many rules a new connection to it walks first.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::manifests::{NAMESPACE, PORT_NAME, Service};

/// kube-proxy's default masquerade mark (bit 14).
const MASQ_MARK: &str = "0x4000";

/// `iptables-restore` input for the nat and filter tables.
pub fn iptables_restore(services: &[Service], cluster_cidr: &str) -> String {
    let mut chains = String::new();
    let mut rules = String::new();
    for service in services {
        let port_name = service.port_name();
        let svc_chain = format!("KUBE-SVC-{}", hash16(&format!("{port_name}tcp")));
        let _ = writeln!(chains, ":{svc_chain} - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment \"{port_name} cluster IP\" \
             -m tcp --dport {port} -j {svc_chain}",
            vip = service.vip,
            port = service.port
        );
        let _ = writeln!(
            rules,
            "-A {svc_chain} ! -s {cluster_cidr} -d {vip}/32 -p tcp -m comment --comment \
             \"{port_name} cluster IP\" -m tcp --dport {port} -j KUBE-MARK-MASQ",
            vip = service.vip,
            port = service.port
        );
        let n = service.endpoints.len();
        for (i, endpoint) in service.endpoints.iter().enumerate() {
            let ep = format!("{endpoint}:{}", service.target_port);
            let sep_chain = format!("KUBE-SEP-{}", hash16(&format!("{port_name}tcp{ep}")));
            let _ = writeln!(chains, ":{sep_chain} - [0:0]");
            let remaining = n - i;
            if remaining > 1 {
                let _ = writeln!(
                    rules,
                    "-A {svc_chain} -m comment --comment \"{port_name} -> {ep}\" -m statistic \
                     --mode random --probability {:.10} -j {sep_chain}",
                    1.0 / remaining as f64
                );
            } else {
                let _ = writeln!(
                    rules,
                    "-A {svc_chain} -m comment --comment \"{port_name} -> {ep}\" -j {sep_chain}"
                );
            }
            let _ = writeln!(
                rules,
                "-A {sep_chain} -s {endpoint}/32 -m comment --comment \"{port_name}\" -j KUBE-MARK-MASQ"
            );
            let _ = writeln!(
                rules,
                "-A {sep_chain} -p tcp -m comment --comment \"{port_name}\" -m tcp -j DNAT \
                 --to-destination {ep}"
            );
        }
    }
    let mut out = String::new();
    out.push_str(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n\
         :KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n",
    );
    out.push_str(&chains);
    out.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
    );
    let _ = writeln!(out, "-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}");
    let _ = writeln!(
        out,
        "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"
    );
    let _ = writeln!(out, "-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}");
    out.push_str(
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" \
         -j MASQUERADE --random-fully\n",
    );
    out.push_str(&rules);
    out.push_str(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be \
         the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\nCOMMIT\n",
    );
    out.push_str(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :KUBE-EXTERNAL-SERVICES - [0:0]\n:KUBE-FORWARD - [0:0]\n:KUBE-NODEPORTS - [0:0]\n\
         :KUBE-PROXY-FIREWALL - [0:0]\n:KUBE-SERVICES - [0:0]\n\
         -A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
         -A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS\n\
         -A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
         -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
         -A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
         -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
         -A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
         -A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n",
    );
    let _ = writeln!(
        out,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark \
         {MASQ_MARK}/{MASQ_MARK} -j ACCEPT"
    );
    out.push_str(
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack \
         --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n",
    );
    out
}

/// `nft -f` input creating table `ip kube-proxy`. Chains and maps are declared before any rule
/// refers to them.
pub fn nft_script(services: &[Service], cluster_cidr: &str) -> String {
    const TABLE: &str = "ip kube-proxy";
    let mut out = String::new();
    let _ = writeln!(
        out,
        "add table {TABLE} {{ comment \"rules for kube-proxy\" ; }}"
    );
    // kube-proxy's priorities `dstnat - 10`, `dstnat` and `srcnat` as numbers: nft 1.0.6
    // accepts those names only on some hooks.
    for (name, kind, hook, priority) in [
        ("filter-prerouting", "filter", "prerouting", "-110"),
        ("filter-input", "filter", "input", "-110"),
        ("filter-forward", "filter", "forward", "-110"),
        ("filter-output", "filter", "output", "-110"),
        ("nat-prerouting", "nat", "prerouting", "-100"),
        ("nat-output", "nat", "output", "-100"),
        ("nat-postrouting", "nat", "postrouting", "100"),
    ] {
        let _ = writeln!(
            out,
            "add chain {TABLE} {name} {{ type {kind} hook {hook} priority {priority} ; policy accept ; }}"
        );
    }
    for chain in [
        "endpoints-check",
        "firewall-check",
        "services",
        "masquerading",
        "mark-for-masquerade",
        "reject-chain",
    ] {
        let _ = writeln!(out, "add chain {TABLE} {chain}");
    }
    for (map, key) in [
        (
            "no-endpoint-services",
            "ipv4_addr . inet_proto . inet_service",
        ),
        ("no-endpoint-nodeports", "inet_proto . inet_service"),
        ("firewall-ips", "ipv4_addr . inet_proto . inet_service"),
        ("service-ips", "ipv4_addr . inet_proto . inet_service"),
        ("service-nodeports", "inet_proto . inet_service"),
    ] {
        let _ = writeln!(out, "add map {TABLE} {map} {{ type {key} : verdict ; }}");
    }
    // Per-service and per-endpoint chains, declared first.
    let named: Vec<(String, Vec<String>)> = services
        .iter()
        .map(|s| {
            let base = format!("{NAMESPACE}/{}/tcp/{PORT_NAME}", s.name);
            let service_chain = format!("service-{}", hash_and_name(&base));
            let endpoint_chains = s
                .endpoints
                .iter()
                .map(|e| {
                    format!(
                        "endpoint-{}",
                        hash_and_name(&format!("{base}__{e}/{}", s.target_port))
                    )
                })
                .collect();
            (service_chain, endpoint_chains)
        })
        .collect();
    for (service_chain, endpoint_chains) in &named {
        let _ = writeln!(out, "add chain {TABLE} {service_chain}");
        for chain in endpoint_chains {
            let _ = writeln!(out, "add chain {TABLE} {chain}");
        }
    }
    // The fixed rules (setupNFTables).
    for (chain, rule) in [
        ("filter-input", "ct state new jump endpoints-check"),
        ("filter-forward", "ct state new jump endpoints-check"),
        ("filter-output", "ct state new jump endpoints-check"),
        ("filter-prerouting", "ct state new jump firewall-check"),
        ("filter-output", "ct state new jump firewall-check"),
        ("nat-output", "jump services"),
        ("nat-prerouting", "jump services"),
        ("nat-postrouting", "jump masquerading"),
        ("mark-for-masquerade", "mark set mark or 0x4000"),
        ("masquerading", "mark and 0x4000 == 0 return"),
        ("masquerading", "mark set mark xor 0x4000"),
        ("masquerading", "masquerade fully-random"),
        ("reject-chain", "reject"),
        (
            "endpoints-check",
            "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
        ),
        (
            "endpoints-check",
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports",
        ),
        (
            "firewall-check",
            "ip daddr . meta l4proto . th dport vmap @firewall-ips",
        ),
        (
            "services",
            "ip daddr . meta l4proto . th dport vmap @service-ips",
        ),
        (
            "services",
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
        ),
    ] {
        let _ = writeln!(out, "add rule {TABLE} {chain} {rule}");
    }
    // Per-service rules (syncProxyRules).
    for (service, (service_chain, endpoint_chains)) in services.iter().zip(&named) {
        let _ = writeln!(
            out,
            "add rule {TABLE} {service_chain} ip daddr {vip} tcp dport {port} ip saddr != {cluster_cidr} jump mark-for-masquerade",
            vip = service.vip,
            port = service.port
        );
        if !endpoint_chains.is_empty() {
            let arms: Vec<String> = endpoint_chains
                .iter()
                .enumerate()
                .map(|(i, chain)| format!("{i} : goto {chain}"))
                .collect();
            let _ = writeln!(
                out,
                "add rule {TABLE} {service_chain} numgen random mod {} vmap {{ {} }}",
                endpoint_chains.len(),
                arms.join(" , ")
            );
        }
        for (endpoint, chain) in service.endpoints.iter().zip(endpoint_chains) {
            let _ = writeln!(
                out,
                "add rule {TABLE} {chain} ip saddr {endpoint} jump mark-for-masquerade"
            );
            let _ = writeln!(
                out,
                "add rule {TABLE} {chain} meta l4proto tcp dnat to {endpoint}:{}",
                service.target_port
            );
        }
        let _ = writeln!(
            out,
            "add element {TABLE} service-ips {{ {} . tcp . {} : goto {service_chain} }}",
            service.vip, service.port
        );
    }
    out
}

/// kube-proxy iptables: the first 16 characters of base32(SHA-256(text)).
fn hash16(text: &str) -> String {
    let mut encoded = base32(&Sha256::digest(text.as_bytes()));
    encoded.truncate(16);
    encoded
}

/// kube-proxy nftables `hashAndTruncate`: 8 characters of base32(SHA-256(name)), a dash, the
/// name (our names stay far below the length limit).
fn hash_and_name(name: &str) -> String {
    let mut hash = base32(&Sha256::digest(name.as_bytes()));
    hash.truncate(8);
    format!("{hash}-{name}")
}

/// RFC 4648 base32 (standard alphabet, no padding needed for the prefixes used).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::net::Ipv4Addr;

    use super::*;
    use crate::manifests::numbered;

    fn three() -> Vec<Service> {
        numbered(2, 3, Ipv4Addr::new(10, 244, 1, 10))
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn iptables_has_one_dispatch_rule_per_service_and_a_probability_cascade() {
        let text = iptables_restore(&three(), "10.244.0.0/16");
        assert_eq!(text.matches("-A KUBE-SERVICES -d ").count(), 2);
        assert_eq!(text.matches("--probability 0.3333333333").count(), 2);
        assert_eq!(text.matches("--probability 0.5000000000").count(), 2);
        assert_eq!(text.matches("-j DNAT --to-destination").count(), 6);
        assert_eq!(text.matches("COMMIT").count(), 2);
        // The NodePort jump stays the last rule of KUBE-SERVICES.
        let last = text
            .lines()
            .rfind(|l| l.starts_with("-A KUBE-SERVICES"))
            .unwrap();
        assert!(last.contains("KUBE-NODEPORTS"), "{last}");
        // Every chain a rule jumps to is declared.
        for line in text.lines().filter(|l| l.starts_with("-A ")) {
            if let Some(target) = line.split(" -j ").nth(1) {
                let target = target.split_whitespace().next().unwrap();
                if target.starts_with("KUBE-") {
                    assert!(text.contains(&format!(":{target} ")), "{target} undeclared");
                }
            }
        }
    }

    #[test]
    fn iptables_chain_names_are_kube_proxys() {
        let text = iptables_restore(&three(), "10.244.0.0/16");
        let svc = format!("KUBE-SVC-{}", hash16("bench/svc-00000:httptcp"));
        assert_eq!(svc.len(), "KUBE-SVC-".len() + 16);
        assert!(text.contains(&format!(":{svc} - [0:0]")));
    }

    #[test]
    fn nft_declares_before_use_and_dispatches_by_verdict_map() {
        let text = nft_script(&three(), "10.244.0.0/16");
        assert_eq!(
            text.matches("add element ip kube-proxy service-ips")
                .count(),
            2
        );
        assert_eq!(text.matches("numgen random mod 3 vmap").count(), 2);
        assert_eq!(text.matches("dnat to 10.244.1.").count(), 6);
        let first_rule = text.find("add rule").unwrap();
        let last_chain = text.rfind("add chain").unwrap();
        let last_map = text.rfind("add map").unwrap();
        assert!(last_chain < first_rule && last_map < first_rule);
        assert!(text.contains("service-") && text.contains("-bench/svc-00001/tcp/http"));
    }
}
