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
    // Every byte is looked at (no early exit), which lets the compiler check many at once.
    let is_hex = |s: &str| {
        s.bytes()
            .fold(true, |ok, c| ok & matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    };
    if sha.len() != SHA256_HEX_LEN || !is_hex(sha) || a != &sha[0..2] || b != &sha[2..4] {
        return Err(invalid());
    }
    // One buffer rather than a path per `join`: every datastore read resolves a location.
    // `location` is exactly `a/b/sha` (checked above), so this is `root/a/b/sha`.
    let mut path = PathBuf::with_capacity(root.as_os_str().len() + 1 + location.len());
    path.push(root);
    path.push(location);
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_resolves_under_the_root_and_nothing_else_does() {
        let root = Path::new("/srv/media");
        let sha = format!("abcd{}", "0".repeat(60));
        let location = format!("ab/cd/{sha}");
        assert_eq!(
            resolve(root, &location).expect("a valid location"),
            root.join("ab").join("cd").join(&sha)
        );
        for bad in [
            format!("ab/ce/{sha}"),
            format!("ab/cd/{sha}/x"),
            format!("/ab/cd/{sha}"),
            format!("ab/cd/{}", sha.to_uppercase()),
            format!("ab/cd/{}", &sha[..63]),
            "ab/cd/..".to_owned(),
        ] {
            assert!(resolve(root, &bad).is_err(), "{bad}");
        }
    }
}
