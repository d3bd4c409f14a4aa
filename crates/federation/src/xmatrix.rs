//! `Authorization: X-Matrix …` (server-server spec, "Request Authentication"): how the
//! media repo signs its federation requests and checks the ones it serves.
//!
//! The signature covers the canonical JSON of
//! `{"method", "uri", "origin", "destination"[, "content"]}`, where `uri` is the path and
//! query exactly as sent. We send
//! `X-Matrix origin="…",destination="…",key="ed25519:…",sig="…"` (lower-case names, one
//! space, no spaces around commas: the spec's advice for old receivers), and accept what
//! real servers send: parameters in any order, names in any case, quoted values with
//! backslash escapes or bare values containing colons, `sig` (every implementation) or
//! `signature` (the spec's parameter list), and no `destination` (servers before v1.3).

use ed25519_dalek::VerifyingKey;
use serde_json::{json, Value};

use crate::canonical_json::to_canonical_json;
use crate::error::XMatrixError;
use crate::http_syntax::{is_token_char, quoted_string};
use crate::signing_key::{verify_base64, SigningKey, ED25519};

/// Longest `Authorization` header we parse. A real one is about 200 bytes (two server
/// names, a key id, an 86-character signature); the bound keeps a hostile header from
/// costing more than a glance.
pub const MAX_HEADER_BYTES: usize = 2048;

/// The authorization scheme (matched case-insensitively, as RFC 9110 asks).
pub const SCHEME: &str = "X-Matrix";

/// The parts of a request that its X-Matrix signature covers.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestToSign {
    /// HTTP method, upper case as sent (`GET`).
    pub method: String,
    /// Path plus query exactly as sent (`/_matrix/federation/v1/media/download/abc`).
    pub uri: String,
    /// The signing server's name.
    pub origin: String,
    /// The receiving server's name.
    pub destination: String,
    /// The JSON request body, if the request has one.
    pub content: Option<Value>,
}

impl RequestToSign {
    /// The canonical JSON the signature is computed over.
    pub fn signed_json(&self) -> Result<String, XMatrixError> {
        signed_json(
            &self.method,
            &self.uri,
            &self.origin,
            &self.destination,
            self.content.as_ref(),
        )
    }
}

fn signed_json(
    method: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    content: Option<&Value>,
) -> Result<String, XMatrixError> {
    let mut object = json!({
        "method": method,
        "uri": uri,
        "origin": origin,
        "destination": destination,
    });
    if let (Some(content), Some(map)) = (content, object.as_object_mut()) {
        map.insert("content".to_owned(), content.clone());
    }
    Ok(to_canonical_json(&object)?)
}

/// Signs `request` with `key`; the value for the `Authorization` header.
///
/// Fails only for a body that has no canonical JSON (a float) or a server name that cannot
/// go into a header (quotes, backslashes, control characters: a configuration mistake).
pub fn sign_request(key: &SigningKey, request: &RequestToSign) -> Result<String, XMatrixError> {
    for value in [&request.origin, &request.destination] {
        if !is_header_safe(value) {
            return Err(XMatrixError::UnsafeValue(value.clone()));
        }
    }
    let signature = key.sign(request.signed_json()?.as_bytes());
    Ok(format!(
        "{SCHEME} origin=\"{}\",destination=\"{}\",key=\"{}\",sig=\"{signature}\"",
        request.origin,
        request.destination,
        key.key_id()
    ))
}

/// A value we put between quotes unescaped: printable ASCII other than `"` and `\`.
fn is_header_safe(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// A parsed `X-Matrix` header. The signature is not checked yet: see [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrix {
    /// The server that claims to have signed the request.
    pub origin: String,
    /// The server the request was signed for; `None` from servers older than spec v1.3.
    pub destination: Option<String>,
    /// `ed25519:<version>`.
    pub key_id: String,
    /// The signature as sent (base64), decoded only when checked.
    pub signature: String,
}

