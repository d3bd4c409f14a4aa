//! Server key documents (`GET /_matrix/key/v2/server`, server-server spec "Retrieving
//! server keys"): checking a remote server's, to learn the keys its X-Matrix headers are
//! signed with, and producing our own.
//!
//! A remote document is accepted when it is for the server we asked, lists at least one
//! ed25519 verify key, is signed under `signatures[server_name]` by at least one of those
//! keys with every such signature valid (as Synapse checks it), and `valid_until_ts` is
//! still ahead. The signature covers the canonical JSON of the document without
//! `signatures` and `unsigned`.

use std::collections::HashMap;

use ed25519_dalek::VerifyingKey;
use serde_json::{json, Map, Value};

use crate::canonical_json::to_canonical_json_for_signing;
use crate::error::ServerKeysError;
use crate::signing_key::{verify_base64, verifying_key_from_base64, SigningKey, ED25519};

/// Largest key document a caller should read before handing it here. Synapse's is under
/// 1 KiB; a server with many old keys still fits easily. Enforcing it is the caller's job
/// (it owns the HTTP body); this is the number to enforce.
pub const MAX_KEY_DOCUMENT_BYTES: usize = 64 * 1024;

/// Longest a fetched key should be trusted for X-Matrix, whatever `valid_until_ts` says:
/// the spec asks servers to use at most 7 days for signatures in newer room versions, and
/// we apply the same so a rotated-out key stops working within a week.
pub const MAX_KEY_VALIDITY_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// A retired key: only for signatures made before `expired_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldVerifyKey {
    pub key: VerifyingKey,
    pub expired_ms: u64,
}

/// A remote server's keys, after its key document passed [`verify_key_document`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKeys {
    pub server_name: String,
    /// Current keys, by key id (`ed25519:abc`): the ones that sign its X-Matrix headers.
    pub keys: HashMap<String, VerifyingKey>,
    /// `old_verify_keys` that parsed, by key id. Not valid for new requests.
    pub old_keys: HashMap<String, OldVerifyKey>,
    /// `valid_until_ts` of the document, in milliseconds since the Unix epoch.
    pub valid_until_ms: u64,
}

impl ServerKeys {
    /// Until when a cache may use these keys: `valid_until_ms`, but at most
    /// [`MAX_KEY_VALIDITY_MS`] after `now_ms`.
    pub fn cache_until_ms(&self, now_ms: u64) -> u64 {
        self.valid_until_ms
            .min(now_ms.saturating_add(MAX_KEY_VALIDITY_MS))
    }
}

/// Parses and checks the body of `/_matrix/key/v2/server` fetched from `expected_server`.
pub fn parse_key_document(
    body: &[u8],
    expected_server: &str,
    now_ms: u64,
) -> Result<ServerKeys, ServerKeysError> {
    let document: Value = serde_json::from_slice(body)?;
    verify_key_document(&document, expected_server, now_ms)
}

