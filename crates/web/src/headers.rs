//! Response headers every media response carries, and the safe Content-Disposition.

use actix_web::http::header::{HeaderName, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Stops a browser from running anything served from the media repo.
pub const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';";

/// Types a browser may show inline; everything else is an attachment (the spec's list).
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// Characters left as they are in an RFC 8187 `filename*` value (attr-char).
const ATTR_CHAR_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// Headers on every response of the media paths (errors included).
pub fn security_headers() -> [(HeaderName, HeaderValue); 5] {
    [
        (
            HeaderName::from_static("content-security-policy"),
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("cross-origin"),
        ),
        (
            HeaderName::from_static("access-control-allow-origin"),
            HeaderValue::from_static("*"),
        ),
        (
            HeaderName::from_static("access-control-allow-methods"),
            HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS"),
        ),
        (
            HeaderName::from_static("access-control-allow-headers"),
            HeaderValue::from_static(
                "Origin, X-Requested-With, Content-Type, Accept, Authorization, Date, Range",
            ),
        ),
    ]
}

/// Whether the media type (parameters ignored) may be displayed inline.
pub fn is_inline_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    INLINE_TYPES
        .iter()
        .any(|inline| inline.eq_ignore_ascii_case(essence))
}

/// A token per RFC 9110: may stand unquoted as `filename=`.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b))
}

/// `inline`/`attachment` with the filename encoded so that any name (quotes, `;`, CR/LF,
/// non-ASCII, emoji) survives and can never break the header.
pub fn content_disposition(content_type: &str, filename: Option<&str>) -> HeaderValue {
    let kind = if is_inline_type(content_type) {
        "inline"
    } else {
        "attachment"
    };
    let value = match filename.filter(|n| !n.is_empty()) {
        None => return HeaderValue::from_static(kind),
        // Built by hand: this runs on every download, and `format!` costs several times
        // as much.
        Some(name) if is_token(name) => {
            const PARAM: &str = "; filename=";
            let mut value = String::with_capacity(kind.len() + PARAM.len() + name.len());
            value.push_str(kind);
            value.push_str(PARAM);
            value.push_str(name);
            value
        }
        Some(name) => format!(
            "{kind}; filename*=utf-8''{}",
            utf8_percent_encode(name, ATTR_CHAR_ESCAPES)
        ),
    };
    // Every byte above is a visible ASCII character, so this cannot fail; fall back anyway.
    owned_value(value).unwrap_or_else(|| HeaderValue::from_static("attachment"))
}

/// The ETag of content with this sha256: the hash, quoted.
pub fn etag(sha256: &str) -> Option<HeaderValue> {
    let mut value = String::with_capacity(sha256.len() + 2);
    value.push('"');
    value.push_str(sha256);
    value.push('"');
    owned_value(value)
}

/// A header value made from a string built for it, taking over its buffer (`from_str`
/// would copy it: one allocation less per header on every download).
pub fn owned_value(value: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).ok()
}

/// Longest filename taken from another server's Content-Disposition.
const MAX_REMOTE_FILENAME_BYTES: usize = 1024;

/// The filename in a Content-Disposition another server sent: `filename*=utf-8''…`
/// (preferred), else `filename="…"` or `filename=token`. Names with control characters, or
/// longer than [`MAX_REMOTE_FILENAME_BYTES`], are dropped.
pub fn filename_from_disposition(value: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for param in value.split(';').skip(1) {
        let Some((name, raw)) = param.split_once('=') else {
            continue;
        };
        let raw = raw.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let encoded = raw
                    .strip_prefix("utf-8''")
                    .or_else(|| raw.strip_prefix("UTF-8''"));
                extended = encoded.and_then(|e| {
                    percent_encoding::percent_decode_str(e)
                        .decode_utf8()
                        .ok()
                        .map(|d| d.into_owned())
                });
            }
            "filename" => {
                let unquoted = raw
                    .strip_prefix('"')
                    .and_then(|r| r.strip_suffix('"'))
                    .map(|r| r.replace("\\\"", "\"").replace("\\\\", "\\"))
                    .unwrap_or_else(|| raw.to_owned());
                plain = Some(unquoted);
            }
            _ => {}
        }
    }
    extended
        .or(plain)
        .filter(|n| !n.is_empty() && n.len() <= MAX_REMOTE_FILENAME_BYTES)
        .filter(|n| !n.chars().any(char::is_control))
}

/// A Content-Type header value for what the uploader declared, or octet-stream if it cannot
/// be a header value.
pub fn content_type_value(content_type: &str) -> HeaderValue {
    HeaderValue::from_str(content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_names_stay_plain() {
        assert_eq!(
            content_disposition("image/png", Some("cat.png")),
            "inline; filename=cat.png"
        );
        assert_eq!(
            content_disposition("text/html", Some("a.html")),
            "attachment; filename=a.html"
        );
        assert_eq!(content_disposition("application/pdf", None), "attachment");
    }

    #[test]
    fn awkward_names_are_percent_encoded() {
        let value = content_disposition("text/plain", Some("a \"b\";\r\nc 🐈.txt"));
        assert_eq!(
            value.to_str().unwrap(),
            "inline; filename*=utf-8''a%20%22b%22%3B%0D%0Ac%20%F0%9F%90%88.txt"
        );
    }

    #[test]
    fn filenames_from_remote_dispositions() {
        let cases = [
            ("attachment; filename=test.bin", Some("test.bin")),
            ("inline; filename=\"a b.png\"", Some("a b.png")),
            (
                "attachment; filename*=utf-8''a%20%F0%9F%90%88.txt",
                Some("a 🐈.txt"),
            ),
            (
                "attachment; filename=x.txt; filename*=utf-8''y.txt",
                Some("y.txt"),
            ),
            ("attachment", None),
            ("attachment; filename*=utf-8''a%0Db", None),
        ];
        for (header, expected) in cases {
            assert_eq!(
                filename_from_disposition(header).as_deref(),
                expected,
                "{header}"
            );
        }
        // What we send comes back.
        let ours = content_disposition("text/plain", Some("a \"b\";\r\nc 🐈.txt"));
        assert_eq!(
            filename_from_disposition(ours.to_str().unwrap()),
            None,
            "CR/LF dropped"
        );
        let ours = content_disposition("text/plain", Some("a \"b\"; c 🐈.txt"));
        assert_eq!(
            filename_from_disposition(ours.to_str().unwrap()).as_deref(),
            Some("a \"b\"; c 🐈.txt")
        );
    }

    #[test]
    fn inline_ignores_parameters_and_case() {
        assert!(is_inline_type("Text/Plain; charset=utf-8"));
        assert!(!is_inline_type("image/svg+xml"));
    }
}