/// Parses the value of an `Authorization` header of scheme `X-Matrix`.
pub fn parse_header(header: &str) -> Result<XMatrix, XMatrixError> {
    if header.len() > MAX_HEADER_BYTES {
        return Err(XMatrixError::TooLong {
            max: MAX_HEADER_BYTES,
        });
    }
    let header = header.trim_matches([' ', '\t']);
    if header.is_empty() {
        return Err(XMatrixError::Missing);
    }
    let (scheme, params) = header.split_once([' ', '\t']).unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Err(XMatrixError::WrongScheme);
    }

    let mut origin = None;
    let mut destination = None;
    let mut key = None;
    let mut sig = None;
    for param in Params::new(params) {
        let (name, value) = param?;
        let slot = match name.to_ascii_lowercase().as_str() {
            "origin" => &mut origin,
            "destination" => &mut destination,
            "key" => &mut key,
            // Two spellings of one parameter: giving both is a repeat.
            "sig" | "signature" => &mut sig,
            _ => continue, // "Unknown parameters are ignored."
        };
        if slot.replace(value).is_some() {
            return Err(XMatrixError::DuplicateParam(name.to_ascii_lowercase()));
        }
    }

    let origin = origin.ok_or(XMatrixError::MissingParam("origin"))?;
    let key_id = key.ok_or(XMatrixError::MissingParam("key"))?;
    let signature = sig.ok_or(XMatrixError::MissingParam("sig"))?;
    if origin.is_empty() || destination.as_ref().is_some_and(String::is_empty) {
        return Err(XMatrixError::Malformed("empty server name"));
    }
    match key_id.split_once(':') {
        Some((ED25519, version)) if !version.is_empty() => {}
        _ => return Err(XMatrixError::UnsupportedKey(key_id)),
    }
    Ok(XMatrix {
        origin,
        destination,
        key_id,
        signature,
    })
}

/// Iterator over `name=value` pairs separated by commas; values quoted (RFC 9110
/// quoted-string, backslash escapes) or bare (anything up to the next comma, so a bare
/// `origin=example.org:8448` works as the spec asks).
struct Params<'a> {
    rest: &'a str,
    failed: bool,
}

impl<'a> Params<'a> {
    fn new(params: &'a str) -> Params<'a> {
        Params {
            rest: params,
            failed: false,
        }
    }

    fn next_param(&mut self) -> Result<Option<(&'a str, String)>, XMatrixError> {
        let rest = self.rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Ok(None);
        }
        let (name, after) = rest
            .split_once('=')
            .ok_or(XMatrixError::Malformed("parameter without '='"))?;
        let name = name.trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(XMatrixError::Malformed("bad parameter name"));
        }
        let after = after.trim_start_matches([' ', '\t']);
        let (value, rest) = if let Some(quoted) = after.strip_prefix('"') {
            let (value, rest) =
                quoted_string(quoted).ok_or(XMatrixError::Malformed("bad quoted value"))?;
            let rest = rest.trim_start_matches([' ', '\t']);
            if !(rest.is_empty() || rest.starts_with(',')) {
                return Err(XMatrixError::Malformed("text after a quoted value"));
            }
            (value, rest)
        } else {
            let end = after.find(',').unwrap_or(after.len());
            let value = after[..end].trim_end_matches([' ', '\t']);
            if value.is_empty() {
                return Err(XMatrixError::Malformed("empty value"));
            }
            if value
                .chars()
                .any(|c| c.is_control() || c == ' ' || c == '"' || c == '\\')
            {
                return Err(XMatrixError::Malformed("bad character in unquoted value"));
            }
            (value.to_owned(), &after[end..])
        };
        self.rest = rest;
        Ok(Some((name, value)))
    }
}

impl<'a> Iterator for Params<'a> {
    type Item = Result<(&'a str, String), XMatrixError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = self.next_param().transpose();
        // After an error the position is unknown: stop rather than guess.
        self.failed = matches!(next, Some(Err(_)));
        next
    }
}