/// Checks a key document (already parsed JSON) fetched from `expected_server`.
pub fn verify_key_document(
    document: &Value,
    expected_server: &str,
    now_ms: u64,
) -> Result<ServerKeys, ServerKeysError> {
    let object = document
        .as_object()
        .ok_or(ServerKeysError::BadField("(document)"))?;
    let server_name = str_field(object, "server_name")?;
    if server_name != expected_server {
        return Err(ServerKeysError::WrongServerName {
            expected: expected_server.to_owned(),
            found: server_name.to_owned(),
        });
    }

    let mut keys = HashMap::new();
    for (key_id, entry) in map_field(object, "verify_keys")? {
        if !is_ed25519_id(key_id) {
            continue; // Another algorithm: not ours to judge, and unusable to us.
        }
        keys.insert(key_id.clone(), decode_key(key_id, entry)?);
    }
    if keys.is_empty() {
        return Err(ServerKeysError::NoKeys);
    }

    let mut old_keys = HashMap::new();
    // Optional in practice (older servers omit it when empty).
    if object.contains_key("old_verify_keys") {
        for (key_id, entry) in map_field(object, "old_verify_keys")? {
            if !is_ed25519_id(key_id) {
                continue;
            }
            let key = decode_key(key_id, entry)?;
            let expired_ms = entry
                .get("expired_ts")
                .and_then(Value::as_u64)
                .ok_or(ServerKeysError::BadField("old_verify_keys.*.expired_ts"))?;
            old_keys.insert(key_id.clone(), OldVerifyKey { key, expired_ms });
        }
    }

    let valid_until_ms = object
        .get("valid_until_ts")
        .and_then(Value::as_u64)
        .ok_or(ServerKeysError::BadField("valid_until_ts"))?;

    let signatures = object
        .get("signatures")
        .and_then(Value::as_object)
        .and_then(|all| all.get(server_name))
        .and_then(Value::as_object)
        .ok_or(ServerKeysError::NotSelfSigned)?;
    let signed = to_canonical_json_for_signing(document)?;
    let mut verified = false;
    for (key_id, signature) in signatures {
        // Signatures by keys the document does not list (old keys, other algorithms)
        // prove nothing here; skip them as Synapse does.
        let Some(key) = keys.get(key_id) else {
            continue;
        };
        let signature = signature
            .as_str()
            .ok_or(ServerKeysError::BadField("signatures"))?;
        if !verify_base64(key, signed.as_bytes(), signature) {
            return Err(ServerKeysError::BadSignature(key_id.clone()));
        }
        verified = true;
    }
    if !verified {
        return Err(ServerKeysError::NotSelfSigned);
    }

    // Last, so a forged document is reported as forged rather than as stale.
    if valid_until_ms <= now_ms {
        return Err(ServerKeysError::Expired {
            valid_until_ms,
            now_ms,
        });
    }

    Ok(ServerKeys {
        server_name: server_name.to_owned(),
        keys,
        old_keys,
        valid_until_ms,
    })
}

/// Our own key document for `/_matrix/key/v2/server`, signed with `key`.
///
/// Fails only if `valid_until_ms` is beyond canonical JSON's 2^53 − 1.
pub fn our_key_document(
    server_name: &str,
    key: &SigningKey,
    valid_until_ms: u64,
) -> Result<Value, ServerKeysError> {
    let mut document = json!({
        "server_name": server_name,
        "valid_until_ts": valid_until_ms,
        "verify_keys": { key.key_id(): { "key": key.public_key_base64() } },
        "old_verify_keys": {},
    });
    let signature = key.sign(to_canonical_json_for_signing(&document)?.as_bytes());
    if let Some(object) = document.as_object_mut() {
        object.insert(
            "signatures".to_owned(),
            json!({ server_name: { key.key_id(): signature } }),
        );
    }
    Ok(document)
}

fn is_ed25519_id(key_id: &str) -> bool {
    key_id
        .split_once(':')
        .is_some_and(|(alg, version)| alg == ED25519 && !version.is_empty())
}

fn decode_key(key_id: &str, entry: &Value) -> Result<VerifyingKey, ServerKeysError> {
    entry
        .get("key")
        .and_then(Value::as_str)
        .and_then(verifying_key_from_base64)
        .ok_or_else(|| ServerKeysError::BadKey(key_id.to_owned()))
}

fn str_field<'a>(
    object: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, ServerKeysError> {
    object
        .get(name)
        .and_then(Value::as_str)
        .ok_or(ServerKeysError::BadField(name))
}

