//! The key-format marker: which layout of keys a shard holds, so that repos of another
//! major version never share shards with us silently.
//!
//! Every shard carries [`FORMAT_MARKER_KEY`] whose value is the key-format version of the
//! repos writing to it. The health check reads it together with its PING (one pipelined
//! round trip) and writes it with `SET .. NX` when it is missing (a fresh or flushed shard,
//! or the key was evicted), so an existing marker of another version is never overwritten.
//! A shard marked with another version is not used until its marker says ours again.

/// The key-format version this repo writes: the `N` of the cache's `mrN:` key prefix
/// (`mr_cache::KEY_PREFIX` is built from it, so the two cannot drift). Decimal digits only.
/// Repos of one major version share it; an incompatible key layout takes the next number.
pub const KEY_FORMAT_VERSION: &str = "1";

/// The marker's key. Deliberately outside any `mrN:` prefix, so every version finds it.
pub const FORMAT_MARKER_KEY: &str = "mr:format";

const _: () = assert!(
    is_decimal(KEY_FORMAT_VERSION.as_bytes()),
    "KEY_FORMAT_VERSION must be decimal digits"
);

const fn is_decimal(bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            return false;
        }
        i += 1;
    }
    true
}

/// What a shard's marker says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Marker {
    /// Our version: the shard is ours to use.
    Ours,
    /// No marker (never written, evicted, flushed): write ours, then use the shard.
    Missing,
    /// Another version (or bytes that are no version at all), as found, for logs and status.
    Other(String),
}

impl Marker {
    pub(crate) fn of(value: Option<&[u8]>) -> Marker {
        match value {
            None => Marker::Missing,
            Some(v) if v == KEY_FORMAT_VERSION.as_bytes() => Marker::Ours,
            Some(v) => Marker::Other(String::from_utf8_lossy(v).into_owned()),
        }
    }
}

/// The status text of a mismatch, e.g. `found 2, expected 1`.
pub(crate) fn mismatch_text(found: &str) -> String {
    format!("found {found}, expected {KEY_FORMAT_VERSION}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_classified() {
        assert_eq!(Marker::of(None), Marker::Missing);
        assert_eq!(Marker::of(Some(b"1")), Marker::Ours);
        assert_eq!(Marker::of(Some(b"2")), Marker::Other("2".to_owned()));
        assert_eq!(Marker::of(Some(b"01")), Marker::Other("01".to_owned()));
        assert_eq!(mismatch_text("2"), "found 2, expected 1");
        assert!(!is_decimal(b"") && !is_decimal(b"v2") && is_decimal(b"12"));
    }
}