/// Checks a parsed header against the request it came with.
///
/// * `method`, `uri` (path + query as received) and `content` (the JSON body, if any)
///   rebuild the signed JSON.
/// * `our_names`: the server names we answer for. A header naming another destination is
///   refused; a header with no destination (pre-v1.3 sender) is tried against each.
/// * `public_key_for(origin, key_id)`: the origin's current key for that id (from its key
///   document, cached by the caller); `None` if it has no such key.
pub fn verify(
    header: &XMatrix,
    method: &str,
    uri: &str,
    content: Option<&Value>,
    our_names: &[&str],
    public_key_for: impl FnOnce(&str, &str) -> Option<VerifyingKey>,
) -> Result<(), XMatrixError> {
    let candidates: Vec<&str> = match &header.destination {
        Some(destination) => {
            if !our_names.contains(&destination.as_str()) {
                return Err(XMatrixError::WrongDestination(destination.clone()));
            }
            vec![destination.as_str()]
        }
        None => our_names.to_vec(),
    };
    let key =
        public_key_for(&header.origin, &header.key_id).ok_or_else(|| XMatrixError::UnknownKey {
            origin: header.origin.clone(),
            key_id: header.key_id.clone(),
        })?;
    for destination in candidates {
        let json = signed_json(method, uri, &header.origin, destination, content)?;
        if verify_base64(&key, json.as_bytes(), &header.signature) {
            return Ok(());
        }
    }
    Err(XMatrixError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing_key::tests::{random_key, spec_key};

    const URI: &str = "/_matrix/federation/v1/media/download/abcDEF?timeout_ms=20000";

    fn request(key_origin: &str) -> RequestToSign {
        RequestToSign {
            method: "GET".into(),
            uri: URI.into(),
            origin: key_origin.into(),
            destination: "127.0.0.1:8482".into(),
            content: None,
        }
    }

    fn lookup(key: &SigningKey) -> impl Fn(&str, &str) -> Option<VerifyingKey> + '_ {
        move |origin, key_id| {
            (origin == "127.0.0.1:8481" && key_id == key.key_id()).then(|| key.verifying_key())
        }
    }

    #[test]
    fn signed_json_is_canonical_and_matches_the_spec_example_shape() {
        let mut req = request("origin.hs.example.com");
        req.destination = "destination.hs.example.com".into();
        req.method = "POST".into();
        req.uri = "/target".into();
        req.content = Some(json!({"b": 1, "a": "x"}));
        assert_eq!(
            req.signed_json().unwrap(),
            r#"{"content":{"a":"x","b":1},"destination":"destination.hs.example.com","method":"POST","origin":"origin.hs.example.com","uri":"/target"}"#
        );
    }

    /// Headers made by Synapse's signing code path (signedjson 1.x `sign_json` over the
    /// request dict, formatted as `MatrixFederationHttpClient.build_auth_headers` does) with
    /// the spec's test key `ed25519:1`, origin `127.0.0.1:8481`, destination `127.0.0.1:8482`.
    const SYNAPSE_GET: &str = r#"X-Matrix origin="127.0.0.1:8481",key="ed25519:1",sig="x6lEOgvmbYjWaV9p7h9fsN13JyPU474lPBSjAvHJdNCkrqwVrKLlTNLHCLxMjknj1YzkHxZuLTFm4i0BShzTCQ",destination="127.0.0.1:8482""#;
    /// Same, `PUT /_matrix/federation/v1/send/1` with body `{"b": 1, "a": ["日", "\n"]}`.
    const SYNAPSE_PUT: &str = r#"X-Matrix origin="127.0.0.1:8481",key="ed25519:1",sig="qMdhc4Y9mGJioquKjOhK+ERifymFFm7Akp0D9kuD1qNxQQmQD4xsYTAF+eOe+Eil16ogVGw3gcOu+a8bphqvDg",destination="127.0.0.1:8482""#;

    #[test]
    fn synapse_vectors_verify_and_we_sign_identically() {
        let key = spec_key();
        let ours = ["127.0.0.1:8482"];
        let body = json!({"b": 1, "a": ["日", "\n"]});
        let put_uri = "/_matrix/federation/v1/send/1";
        for (header, method, uri, content) in [
            (SYNAPSE_GET, "GET", URI, None),
            (SYNAPSE_PUT, "PUT", put_uri, Some(&body)),
        ] {
            let parsed = parse_header(header).unwrap();
            verify(&parsed, method, uri, content, &ours, lookup(&key)).unwrap();
            // ed25519 is deterministic: our signature over our canonical JSON is
            // Synapse's byte for byte (our parameter order differs, the value does not).
            let mine = sign_request(
                &key,
                &RequestToSign {
                    method: method.into(),
                    uri: uri.into(),
                    origin: "127.0.0.1:8481".into(),
                    destination: "127.0.0.1:8482".into(),
                    content: content.cloned(),
                },
            )
            .unwrap();
            assert_eq!(parse_header(&mine).unwrap(), parsed);
            assert!(mine.starts_with(
                r#"X-Matrix origin="127.0.0.1:8481",destination="127.0.0.1:8482",key="ed25519:1",sig=""#
            ));
        }
    }

    #[test]
    fn sign_then_verify() {
        let key = random_key("a_AbCd");
        let header = sign_request(&key, &request("127.0.0.1:8481")).unwrap();
        let parsed = parse_header(&header).unwrap();
        assert_eq!(parsed.origin, "127.0.0.1:8481");
        assert_eq!(parsed.destination.as_deref(), Some("127.0.0.1:8482"));
        assert_eq!(parsed.key_id, "ed25519:a_AbCd");
        verify(&parsed, "GET", URI, None, &["127.0.0.1:8482"], lookup(&key)).unwrap();
    }

    #[test]
    fn body_is_covered() {
        let key = random_key("k");
        let mut req = request("127.0.0.1:8481");
        req.method = "PUT".into();
        req.content = Some(json!({"x": [1, 2]}));
        let parsed = parse_header(&sign_request(&key, &req).unwrap()).unwrap();
        let ours = ["127.0.0.1:8482"];
        verify(
            &parsed,
            "PUT",
            URI,
            req.content.as_ref(),
            &ours,
            lookup(&key),
        )
        .unwrap();
        let other = json!({"x": [1, 3]});
        assert!(matches!(
            verify(&parsed, "PUT", URI, Some(&other), &ours, lookup(&key)),
            Err(XMatrixError::BadSignature)
        ));
        assert!(matches!(
            verify(&parsed, "PUT", URI, None, &ours, lookup(&key)),
            Err(XMatrixError::BadSignature)
        ));
        req.content = Some(json!(1.5));
        assert!(matches!(
            sign_request(&key, &req),
            Err(XMatrixError::CanonicalJson(_))
        ));
    }

    #[test]
    fn tampering_fails() {
        let key = random_key("k");
        let parsed =
            parse_header(&sign_request(&key, &request("127.0.0.1:8481")).unwrap()).unwrap();
        let ours = ["127.0.0.1:8482"];
        for (method, uri) in [
            ("POST", URI),
            ("get", URI),
            ("GET", "/_matrix/federation/v1/media/download/abcDEF"),
            (
                "GET",
                "/_matrix/federation/v1/media/download/abcDEF?timeout_ms=20001",
            ),
        ] {
            assert!(
                matches!(
                    verify(&parsed, method, uri, None, &ours, lookup(&key)),
                    Err(XMatrixError::BadSignature)
                ),
                "{method} {uri}"
            );
        }
        // Claiming our other name: the destination was signed, so rewriting it fails.
        let mut moved = parsed.clone();
        moved.destination = Some("media.example".into());
        assert!(matches!(
            verify(
                &moved,
                "GET",
                URI,
                None,
                &["127.0.0.1:8482", "media.example"],
                lookup(&key)
            ),
            Err(XMatrixError::BadSignature)
        ));
        // A key from another server does not verify.
        let other = random_key("k");
        assert!(matches!(
            verify(&parsed, "GET", URI, None, &ours, |_, _| Some(
                other.verifying_key()
            )),
            Err(XMatrixError::BadSignature)
        ));
        let mut garbled = parsed.clone();
        garbled.signature = "not base64!".into();
        assert!(matches!(
            verify(&garbled, "GET", URI, None, &ours, lookup(&key)),
            Err(XMatrixError::BadSignature)
        ));
    }

    #[test]
    fn wrong_destination_and_unknown_key_are_distinct() {
        let key = random_key("k");
        let parsed =
            parse_header(&sign_request(&key, &request("127.0.0.1:8481")).unwrap()).unwrap();
        assert!(matches!(
            verify(&parsed, "GET", URI, None, &["127.0.0.1:8481"], lookup(&key)),
            Err(XMatrixError::WrongDestination(d)) if d == "127.0.0.1:8482"
        ));
        assert!(matches!(
            verify(&parsed, "GET", URI, None, &["127.0.0.1:8482"], |_, _| None),
            Err(XMatrixError::UnknownKey { origin, key_id })
                if origin == "127.0.0.1:8481" && key_id == "ed25519:k"
        ));
    }

    #[test]
    fn header_without_destination_is_tried_against_each_of_our_names() {
        let key = random_key("k");
        let header = sign_request(&key, &request("127.0.0.1:8481")).unwrap();
        let old_style = header.replace(",destination=\"127.0.0.1:8482\"", "");
        let parsed = parse_header(&old_style).unwrap();
        assert_eq!(parsed.destination, None);
        let both = ["media.example", "127.0.0.1:8482"];
        verify(&parsed, "GET", URI, None, &both, lookup(&key)).unwrap();
        assert!(matches!(
            verify(&parsed, "GET", URI, None, &["media.example"], lookup(&key)),
            Err(XMatrixError::BadSignature)
        ));
    }

    #[test]
    fn parses_the_forms_real_servers_send() {
        let sig = "a".repeat(86);
        let forms = [
            // Synapse's order.
            format!(
                r#"X-Matrix origin="o.example:8448",key="ed25519:a_1",sig="{sig}",destination="d.example""#
            ),
            // Spec example order, lower-case scheme, spaces around commas and '='.
            format!(
                r#"x-matrix  origin = "o.example:8448" , destination="d.example",key="ed25519:a_1" , sig="{sig}""#
            ),
            // Bare values with colons (old servers), upper-case names.
            format!(
                "X-Matrix ORIGIN=o.example:8448,Destination=d.example,key=ed25519:a_1,sig={sig}"
            ),
            // The spec parameter list's spelling and an unknown parameter.
            format!(
                r#"X-Matrix origin="o.example:8448",future="x, y",destination="d.example",key="ed25519:a_1",signature="{sig}""#
            ),
            // Backslash escapes inside quotes are undone.
            format!(
                r#"X-Matrix origin="o\.example:8448",destination="d.example",key="ed25519:a_1",sig="{sig}""#
            ),
        ];
        for form in &forms {
            let parsed = parse_header(form).unwrap_or_else(|e| panic!("{form}: {e}"));
            assert_eq!(
                parsed,
                XMatrix {
                    origin: "o.example:8448".into(),
                    destination: Some("d.example".into()),
                    key_id: "ed25519:a_1".into(),
                    signature: sig.clone(),
                },
                "{form}"
            );
        }
    }

    /// Which error a bad header must produce.
    type Expect = fn(&XMatrixError) -> bool;

    #[test]
    fn malformed_headers_fail_with_clear_errors() {
        let ok = r#"origin="o",destination="d",key="ed25519:k",sig="c2ln""#;
        let cases: Vec<(String, Expect)> = vec![
            (String::new(), |e| matches!(e, XMatrixError::Missing)),
            ("   ".into(), |e| matches!(e, XMatrixError::Missing)),
            (format!("Bearer {ok}"), |e| {
                matches!(e, XMatrixError::WrongScheme)
            }),
            ("X-Matrixorigin=o".into(), |e| {
                matches!(e, XMatrixError::WrongScheme)
            }),
            ("X-Matrix".into(), |e| {
                matches!(e, XMatrixError::MissingParam("origin"))
            }),
            (
                r#"X-Matrix destination="d",key="ed25519:k",sig="x""#.into(),
                |e| matches!(e, XMatrixError::MissingParam("origin")),
            ),
            (r#"X-Matrix origin="o",sig="x""#.into(), |e| {
                matches!(e, XMatrixError::MissingParam("key"))
            }),
            (r#"X-Matrix origin="o",key="ed25519:k""#.into(), |e| {
                matches!(e, XMatrixError::MissingParam("sig"))
            }),
            (
                format!(r#"X-Matrix {ok},origin="p""#),
                |e| matches!(e, XMatrixError::DuplicateParam(p) if p == "origin"),
            ),
            (
                format!(r#"X-Matrix {ok},signature="c2ln""#),
                |e| matches!(e, XMatrixError::DuplicateParam(p) if p == "signature"),
            ),
            (
                r#"X-Matrix origin="o,key="ed25519:k",sig="x""#.into(),
                |e| matches!(e, XMatrixError::Malformed(_)),
            ),
            (
                r#"X-Matrix origin="o"x,key="ed25519:k",sig="x""#.into(),
                |e| matches!(e, XMatrixError::Malformed(_)),
            ),
            (r#"X-Matrix origin,key="ed25519:k",sig="x""#.into(), |e| {
                matches!(e, XMatrixError::Malformed(_))
            }),
            (r#"X-Matrix origin=,key="ed25519:k",sig="x""#.into(), |e| {
                matches!(e, XMatrixError::Malformed(_))
            }),
            (
                r#"X-Matrix origin="",key="ed25519:k",sig="x""#.into(),
                |e| matches!(e, XMatrixError::Malformed(_)),
            ),
            (
                "X-Matrix origin=\"o\u{1}\",key=\"ed25519:k\",sig=\"x\"".into(),
                |e| matches!(e, XMatrixError::Malformed(_)),
            ),
            (
                r#"X-Matrix origin="o",key="rsa:k",sig="x""#.into(),
                |e| matches!(e, XMatrixError::UnsupportedKey(k) if k == "rsa:k"),
            ),
            (r#"X-Matrix origin="o",key="ed25519",sig="x""#.into(), |e| {
                matches!(e, XMatrixError::UnsupportedKey(_))
            }),
            (
                format!("X-Matrix {ok},pad=\"{}\"", "x".repeat(MAX_HEADER_BYTES)),
                |e| matches!(e, XMatrixError::TooLong { .. }),
            ),
        ];
        for (header, expected) in cases {
            let err = parse_header(&header).unwrap_err();
            assert!(expected(&err), "{header:?} gave {err:?}");
        }
        assert!(parse_header(&format!("X-Matrix {ok}")).is_ok());
    }

    #[test]
    fn refuses_to_sign_for_unsafe_server_names() {
        let key = random_key("k");
        for bad in ["a\"b", "a\\b", "a b", "a\r\nX: y", ""] {
            let mut req = request("127.0.0.1:8481");
            req.destination = bad.into();
            assert!(matches!(
                sign_request(&key, &req),
                Err(XMatrixError::UnsafeValue(_))
            ));
        }
    }
}