fn map_field<'a>(
    object: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a Map<String, Value>, ServerKeysError> {
    object
        .get(name)
        .and_then(Value::as_object)
        .ok_or(ServerKeysError::BadField(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing_key::tests::{random_key, spec_key};

    const NOW: u64 = 1_650_000_000_000;
    const LATER: u64 = NOW + 3_600_000;

    /// A key document signed by signedjson 1.x (Synapse's signing library) with the spec's
    /// test key `ed25519:1` as server `127.0.0.1:8481`, valid until 1700000000000, with
    /// one old key.
    const SIGNEDJSON_DOCUMENT: &str = r#"{"server_name": "127.0.0.1:8481", "valid_until_ts": 1700000000000, "verify_keys": {"ed25519:1": {"key": "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"}}, "old_verify_keys": {"ed25519:old": {"key": "XSl0kuyvrXNj6A+7/tkrB9sxSbRi08Of5uRhxOqZtEQ", "expired_ts": 1600000000000}}, "signatures": {"127.0.0.1:8481": {"ed25519:1": "+14RaWtV9E2HqtCp6dvK/K+Ro5t0wbqb85x/d+TUoqB5IRO9eyUGvJ/0oEdq4G49Lgh5SlBlmmQo1zt3j71zDw"}}}"#;

    #[test]
    fn accepts_a_document_signed_by_signedjson() {
        let keys =
            parse_key_document(SIGNEDJSON_DOCUMENT.as_bytes(), "127.0.0.1:8481", NOW).unwrap();
        assert_eq!(keys.server_name, "127.0.0.1:8481");
        assert_eq!(keys.valid_until_ms, 1_700_000_000_000);
        assert_eq!(keys.keys.len(), 1);
        assert_eq!(keys.keys["ed25519:1"], spec_key().verifying_key());
        assert_eq!(keys.old_keys["ed25519:old"].expired_ms, 1_600_000_000_000);
        // Our canonical form of that document is the bytes signedjson signed: signing it
        // again with the same key gives the same signature.
        let theirs: Value = serde_json::from_str(SIGNEDJSON_DOCUMENT).unwrap();
        let signed = to_canonical_json_for_signing(&theirs).unwrap();
        assert_eq!(
            spec_key().sign(signed.as_bytes()),
            theirs["signatures"]["127.0.0.1:8481"]["ed25519:1"]
        );
    }

    #[test]
    fn round_trip() {
        let key = random_key("a_AbCd");
        let document = our_key_document("media.example", &key, LATER).unwrap();
        let body = serde_json::to_vec(&document).unwrap();
        let keys = parse_key_document(&body, "media.example", NOW).unwrap();
        assert_eq!(
            keys,
            ServerKeys {
                server_name: "media.example".into(),
                keys: HashMap::from([("ed25519:a_AbCd".into(), key.verifying_key())]),
                old_keys: HashMap::new(),
                valid_until_ms: LATER,
            }
        );
        assert_eq!(keys.cache_until_ms(NOW), LATER);
        assert_eq!(
            keys.cache_until_ms(LATER - MAX_KEY_VALIDITY_MS - 1),
            LATER - 1
        );
    }

    #[test]
    fn unsigned_and_extra_signatures_are_not_covered() {
        let key = random_key("k");
        let mut document = our_key_document("media.example", &key, LATER).unwrap();
        document["unsigned"] = json!({"age_ts": 5});
        // A notary's signature under another name, and one by an unknown key id.
        document["signatures"]["notary.example"] = json!({"ed25519:n": "AAAA"});
        document["signatures"]["media.example"]["ed25519:gone"] = json!("AAAA");
        verify_key_document(&document, "media.example", NOW).unwrap();
    }

    #[test]
    fn wrong_server_name() {
        let document = our_key_document("evil.example", &random_key("k"), LATER).unwrap();
        assert!(matches!(
            verify_key_document(&document, "media.example", NOW),
            Err(ServerKeysError::WrongServerName { expected, found })
                if expected == "media.example" && found == "evil.example"
        ));
    }

    #[test]
    fn missing_self_signature() {
        let key = random_key("k");
        let mut document = our_key_document("media.example", &key, LATER).unwrap();
        let signatures = document["signatures"]["media.example"].take();
        // Signed, but under another server's name.
        document["signatures"] = json!({ "other.example": signatures });
        assert!(matches!(
            verify_key_document(&document, "media.example", NOW),
            Err(ServerKeysError::NotSelfSigned)
        ));
        // Signed only by a key the document does not list.
        let mut document = our_key_document("media.example", &key, LATER).unwrap();
        let other = random_key("other");
        let signed = to_canonical_json_for_signing(&document).unwrap();
        document["signatures"] =
            json!({"media.example": {"ed25519:other": other.sign(signed.as_bytes())}});
        assert!(matches!(
            verify_key_document(&document, "media.example", NOW),
            Err(ServerKeysError::NotSelfSigned)
        ));
        document.as_object_mut().unwrap().remove("signatures");
        assert!(matches!(
            verify_key_document(&document, "media.example", NOW),
            Err(ServerKeysError::NotSelfSigned)
        ));
    }

    #[test]
    fn bad_signature() {
        let key = random_key("k");
        // Any change to a signed field breaks the signature.
        let mut document = our_key_document("media.example", &key, LATER).unwrap();
        document["valid_until_ts"] = json!(LATER + 1);
        assert!(matches!(
            verify_key_document(&document, "media.example", NOW),
            Err(ServerKeysError::BadSignature(k)) if k == "ed25519:k"
        ));
        // A swapped key: the document now claims a key that did not sign it.
        let mut document = our_key_document("media.example", &key, LATER).unwrap();
        document["verify_keys"]["ed25519:k"]["key"] = json!(random_key("k").public_key_base64());
        assert!(matches!(
            verify_key_document(&document, "media.example", NOW),
            Err(ServerKeysError::BadSignature(_))
        ));
        let mut document = our_key_document("media.example", &key, LATER).unwrap();
        document["signatures"]["media.example"]["ed25519:k"] = json!("not base64");
        assert!(matches!(
            verify_key_document(&document, "media.example", NOW),
            Err(ServerKeysError::BadSignature(_))
        ));
    }

    #[test]
    fn expired_document() {
        let document = our_key_document("media.example", &random_key("k"), NOW).unwrap();
        assert!(matches!(
            verify_key_document(&document, "media.example", NOW),
            Err(ServerKeysError::Expired {
                valid_until_ms: NOW,
                now_ms: NOW
            })
        ));
        verify_key_document(&document, "media.example", NOW - 1).unwrap();
    }

    #[test]
    fn malformed_documents() {
        let key = random_key("k");
        let good = our_key_document("media.example", &key, LATER).unwrap();
        assert!(matches!(
            parse_key_document(b"{not json", "media.example", NOW),
            Err(ServerKeysError::InvalidJson(_))
        ));
        assert!(matches!(
            verify_key_document(&json!([1]), "media.example", NOW),
            Err(ServerKeysError::BadField(_))
        ));
        for field in ["server_name", "verify_keys", "valid_until_ts"] {
            let mut document = good.clone();
            document.as_object_mut().unwrap().remove(field);
            assert!(
                matches!(
                    verify_key_document(&document, "media.example", NOW),
                    Err(ServerKeysError::BadField(f)) if f == field
                ),
                "{field}"
            );
        }
        let mut document = good.clone();
        document["verify_keys"]["ed25519:k"]["key"] = json!("c2hvcnQ");
        assert!(matches!(
            verify_key_document(&document, "media.example", NOW),
            Err(ServerKeysError::BadKey(k)) if k == "ed25519:k"
        ));
        let mut document = good.clone();
        document["verify_keys"] = json!({"curve25519:x": {"key": "AAAA"}});
        assert!(matches!(
            verify_key_document(&document, "media.example", NOW),
            Err(ServerKeysError::NoKeys)
        ));
        assert!(matches!(
            our_key_document("media.example", &key, 1 << 53),
            Err(ServerKeysError::CanonicalJson(_))
        ));
    }
}
