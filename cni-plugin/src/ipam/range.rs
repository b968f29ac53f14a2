//! IPv4 ranges and range sets with host-local's canonicalisation rules.

use std::fmt;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

/// One `ranges[i][j]` entry after defaults are applied: an inclusive
/// `start..=end` inside `subnet`, and the gateway pods route through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: Ipv4Network,
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

impl Range {
    /// Applies host-local's defaults (start = network+1, end = broadcast-1,
    /// gateway = network+1) and checks every address lies in the subnet and
    /// is neither its network nor its broadcast address.
    pub fn new(
        subnet: Ipv4Network,
        start: Option<Ipv4Addr>,
        end: Option<Ipv4Addr>,
        gateway: Option<Ipv4Addr>,
    ) -> Result<Self, String> {
        // Canonical form: "10.244.1.5/24" means 10.244.1.0/24.
        let subnet = Ipv4Network::new(subnet.network(), subnet.prefix())
            .map_err(|e| format!("subnet {subnet}: {e}"))?;
        if subnet.prefix() > 30 {
            return Err(format!("subnet {subnet} is too small to allocate from"));
        }
        let network = u32::from(subnet.network());
        let broadcast = u32::from(subnet.broadcast());
        let first_host = Ipv4Addr::from(network + 1);
        let last_host = Ipv4Addr::from(broadcast - 1);
        let check = |what: &str, ip: Ipv4Addr| -> Result<Ipv4Addr, String> {
            if !subnet.contains(ip) {
                return Err(format!("{what} {ip} is outside subnet {subnet}"));
            }
            if ip == subnet.network() || ip == subnet.broadcast() {
                return Err(format!(
                    "{what} {ip} is the network or broadcast address of {subnet}"
                ));
            }
            Ok(ip)
        };
        let start = check("rangeStart", start.unwrap_or(first_host))?;
        let end = check("rangeEnd", end.unwrap_or(last_host))?;
        let gateway = check("gateway", gateway.unwrap_or(first_host))?;
        if start > end {
            return Err(format!("rangeStart {start} is after rangeEnd {end}"));
        }
        Ok(Self {
            subnet,
            start,
            end,
            gateway,
        })
    }

    /// Inside `start..=end` (the gateway included).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.start <= ip && ip <= self.end
    }

    /// Whether the allocator may hand `ip` out from this range.
    pub fn is_allocatable(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip)
            && ip != self.gateway
            && ip != self.subnet.network()
            && ip != self.subnet.broadcast()
    }

    pub fn overlaps(&self, other: &Range) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// One `ranges[i]`: the allocator hands out one address per range set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    pub ranges: Vec<Range>,
}

impl RangeSet {
    pub fn new(ranges: Vec<Range>) -> Result<Self, String> {
        if ranges.is_empty() {
            return Err("empty range set".to_string());
        }
        for (i, a) in ranges.iter().enumerate() {
            for b in ranges.iter().skip(i + 1) {
                if a.overlaps(b) {
                    return Err(format!("range {a} overlaps with range {b}"));
                }
            }
        }
        Ok(Self { ranges })
    }

    /// The range containing `ip`, with its index.
    pub fn range_for(&self, ip: Ipv4Addr) -> Option<(usize, &Range)> {
        self.ranges.iter().enumerate().find(|(_, r)| r.contains(ip))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.range_for(ip).is_some()
    }

    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.ranges
            .iter()
            .any(|a| other.ranges.iter().any(|b| a.overlaps(b)))
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.ranges.iter().map(Range::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_follow_host_local() {
        let r = Range::new(net("10.244.1.0/24"), None, None, None).unwrap();
        assert_eq!(r.start, ip("10.244.1.1"));
        assert_eq!(r.end, ip("10.244.1.254"));
        assert_eq!(r.gateway, ip("10.244.1.1"));
    }

    #[test]
    fn subnet_is_canonicalised() {
        let r = Range::new(net("10.244.1.77/24"), None, None, None).unwrap();
        assert_eq!(r.subnet, net("10.244.1.0/24"));
    }

    #[test]
    fn tiny_subnets_are_rejected() {
        assert!(Range::new(net("10.0.0.0/31"), None, None, None).is_err());
        assert!(Range::new(net("10.0.0.0/32"), None, None, None).is_err());
        assert!(Range::new(net("10.0.0.0/30"), None, None, None).is_ok());
    }

    #[test]
    fn bounds_must_be_inside_and_ordered() {
        let s = net("10.0.0.0/24");
        assert!(Range::new(s, Some(ip("10.0.1.5")), None, None).is_err());
        assert!(Range::new(s, Some(ip("10.0.0.0")), None, None).is_err());
        assert!(Range::new(s, None, Some(ip("10.0.0.255")), None).is_err());
        assert!(Range::new(s, None, None, Some(ip("10.0.3.1"))).is_err());
        assert!(Range::new(s, Some(ip("10.0.0.9")), Some(ip("10.0.0.8")), None).is_err());
        let r = Range::new(s, Some(ip("10.0.0.8")), Some(ip("10.0.0.8")), None).unwrap();
        assert!(r.is_allocatable(ip("10.0.0.8")));
    }

    #[test]
    fn gateway_network_broadcast_are_not_allocatable() {
        let r = Range::new(net("10.0.0.0/24"), None, None, Some(ip("10.0.0.7"))).unwrap();
        assert!(!r.is_allocatable(ip("10.0.0.7")));
        assert!(!r.is_allocatable(ip("10.0.0.0")));
        assert!(!r.is_allocatable(ip("10.0.0.255")));
        assert!(r.is_allocatable(ip("10.0.0.1")));
    }

    #[test]
    fn overlapping_ranges_in_a_set_are_rejected() {
        let a = Range::new(net("10.0.0.0/24"), None, Some(ip("10.0.0.100")), None).unwrap();
        let b = Range::new(net("10.0.0.0/24"), Some(ip("10.0.0.100")), None, None).unwrap();
        let c = Range::new(net("10.0.0.0/24"), Some(ip("10.0.0.101")), None, None).unwrap();
        assert!(RangeSet::new(vec![a.clone(), b]).is_err());
        let set = RangeSet::new(vec![a, c]).unwrap();
        assert_eq!(set.range_for(ip("10.0.0.150")).unwrap().0, 1);
        assert_eq!(set.to_string(), "10.0.0.1-10.0.0.100,10.0.0.101-10.0.0.254");
    }
}
