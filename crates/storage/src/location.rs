//! Object locations inside a file datastore: `ab/cd/<sha256>`, derived only from the
//! content hash. Two directory levels keep any one directory to a few thousand entries.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Length of a lowercase hex SHA-256.
const SHA256_HEX_LEN: usize = 64;

/// The location of the object whose lowercase hex SHA-256 is `sha256`.
pub(crate) fn location_for(sha256: &str) -> String {
    format!("{}/{}/{}", &sha256[0..2], &sha256[2..4], sha256)
}

/// The location for a name that should be a SHA-256 but was read from somewhere that may
/// hold anything (a file name): `None` unless it is 64 lowercase hex digits.
pub(crate) fn location_for_checked(sha256: &str) -> Option<String> {
    let is_sha = sha256.len() == SHA256_HEX_LEN
        && sha256
            .bytes()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    is_sha.then(|| location_for(sha256))
}

/// Checks `location` is exactly `ab/cd/<64 lowercase hex>` with the directories matching
/// the hash, and returns it as a path under `root`. Locations are generated, never user
/// input; this is a second lock on the door against a tampered database row.
pub(crate) fn resolve(root: &Path, location: &str) -> Result<PathBuf> {
    let invalid = || Error::InvalidLocation(location.to_owned());
    let mut parts = location.split('/');
    let (a, b, sha) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(sha), None) => (a, b, sha),
        _ => return Err(invalid()),
    };
    let is_hex = |s: &str| s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    if sha.len() != SHA256_HEX_LEN || !is_hex(sha) || a != &sha[0..2] || b != &sha[2..4] {
        return Err(invalid());
    }
    Ok(root.join(a).join(b).join(sha))
}
