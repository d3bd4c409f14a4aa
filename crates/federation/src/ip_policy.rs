//! Which addresses the media repo may dial on federation (remote media, key documents,
//! `.well-known`): a server name is chosen by whoever uploaded or referenced the media, so
//! without these rules anyone could make us fetch from our own loopback, LAN or cloud
//! metadata service (SSRF).
//!
//! Rule: an address is allowed if it is globally routable, or if an operator's allow-list
//! entry contains it. Not globally routable: IPv4 "this network" 0/8, private 10/8,
//! 172.16/12, 192.168/16, CGNAT 100.64/10, loopback 127/8, link-local 169.254/16, IETF
//! protocol assignments 192.0.0/24, documentation 192.0.2/24, 198.51.100/24, 203.0.113/24,
//! the old 6to4 relay anycast 192.88.99/24, benchmarking 198.18/15, multicast 224/4,
//! reserved 240/4 (with broadcast 255.255.255.255). IPv6: everything outside global
//! unicast 2000::/3 (so ::, ::1, discard-only 100::/64, unique local fc00::/7, link-local
//! fe80::/10, site-local fec0::/10, multicast ff00::/8, local-use NAT64 64:ff9b:1::/48),
//! and inside it the IETF protocol assignments 2001::/23 (benchmarking, ORCHID, …),
//! documentation 2001:db8::/32 and 3fff::/20. Addresses that carry an IPv4 address are
//! judged by it: IPv4-mapped ::ffff:0:0/96, IPv4-compatible ::/96, NAT64 64:ff9b::/96,
//! 6to4 2002::/16, and Teredo 2001::/32 (its server and its client address must both pass).
//!
//! Pure: decides from the address alone, never resolves or connects.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::error::CidrError;

/// IPv4 ranges that are not globally routable, with the reason (for readers and tests).
const DENY_V4: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 8, "this network"),
    ([10, 0, 0, 0], 8, "private"),
    ([100, 64, 0, 0], 10, "shared address space (CGNAT)"),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link-local"),
    ([172, 16, 0, 0], 12, "private"),
    ([192, 0, 0, 0], 24, "IETF protocol assignments"),
    ([192, 0, 2, 0], 24, "documentation (TEST-NET-1)"),
    ([192, 88, 99, 0], 24, "6to4 relay anycast (deprecated)"),
    ([192, 168, 0, 0], 16, "private"),
    ([198, 18, 0, 0], 15, "benchmarking"),
    ([198, 51, 100, 0], 24, "documentation (TEST-NET-2)"),
    ([203, 0, 113, 0], 24, "documentation (TEST-NET-3)"),
    ([224, 0, 0, 0], 4, "multicast"),
    ([240, 0, 0, 0], 4, "reserved, and broadcast"),
];

/// IPv6 ranges inside global unicast 2000::/3 that are not globally routable. (Everything
/// outside 2000::/3 is refused by rule; Teredo and 6to4 are judged by their IPv4 first.)
const DENY_V6: &[([u16; 8], u8, &str)] = &[
    (
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "IETF protocol assignments",
    ),
    ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation"),
    ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation"),
];

/// An IP address range (`10.0.0.0/8`, `2001:db8::/32`) or single address, for allow-lists.
/// IPv4-mapped IPv6 ranges (`::ffff:127.0.0.1/128`) are stored as their IPv4 form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The range of `addr`/`prefix`; host bits below the prefix are cleared
    /// (`10.1.2.3/8` is `10.0.0.0/8`).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(CidrError::PrefixTooLong { prefix, max });
        }
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        Ok(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Exactly one address.
    pub fn single(addr: IpAddr) -> Cidr {
        let addr = addr.to_canonical();
        Cidr {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as its IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `1.2.3.4`, `1.2.3.0/24`, `::1`, `fe80::/10`.
    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let invalid = || CidrError::Invalid(text.chars().take(64).collect());
        let text = text.trim();
        match text.split_once('/') {
            Some((addr, prefix)) => {
                let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
                // Digits only: u8's parser would also take "+8".
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid());
                }
                let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
                Cidr::new(addr, prefix)
            }
            None => Ok(Cidr::single(text.parse().map_err(|_| invalid())?)),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4) & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// The SSRF rule for outgoing federation connections: global addresses, plus whatever the
/// operator allow-listed (a test homeserver on 127.0.0.1, a LAN peer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpPolicy {
    allow: Vec<Cidr>,
}

