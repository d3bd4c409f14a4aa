//! Other servers' signing keys, for checking the X-Matrix signatures of requests they send
//! us: fetched from the server's own `/_matrix/key/v2/server` (through discovery and the
//! address rules of [`Dialer`]), checked (self-signed, for the right server, not expired)
//! by `mr_federation`, and cached until `valid_until_ts` (at most a week).
//!
//! A key id the cached document lacks (the server rotated its key) triggers one refetch,
//! at most every [`REFETCH_INTERVAL`] per server, so a stream of requests signed with an
//! invented key id cannot make us hammer a server.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::VerifyingKey;
use mr_federation::{parse_key_document, ServerKeys, MAX_KEY_DOCUMENT_BYTES};
use tracing::{debug, warn};

use crate::dialer::Dialer;

/// Servers whose keys are remembered at once.
const MAX_CACHED_SERVERS: u64 = 10_000;
/// Shortest time between two fetches of one server's keys.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Longest any key document is kept, whatever its `valid_until_ts` says.
const MAX_CACHE_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// A fetched key document and when it was fetched.
#[derive(Clone)]
struct Entry {
    keys: Option<Arc<ServerKeys>>,
    fetched_at_ms: u64,
}

/// The key cache; cheap to share behind an `Arc`.
pub struct KeyStore {
    entries: moka::future::Cache<String, Entry>,
}

impl Default for KeyStore {
    fn default() -> Self {
        KeyStore {
            entries: moka::future::Cache::builder()
                .max_capacity(MAX_CACHED_SERVERS)
                .time_to_live(MAX_CACHE_AGE)
                .build(),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl KeyStore {
    /// `server`'s current key `key_id`, or `None` if the server has no such key or its keys
    /// cannot be had (the reason is logged).
    pub async fn key(&self, dialer: &Dialer, server: &str, key_id: &str) -> Option<VerifyingKey> {
        let now = now_ms();
        let cached = self.entries.get(server).await;
        if let Some(entry) = &cached {
            let usable = entry
                .keys
                .as_ref()
                .filter(|keys| keys.cache_until_ms(entry.fetched_at_ms) > now);
            if let Some(key) = usable.and_then(|keys| keys.keys.get(key_id)) {
                return Some(*key);
            }
            if now.saturating_sub(entry.fetched_at_ms) < REFETCH_INTERVAL.as_millis() as u64 {
                debug!(%server, %key_id, "key not known and fetched recently; not asking again yet");
                return None;
            }
        }
        let keys = fetch(dialer, server, now).await.map(Arc::new);
        self.entries
            .insert(
                server.to_owned(),
                Entry {
                    keys: keys.clone(),
                    fetched_at_ms: now,
                },
            )
            .await;
        keys.and_then(|keys| keys.keys.get(key_id).copied())
    }
}

async fn fetch(dialer: &Dialer, server: &str, now: u64) -> Option<ServerKeys> {
    let response = match dialer
        .federation_get(server, "/_matrix/key/v2/server", None)
        .await
    {
        Ok(response) if response.status().is_success() => response,
        Ok(response) => {
            warn!(%server, status = %response.status(), "server answered its key request with an error");
            return None;
        }
        Err(err) => {
            warn!(%server, error = %err, "cannot fetch the server's signing keys");
            return None;
        }
    };
    let body = match dialer.read_small(response, MAX_KEY_DOCUMENT_BYTES).await {
        Ok(body) => body,
        Err(err) => {
            warn!(%server, error = %err, "cannot read the server's key document");
            return None;
        }
    };
    match parse_key_document(&body, server, now) {
        Ok(keys) => Some(keys),
        Err(err) => {
            warn!(%server, error = %err, "rejected the server's key document");
            None
        }
    }
}
