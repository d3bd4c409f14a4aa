//! Matrix federation building blocks for media-repo: what it needs to fetch remote media
//! and to serve its own media over federation. Pure: no I/O except reading a key file
//! (`SigningKey::from_file`) and pulling the response body stream a caller hands to the
//! multipart parser; no HTTP server, no actix.
//!
//! * [`canonical_json`] — the byte string Matrix signatures cover.
//! * [`signing_key`] — [`SigningKey`] from Synapse's `signing.key` format; ed25519 signing.
//! * [`xmatrix`] — signing and checking `Authorization: X-Matrix` request headers.
//! * [`server_keys`] — checking a remote server's `/_matrix/key/v2/server` document, and
//!   producing our own.
//! * [`multipart`] — streaming parser for the federation media `multipart/mixed` response.
//! * [`ip_policy`] — which addresses federation may dial (SSRF rules, allow-list).

mod b64;
mod canonical_json;
mod error;
mod http_syntax;
mod ip_policy;
mod multipart;
mod server_keys;
mod signing_key;
mod xmatrix;

/// The public-key type in this crate's API (key lookups for [`verify`], [`ServerKeys`]),
/// re-exported so callers need no direct ed25519-dalek dependency.
pub use ed25519_dalek::VerifyingKey;

pub use canonical_json::{to_canonical_json, to_canonical_json_for_signing};
pub use error::{
    CanonicalJsonError, CidrError, Error, MultipartError, Result, ServerKeysError, SigningKeyError,
    XMatrixError,
};
pub use ip_policy::{is_globally_routable, Cidr, IpPolicy};
pub use multipart::{MediaBody, MediaResponse, MultipartMedia};
pub use server_keys::{
    our_key_document, parse_key_document, verify_key_document, OldVerifyKey, ServerKeys,
    MAX_KEY_DOCUMENT_BYTES,
};
pub use signing_key::SigningKey;
pub use xmatrix::{parse_header, sign_request, verify, RequestToSign, XMatrix};
