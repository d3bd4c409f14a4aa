//! Matrix identifiers that reach storage: media ids we generate, and the allow-lists every
//! media id and server name from a request must pass before it touches the database.

use rand::distributions::Alphanumeric;
use rand::Rng;

/// Length of generated media ids: 32 characters of 62 symbols is ~190 bits, far beyond
/// guessing and collisions.
pub const MEDIA_ID_LEN: usize = 32;

/// Longest media id accepted from a request.
pub const MAX_MEDIA_ID_LEN: usize = 255;

/// Longest server name accepted (the spec caps the DNS name at 255; with `:port` a little more).
pub const MAX_SERVER_NAME_LEN: usize = 255 + 6;

/// Longest DNS label.
const MAX_LABEL_LEN: usize = 63;

/// A fresh media id from the thread-local CSPRNG (ChaCha, seeded from the OS).
pub fn random_media_id() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(MEDIA_ID_LEN)
        .map(char::from)
        .collect()
}

/// `[A-Za-z0-9_-]{1,255}`: the spec's media id grammar, length-capped. Rejects every
/// path trick (`.`, `/`, `%`, NUL, non-ASCII) by construction.
pub fn is_valid_media_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_MEDIA_ID_LEN
        // Every byte is looked at (no early exit), which lets the compiler check many at once.
        && s.bytes()
            .fold(true, |ok, b| ok & (b.is_ascii_alphanumeric() | (b == b'_') | (b == b'-')))
}

/// `hostname[:port]` where hostname is a DNS name, an IPv4 address or a bracketed IPv6
/// address. Stricter than the spec's character grammar where that only rejects nonsense:
/// DNS labels must be non-empty (no `..`, no leading or trailing dot) and at most 63
/// characters, and the port must be 1–65535.
pub fn is_valid_server_name(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_SERVER_NAME_LEN {
        return false;
    }
    let (host, port) = match split_port(s) {
        Some(parts) => parts,
        None => return false,
    };
    if let Some(port) = port {
        if !is_valid_port(port) {
            return false;
        }
    }
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.strip_suffix(']') {
            Some(addr) => addr.parse::<std::net::Ipv6Addr>().is_ok(),
            None => false,
        };
    }
    is_valid_dns_name(host)
}

/// Splits off an optional `:port`. `None` when the shape is wrong (e.g. an unbracketed
/// IPv6 address, or text after `]` that is not a port).
fn split_port(s: &str) -> Option<(&str, Option<&str>)> {
    if s.starts_with('[') {
        let close = s.find(']')?;
        let (host, rest) = s.split_at(close + 1);
        return match rest {
            "" => Some((host, None)),
            _ => rest.strip_prefix(':').map(|port| (host, Some(port))),
        };
    }
    match s.split_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((s, None)),
    }
}

fn is_valid_port(port: &str) -> bool {
    (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && matches!(port.parse::<u32>(), Ok(1..=65535))
}

/// Covers IPv4 literals too: they are dot-separated labels of digits.
fn is_valid_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_LEN
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}
