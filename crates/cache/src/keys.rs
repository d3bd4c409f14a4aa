//! Key layout shared by every media repo that talks to the same shards.
//!
//! The `mr1:` prefix is the major version of the layout: a future incompatible layout uses
//! `mr2:` so two versions never read each other's bytes. The number is the shard actor's
//! [`KEY_FORMAT_VERSION`], which it also writes as every shard's key-format marker, so a
//! shard already used by another version is not used at all. The part inside `{}` is what
//! the ring routes on, so a blob's header and all its chunks live on one shard.

use mr_shard_actor::KEY_FORMAT_VERSION;

/// Prefix of every key this version writes: `mr` and the key-format version.
pub const KEY_PREFIX: &str = match std::str::from_utf8(&PREFIX_BYTES) {
    Ok(prefix) => prefix,
    Err(_) => panic!("the key prefix is ASCII"),
};

const PREFIX_BYTES: [u8; 2 + KEY_FORMAT_VERSION.len()] = {
    let version = KEY_FORMAT_VERSION.as_bytes();
    let mut out = [0; 2 + KEY_FORMAT_VERSION.len()];
    out[0] = b'm';
    out[1] = b'r';
    let mut i = 0;
    while i < version.len() {
        out[2 + i] = version[i];
        i += 1;
    }
    out
};

/// Key of a blob's header (written last, read first). Built by hand: every cached
/// download makes one, and `format!` cost ten times as much.
pub fn blob_header_key(sha256: &str) -> String {
    const BEFORE: &str = ":blob:{";
    const AFTER: &str = "}:m";
    let mut key =
        String::with_capacity(KEY_PREFIX.len() + BEFORE.len() + sha256.len() + AFTER.len());
    key.push_str(KEY_PREFIX);
    key.push_str(BEFORE);
    key.push_str(sha256);
    key.push_str(AFTER);
    key
}

/// Key of chunk `index` (0-based) of a blob.
pub fn blob_chunk_key(sha256: &str, index: u64) -> String {
    format!("{KEY_PREFIX}:blob:{{{sha256}}}:{index}")
}

/// Key of the record describing remote media another repo already fetched.
pub fn remote_record_key(origin: &str, media_id: &str) -> String {
    format!("{KEY_PREFIX}:remote:{{{origin}/{media_id}}}")
}

/// Key of the lease that lets one repo fetch a remote file while the others wait.
pub fn lease_key(origin: &str, media_id: &str) -> String {
    format!("{KEY_PREFIX}:lock:{{{origin}/{media_id}}}")
}

/// Whether `sha256` is safe to put in a key: lowercase hex only, so it can neither escape
/// the `{}` routing part nor collide with another layout.
pub fn is_valid_sha256(sha256: &str) -> bool {
    // Every byte is looked at (no early exit), which lets the compiler check many at once.
    sha256.len() == 64
        && sha256.bytes().fold(true, |ok, b| {
            ok & (b.is_ascii_digit() | (b'a'..=b'f').contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_stable() {
        assert_eq!(KEY_PREFIX, format!("mr{KEY_FORMAT_VERSION}"));
        assert_eq!(blob_header_key("ab"), "mr1:blob:{ab}:m");
        assert_eq!(blob_chunk_key("ab", 3), "mr1:blob:{ab}:3");
        assert_eq!(
            remote_record_key("example.org", "xyz"),
            "mr1:remote:{example.org/xyz}"
        );
        assert_eq!(
            lease_key("example.org", "xyz"),
            "mr1:lock:{example.org/xyz}"
        );
    }

    #[test]
    fn sha_validation() {
        assert!(is_valid_sha256(&"a1".repeat(32)));
        assert!(!is_valid_sha256(&"A1".repeat(32)));
        assert!(!is_valid_sha256("}abc"));
        assert!(!is_valid_sha256(&"a".repeat(63)));
    }
}
