//! Errors of the federation crate: one enum per module, so each caller matches only the
//! failures its step can have (the web layer maps every X-Matrix failure to 401, every
//! remote-media failure to 502), plus [`Error`] for code that wants one type.
//!
//! No variant carries key material: a seed never reaches a log through an error.

use std::path::PathBuf;

/// Result of code that mixes several of this crate's steps.
pub type Result<T> = std::result::Result<T, Error>;

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    CanonicalJson(#[from] CanonicalJsonError),
    #[error(transparent)]
    SigningKey(#[from] SigningKeyError),
    #[error(transparent)]
    XMatrix(#[from] XMatrixError),
    #[error(transparent)]
    ServerKeys(#[from] ServerKeysError),
    #[error(transparent)]
    Multipart(#[from] MultipartError),
    #[error(transparent)]
    Cidr(#[from] CidrError),
}

/// A value that has no Matrix canonical JSON form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalJsonError {
    /// A number with a fractional part (canonical JSON has integers only).
    #[error("canonical JSON allows integers only, found {0}")]
    NotAnInteger(String),
    /// An integer outside ±(2^53 − 1).
    #[error("integer {0} is outside the canonical JSON range ±(2^53 - 1)")]
    IntegerOutOfRange(String),
    /// Arrays and objects nested deeper than [`crate::canonical_json::MAX_DEPTH`].
    #[error("JSON nested deeper than {max} levels")]
    TooDeep { max: usize },
    /// Signing needs a JSON object, and this was not one.
    #[error("expected a JSON object")]
    NotAnObject,
}

/// A `signing.key` that cannot be used. Never includes the seed.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("cannot read signing key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is larger than any key file (`MAX_KEY_FILE_BYTES`): probably the wrong file.
    #[error("signing key file {path} is larger than {max} bytes")]
    FileTooLarge { path: PathBuf, max: u64 },
    #[error("signing key is empty")]
    Empty,
    /// Not the three fields `<algorithm> <version> <base64 seed>`.
    #[error("signing key line has {fields} fields, expected 3: `ed25519 <version> <base64 seed>`")]
    WrongFieldCount { fields: usize },
    #[error("unsupported signing key algorithm {0:?} (only ed25519)")]
    WrongAlgorithm(String),
    /// The version is empty, too long, or has characters other than `[A-Za-z0-9_]`.
    #[error("invalid signing key version {0:?}")]
    BadVersion(String),
    #[error("signing key seed is not valid base64")]
    BadBase64,
    #[error("signing key seed is {0} bytes, expected 32")]
    WrongLength(usize),
}

/// Why an `Authorization: X-Matrix` header was not accepted. The web layer answers all of
/// them with 401 and Matrix JSON; the variants exist for logs and tests.
#[derive(Debug, thiserror::Error)]
pub enum XMatrixError {
    /// No header, or an empty one.
    #[error("missing X-Matrix authorization")]
    Missing,
    #[error("authorization header longer than {max} bytes")]
    TooLong { max: usize },
    #[error("authorization scheme is not X-Matrix")]
    WrongScheme,
    #[error("malformed X-Matrix header: {0}")]
    Malformed(&'static str),
    #[error("X-Matrix header lacks the {0} parameter")]
    MissingParam(&'static str),
    #[error("X-Matrix header repeats the {0} parameter")]
    DuplicateParam(String),
    #[error("unsupported X-Matrix key algorithm in {0:?} (only ed25519)")]
    UnsupportedKey(String),
    /// A value we would have to put in the header contains a quote, backslash or control
    /// character (only on the signing side: our own config produced it).
    #[error("cannot put {0:?} into an X-Matrix header")]
    UnsafeValue(String),
    /// The request was meant for another server.
    #[error("X-Matrix destination {0:?} is not this server")]
    WrongDestination(String),
    #[error("no key {key_id} known for {origin}")]
    UnknownKey { origin: String, key_id: String },
    #[error("X-Matrix signature does not verify")]
    BadSignature,
    #[error(transparent)]
    CanonicalJson(#[from] CanonicalJsonError),
}

/// Why a remote server's key document (`/_matrix/key/v2/server`) was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ServerKeysError {
    #[error("key document is not valid JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    #[error("key document field {0} is missing or has the wrong type")]
    BadField(&'static str),
    #[error("key document is for {found:?}, expected {expected:?}")]
    WrongServerName { expected: String, found: String },
    #[error("key {0} in the key document is not a valid ed25519 public key")]
    BadKey(String),
    /// `verify_keys` has no ed25519 key at all.
    #[error("key document has no ed25519 verify key")]
    NoKeys,
    /// No signature under `signatures[server_name]` by one of the document's own keys.
    #[error("key document is not signed by any of its own verify keys")]
    NotSelfSigned,
    #[error("key document signature by {0} does not verify")]
    BadSignature(String),
    #[error("key document expired at {valid_until_ms} (now {now_ms})")]
    Expired { valid_until_ms: u64, now_ms: u64 },
    #[error(transparent)]
    CanonicalJson(#[from] CanonicalJsonError),
}

/// Why a federation media response (`multipart/mixed`) was rejected or cut short.
#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    #[error("content type {0:?} is not multipart/mixed")]
    NotMultipart(String),
    #[error("multipart content type has no boundary parameter")]
    MissingBoundary,
    #[error("multipart boundary is invalid (RFC 2046: 1-70 characters from a fixed set)")]
    BadBoundary,
    #[error("multipart preamble longer than {max} bytes")]
    PreambleTooLarge { max: usize },
    #[error("multipart part headers longer than {max} bytes in total")]
    HeadersTooLarge { max: usize },
    #[error("malformed multipart part headers: {0}")]
    MalformedHeaders(&'static str),
    /// The multipart body closed before its first part.
    #[error("multipart response has no JSON part")]
    MissingJsonPart,
    #[error("first multipart part is not application/json")]
    FirstPartNotJson,
    #[error("multipart JSON part longer than {max} bytes")]
    JsonTooLarge { max: usize },
    #[error("multipart JSON part is not valid JSON: {0}")]
    InvalidJson(serde_json::Error),
    #[error("multipart JSON part is not a JSON object")]
    JsonNotObject,
    /// The multipart body closed after the JSON part.
    #[error("multipart response has no media part")]
    MissingMediaPart,
    #[error("multipart redirect part has a body")]
    RedirectWithBody,
    #[error("multipart response has more than two parts")]
    ExtraPart,
    /// The body ended before the closing delimiter: the media is incomplete.
    #[error("multipart response ended before its closing delimiter")]
    Truncated,
    /// The underlying HTTP body failed.
    #[error("reading the response body failed: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
}

/// An allow-list entry that is not an IP address or CIDR range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP address or CIDR range")]
    Invalid(String),
    #[error("prefix length {prefix} is longer than {max} for this address family")]
    PrefixTooLong { prefix: u8, max: u8 },
}
