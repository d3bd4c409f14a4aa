//! Matrix server names: `host[:port]` where host is a DNS name, an IPv4 address or an
//! `[IPv6]` literal. Discovery treats IP literals differently from names.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use crate::error::{Error, Result};

/// Longest server name accepted (the spec allows 255 characters).
pub const MAX_SERVER_NAME_LEN: usize = 255;

/// The host part of a server name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    /// A DNS name, lowercased.
    Name(String),
}

impl Host {
    /// As written in a URL or a `Host` header: IPv6 in brackets.
    pub fn to_url_host(&self) -> String {
        match self {
            Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
            Host::Ip(ip) => ip.to_string(),
            Host::Name(name) => name.clone(),
        }
    }
}

/// A parsed server name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerName {
    pub host: Host,
    pub port: Option<u16>,
}

impl ServerName {
    pub fn parse(text: &str) -> Result<ServerName> {
        let invalid = || Error::InvalidServerName(text.to_owned());
        if text.is_empty() || text.len() > MAX_SERVER_NAME_LEN {
            return Err(invalid());
        }
        let (host_text, port) = if let Some(rest) = text.strip_prefix('[') {
            let (v6, after) = rest.split_once(']').ok_or_else(invalid)?;
            let ip: Ipv6Addr = v6.parse().map_err(|_| invalid())?;
            let port = match after {
                "" => None,
                p => {
                    Some(parse_port(p.strip_prefix(':').ok_or_else(invalid)?).ok_or_else(invalid)?)
                }
            };
            return Ok(ServerName {
                host: Host::Ip(IpAddr::V6(ip)),
                port,
            });
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) => (host, Some(parse_port(port).ok_or_else(invalid)?)),
                None => (text, None),
            }
        };
        if let Ok(ip) = host_text.parse::<std::net::Ipv4Addr>() {
            return Ok(ServerName {
                host: Host::Ip(IpAddr::V4(ip)),
                port,
            });
        }
        if !is_dns_name(host_text) {
            return Err(invalid());
        }
        Ok(ServerName {
            host: Host::Name(host_text.to_ascii_lowercase()),
            port,
        })
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host.to_url_host()),
            None => f.write_str(&self.host.to_url_host()),
        }
    }
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|p| *p != 0)
}

/// Letters, digits, `-` and `.`; labels of 1–63 characters. (A host name made only of
/// digits and dots that is not a valid IPv4 address is refused too.)
fn is_dns_name(text: &str) -> bool {
    let labels_ok = text.split('.').all(|l| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    labels_ok && !text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_of_the_spec() {
        let n = ServerName::parse("Example.org").unwrap();
        assert_eq!(n.host, Host::Name("example.org".into()));
        assert_eq!(n.port, None);
        let n = ServerName::parse("example.org:8448").unwrap();
        assert_eq!(n.port, Some(8448));
        let n = ServerName::parse("127.0.0.1:8481").unwrap();
        assert_eq!(n.host, Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(n.to_string(), "127.0.0.1:8481");
        let n = ServerName::parse("[::1]:8448").unwrap();
        assert_eq!(n.host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(n.to_string(), "[::1]:8448");
        assert_eq!(ServerName::parse("[2001:db8::1]").unwrap().port, None);
        for bad in [
            "",
            "example.org:",
            "example.org:0",
            "example.org:99999",
            "ex ample.org",
            "[::1",
            "::1",
            "a..b",
            "1.2.3",
            "example.org:80:80",
            "exa/mple.org",
        ] {
            assert!(ServerName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