impl IpPolicy {
    pub fn new(allow: Vec<Cidr>) -> IpPolicy {
        IpPolicy { allow }
    }

    /// Whether we may connect to `ip`. Check every address a name resolves to, at connect
    /// time (not before), so DNS cannot swap in a private one.
    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|range| range.contains(ip)) || is_globally_routable(ip)
    }

    pub fn allow_list(&self) -> &[Cidr] {
        &self.allow
    }
}

/// Whether `ip` is a globally routable unicast address (module doc lists what is not).
pub fn is_globally_routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_is_global(v4),
        IpAddr::V6(v6) => v6_is_global(v6),
    }
}

fn v4_is_global(ip: Ipv4Addr) -> bool {
    let bits = u32::from(ip);
    !DENY_V4.iter().any(|&(net, prefix, _)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        bits & mask == u32::from_be_bytes(net)
    })
}

fn v6_is_global(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    let in_range = |net: u128, prefix: u32| {
        let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
        bits & mask == net
    };
    let v4_at = |shift: u32| Ipv4Addr::from((bits >> shift) as u32);

    if ip.is_unspecified() || ip.is_loopback() {
        return false;
    }
    // IPv4-mapped ::ffff:a.b.c.d and IPv4-compatible ::a.b.c.d: the IPv4 is what we reach.
    if in_range(0xffff << 32, 96) || in_range(0, 96) {
        return v4_is_global(v4_at(0));
    }
    // NAT64 well-known prefix 64:ff9b::/96: a translator forwards to the embedded IPv4.
    if in_range(0x0064_ff9b << 96, 96) {
        return v4_is_global(v4_at(0));
    }
    // 6to4 2002:AABB:CCDD::/48 tunnels to AA.BB.CC.DD.
    if in_range(0x2002 << 112, 16) {
        return v4_is_global(v4_at(80));
    }
    // Teredo 2001:0:SSSS:SSSS:flags:port:CCCC:CCCC, client address stored inverted.
    if in_range(0x2001 << 112, 32) {
        let server = v4_at(64);
        let client = Ipv4Addr::from(!(bits as u32));
        return v4_is_global(server) && v4_is_global(client);
    }
    if !in_range(0x2000 << 112, 3) {
        return false;
    }
    !DENY_V6.iter().any(|&(net, prefix, _)| {
        let net = u128::from(Ipv6Addr::from(net));
        in_range(net, u32::from(prefix))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn verdicts_without_allow_list() {
        let policy = IpPolicy::default();
        let table: &[(&str, bool)] = &[
            // Globally routable.
            ("1.1.1.1", true),
            ("8.8.8.8", true),
            ("93.184.215.14", true),
            ("100.63.255.255", true),
            ("100.128.0.0", true),
            ("172.15.255.255", true),
            ("172.32.0.0", true),
            ("192.0.1.1", true),
            ("192.169.0.1", true),
            ("198.17.255.255", true),
            ("198.20.0.0", true),
            ("223.255.255.255", true),
            ("2606:4700:4700::1111", true),
            ("2a00:1450:4001:80b::200e", true),
            ("::ffff:8.8.8.8", true),
            ("64:ff9b::808:808", true),
            ("2002:808:808::1", true),
            // Teredo: server 65.54.227.120, client 1.2.3.4 stored inverted.
            ("2001:0:4136:e378:8000:63bf:fefd:fcfb", true),
            // IPv4 not globally routable.
            ("0.0.0.0", false),
            ("0.1.2.3", false),
            ("10.0.0.1", false),
            ("10.255.255.255", false),
            ("100.64.0.1", false),
            ("100.127.255.254", false),
            ("127.0.0.1", false),
            ("127.255.255.254", false),
            ("169.254.169.254", false),
            ("172.16.0.1", false),
            ("172.31.255.255", false),
            ("192.0.0.8", false),
            ("192.0.2.1", false),
            ("192.88.99.1", false),
            ("192.168.1.1", false),
            ("198.18.0.1", false),
            ("198.19.255.255", false),
            ("198.51.100.7", false),
            ("203.0.113.9", false),
            ("224.0.0.1", false),
            ("239.255.255.250", false),
            ("240.0.0.1", false),
            ("255.255.255.255", false),
            // IPv6 not globally routable.
            ("::", false),
            ("::1", false),
            ("100::1", false),
            ("fc00::1", false),
            ("fd12:3456:789a::1", false),
            ("fe80::1", false),
            ("febf::1", false),
            ("fec0::1", false),
            ("ff02::1", false),
            ("ff0e::1", false),
            ("2001:db8::1", false),
            ("2001:2::1", false),
            ("2001:20::1", false),
            ("3fff::1", false),
            ("64:ff9b:1::1", false),
            ("4000::1", false),
            // IPv6 carrying a private or special IPv4: judged by it.
            ("::ffff:127.0.0.1", false),
            ("::ffff:10.0.0.1", false),
            ("::ffff:169.254.169.254", false),
            ("::127.0.0.1", false),
            ("::192.168.0.1", false),
            ("64:ff9b::7f00:1", false),
            ("64:ff9b::a9fe:a9fe", false),
            ("2002:7f00:1::1", false),
            ("2002:c0a8:101::1", false),
            // Teredo with a private client (192.168.1.1 inverted) or server.
            ("2001:0:4136:e378:8000:63bf:3f57:fefe", false),
            ("2001:0:a00:1:8000:63bf:fefd:fcfb", false),
        ];
        for &(text, expected) in table {
            assert_eq!(policy.is_allowed(ip(text)), expected, "{text}");
            assert_eq!(is_globally_routable(ip(text)), expected, "{text}");
        }
    }

    #[test]
    fn allow_list_overrides_exactly_what_it_lists() {
        let policy = IpPolicy::new(vec!["127.0.0.1".parse().unwrap()]);
        assert!(policy.is_allowed(ip("127.0.0.1")));
        assert!(policy.is_allowed(ip("::ffff:127.0.0.1")));
        assert!(!policy.is_allowed(ip("127.0.0.2")));
        assert!(!policy.is_allowed(ip("::1")));
        assert!(!IpPolicy::default().is_allowed(ip("127.0.0.1")));
        // Global addresses stay allowed with an allow-list.
        assert!(policy.is_allowed(ip("8.8.8.8")));

        let policy = IpPolicy::new(vec![
            "10.1.0.0/16".parse().unwrap(),
            "fd00:1::/32".parse().unwrap(),
            "::ffff:192.168.7.0/120".parse().unwrap(),
        ]);
        assert!(policy.is_allowed(ip("10.1.255.3")));
        assert!(!policy.is_allowed(ip("10.2.0.1")));
        assert!(policy.is_allowed(ip("fd00:1:ffff::9")));
        assert!(!policy.is_allowed(ip("fd00:2::9")));
        assert!(policy.is_allowed(ip("192.168.7.200")));
        assert!(!policy.is_allowed(ip("192.168.8.1")));
        assert_eq!(policy.allow_list().len(), 3);
    }

    #[test]
    fn cidr_parsing_and_normalising() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert_eq!(c, Cidr::new(ip("10.0.0.0"), 8).unwrap());
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert_eq!("1.2.3.4".parse::<Cidr>().unwrap().prefix(), 32);
        assert_eq!(
            "::ffff:1.2.3.4".parse::<Cidr>().unwrap(),
            Cidr::single(ip("1.2.3.4"))
        );
        assert_eq!("fe80::1/10".parse::<Cidr>().unwrap().addr(), ip("fe80::"));
        let everything: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(everything.contains(ip("255.1.2.3")));
        assert!(!everything.contains(ip("::1")), "families never mix");
        assert!("::/0".parse::<Cidr>().unwrap().contains(ip("fe80::1")));

        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong {
                prefix: 33,
                max: 32
            })
        );
        assert_eq!(
            "::/129".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong {
                prefix: 129,
                max: 128
            })
        );
        for bad in [
            "",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/x",
            "host",
            "1.2.3.4/8/8",
        ] {
            assert!(
                matches!(bad.parse::<Cidr>(), Err(CidrError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
