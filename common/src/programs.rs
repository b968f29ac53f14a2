//! Program names in the eBPF object (their ELF symbols). The kernel keeps
//! only the first 15 bytes of a name; these stay unique when truncated, and
//! pins use the full names.

/// TC ingress of a pod's host-side veth: packets leaving the pod.
pub const FROM_POD: &str = "weir_from_pod";
/// TC egress of a pod's host-side veth: packets entering the pod.
pub const TO_POD: &str = "weir_to_pod";
/// TC ingress of the node's uplink (`eth0`): traffic from outside the node.
pub const FROM_NETDEV: &str = "weir_from_netdev";
/// TC egress of the node's uplink: traffic leaving the node.
pub const TO_NETDEV: &str = "weir_to_netdev";
/// cgroup `connect4`: socket-level LB of TCP and connected UDP.
pub const SOCK_CONNECT4: &str = "weir_sock_connect4";
/// cgroup `sendmsg4`: socket-level LB of unconnected UDP.
pub const SOCK_SENDMSG4: &str = "weir_sock_sendmsg4";
/// cgroup `recvmsg4`: reports the service address as a datagram's source.
pub const SOCK_RECVMSG4: &str = "weir_sock_recvmsg4";
/// cgroup `getpeername4`: reports the service address as the peer.
pub const SOCK_GETPEERNAME4: &str = "weir_sock_getpeername4";

/// The TC programs.
pub const TC: [&str; 4] = [FROM_POD, TO_POD, FROM_NETDEV, TO_NETDEV];
/// The cgroup sock_addr programs.
pub const SOCK: [&str; 4] = [
    SOCK_CONNECT4,
    SOCK_SENDMSG4,
    SOCK_RECVMSG4,
    SOCK_GETPEERNAME4,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_unique_when_the_kernel_truncates_them() {
        let all: [&str; 8] = [
            TC[0], TC[1], TC[2], TC[3], SOCK[0], SOCK[1], SOCK[2], SOCK[3],
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(crate::maps::kernel_name(a), crate::maps::kernel_name(b));
            }
        }
    }
}
