//! The server's ed25519 signing key, read from Synapse's `signing.key` file so a media repo
//! in front of a homeserver signs exactly as that homeserver does.
//!
//! File format (Synapse `generate_signing_key`, signedjson): one key per line,
//! `ed25519 <version> <base64 32-byte seed>`, base64 padded or not. Synapse signs with the
//! first key of the file, and so do we; later lines are not read.

use std::fmt;
use std::io::Read as _;
use std::path::Path;
use std::str::FromStr;

use ed25519_dalek::Signer as _;

use crate::b64;
use crate::error::SigningKeyError;

/// The only signing algorithm Matrix servers use.
pub const ED25519: &str = "ed25519";

/// Largest `signing.key` we read. A key line is under 100 bytes; anything near this is the
/// wrong file, and we refuse it before reading it all into memory.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Longest key version we accept. Synapse makes 6 characters (`a_AbCd`); the version ends
/// up in every X-Matrix header and key document we produce, so it stays short.
pub const MAX_VERSION_LEN: usize = 64;

/// Our ed25519 key plus its version. `Debug` shows the key id and public key, never the
/// seed.
#[derive(Clone)]
pub struct SigningKey {
    version: String,
    key: ed25519_dalek::SigningKey,
}

impl SigningKey {
    /// A key from its 32-byte seed (what the file holds) and version.
    pub fn from_seed(version: &str, seed: [u8; 32]) -> Result<SigningKey, SigningKeyError> {
        if !is_valid_version(version) {
            return Err(SigningKeyError::BadVersion(version.to_owned()));
        }
        Ok(SigningKey {
            version: version.to_owned(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    /// Reads the first key of a Synapse `signing.key` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<SigningKey, SigningKeyError> {
        let path = path.as_ref();
        let io = |source| SigningKeyError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut text = String::new();
        // Read one byte past the cap so "exactly at the cap" and "over" differ.
        file.take(MAX_KEY_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > MAX_KEY_FILE_BYTES {
            return Err(SigningKeyError::FileTooLarge {
                path: path.to_owned(),
                max: MAX_KEY_FILE_BYTES,
            });
        }
        text.parse()
    }

    /// `ed25519:<version>`, the key id in headers, key documents and signatures.
    pub fn key_id(&self) -> String {
        format!("{ED25519}:{}", self.version)
    }

    /// The version part of the key id (`a_AbCd`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The public key as unpadded base64, as key documents carry it.
    pub fn public_key_base64(&self) -> String {
        b64::encode(self.key.verifying_key().as_bytes())
    }

    /// The public half, for verifying what this key signed.
    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key.verifying_key()
    }

    /// Signs `message`; the signature as unpadded base64.
    pub fn sign(&self, message: &[u8]) -> String {
        b64::encode(&self.key.sign(message).to_bytes())
    }

    /// The key as one line of a `signing.key` file (with newline), the inverse of
    /// [`SigningKey::from_str`]. It contains the secret seed: write it only to a key file.
    pub fn to_key_file_line(&self) -> String {
        format!(
            "{ED25519} {} {}\n",
            self.version,
            b64::encode(self.key.as_bytes())
        )
    }
}

impl FromStr for SigningKey {
    type Err = SigningKeyError;

    /// Parses the first non-blank line of a `signing.key` file.
    fn from_str(text: &str) -> Result<SigningKey, SigningKeyError> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or(SigningKeyError::Empty)?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [algorithm, version, seed] = fields[..] else {
            return Err(SigningKeyError::WrongFieldCount {
                fields: fields.len(),
            });
        };
        if algorithm != ED25519 {
            // The algorithm field is not secret; cut it short in case the line is junk.
            let shown: String = algorithm.chars().take(32).collect();
            return Err(SigningKeyError::WrongAlgorithm(shown));
        }
        let seed = b64::decode(seed).map_err(|_| SigningKeyError::BadBase64)?;
        let seed: [u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| SigningKeyError::WrongLength(seed.len()))?;
        SigningKey::from_seed(version, seed)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id())
            .field("public_key", &self.public_key_base64())
            .finish_non_exhaustive()
    }
}

/// Key versions: the spec's key-id grammar `[a-zA-Z0-9_]`, bounded. This also keeps
/// quotes, commas and spaces out of the X-Matrix header we build from it.
fn is_valid_version(version: &str) -> bool {
    !version.is_empty()
        && version.len() <= MAX_VERSION_LEN
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks an ed25519 signature given as base64 (padded or not) over `message`.
pub(crate) fn verify_base64(
    key: &ed25519_dalek::VerifyingKey,
    message: &[u8],
    signature_b64: &str,
) -> bool {
    match b64::decode_array::<64>(signature_b64) {
        Some(bytes) => key
            .verify_strict(message, &ed25519_dalek::Signature::from_bytes(&bytes))
            .is_ok(),
        None => false,
    }
}

/// Decodes an ed25519 public key from base64 (padded or not).
pub(crate) fn verifying_key_from_base64(text: &str) -> Option<ed25519_dalek::VerifyingKey> {
    ed25519_dalek::VerifyingKey::from_bytes(&b64::decode_array::<32>(text)?).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The spec appendix "Cryptographic test vectors" key: seed below, key id `ed25519:1`,
    /// server name `domain`.
    pub(crate) const SPEC_SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";

    pub(crate) fn spec_key() -> SigningKey {
        format!("ed25519 1 {SPEC_SEED}").parse().unwrap()
    }

    pub(crate) fn random_key(version: &str) -> SigningKey {
        SigningKey::from_seed(version, rand::random()).unwrap()
    }

    #[test]
    fn spec_vectors_sign_as_the_spec_says() {
        let key = spec_key();
        assert_eq!(key.key_id(), "ed25519:1");
        assert_eq!(
            key.sign(b"{}"),
            "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
        );
        assert_eq!(
            key.sign(br#"{"one":1,"two":"Two"}"#),
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
        );
    }

    #[test]
    fn round_trips_through_the_file_format() {
        let key = random_key("a_AbCd");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        std::fs::write(&path, key.to_key_file_line()).unwrap();
        let loaded = SigningKey::from_file(&path).unwrap();
        assert_eq!(loaded.key_id(), "ed25519:a_AbCd");
        assert_eq!(loaded.version(), "a_AbCd");
        assert_eq!(loaded.public_key_base64(), key.public_key_base64());
        let sig = loaded.sign(b"hello");
        assert_eq!(sig, key.sign(b"hello"));
        assert!(!sig.ends_with('='), "signatures are unpadded");
        assert!(verify_base64(&key.verifying_key(), b"hello", &sig));
        assert!(!verify_base64(&key.verifying_key(), b"hellO", &sig));
        assert!(verify_key_round_trip(&key));
    }

    fn verify_key_round_trip(key: &SigningKey) -> bool {
        verifying_key_from_base64(&key.public_key_base64()) == Some(key.verifying_key())
    }

    #[test]
    fn accepts_padding_blank_lines_and_uses_the_first_key() {
        let first = random_key("first");
        let second = random_key("second");
        let padded = first.to_key_file_line().replace('\n', "=\n");
        let text = format!("\n  {padded}{}", second.to_key_file_line());
        let parsed: SigningKey = text.parse().unwrap();
        assert_eq!(parsed.key_id(), "ed25519:first");
        assert_eq!(parsed.public_key_base64(), first.public_key_base64());
    }

    /// Which error a bad input must produce.
    type Expect = fn(&SigningKeyError) -> bool;

    #[test]
    fn errors_name_the_problem_without_the_seed() {
        let seed = b64::encode(&[7u8; 32]);
        let cases: Vec<(String, Expect)> = vec![
            (String::new(), |e| matches!(e, SigningKeyError::Empty)),
            (" \n\n".into(), |e| matches!(e, SigningKeyError::Empty)),
            (format!("ed25519 {seed}"), |e| {
                matches!(e, SigningKeyError::WrongFieldCount { fields: 2 })
            }),
            (
                format!("rsa a_x {seed}"),
                |e| matches!(e, SigningKeyError::WrongAlgorithm(a) if a == "rsa"),
            ),
            (format!("ed25519 a-x {seed}"), |e| {
                matches!(e, SigningKeyError::BadVersion(_))
            }),
            (format!("ed25519 a\"x {seed}"), |e| {
                matches!(e, SigningKeyError::BadVersion(_))
            }),
            (format!("ed25519 a_x {seed}!"), |e| {
                matches!(e, SigningKeyError::BadBase64)
            }),
            (format!("ed25519 a_x {}", b64::encode(&[7u8; 31])), |e| {
                matches!(e, SigningKeyError::WrongLength(31))
            }),
        ];
        for (text, expected) in cases {
            let err = text.parse::<SigningKey>().unwrap_err();
            assert!(expected(&err), "{text:?} gave {err:?}");
            assert!(!err.to_string().contains(&seed), "{err}");
            assert!(!format!("{err:?}").contains(&seed), "{err:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_seed() {
        let key = spec_key();
        let shown = format!("{key:?}");
        assert!(shown.contains("ed25519:1"));
        assert!(!shown.contains(SPEC_SEED));
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.key");
        assert!(matches!(
            SigningKey::from_file(&missing),
            Err(SigningKeyError::Io { path, .. }) if path == missing
        ));
        let big = dir.path().join("big.key");
        std::fs::write(&big, vec![b' '; MAX_KEY_FILE_BYTES as usize + 1]).unwrap();
        assert!(matches!(
            SigningKey::from_file(&big),
            Err(SigningKeyError::FileTooLarge { .. })
        ));
        let empty = dir.path().join("empty.key");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(
            SigningKey::from_file(&empty),
            Err(SigningKeyError::Empty)
        ));
    }
}
