//! Remote media fetched once for every media repo that shares the cache shards.
//!
//! A repo that needs remote media first looks for its shared record in the cache
//! (`mr1:remote:{origin/id}`: sha256, type, name, size). If the record and its blob are
//! there, the bytes are copied from the cache into this repo's own datastore — checked
//! against the record's sha256 and size before any row is written, so a blob that lost a
//! chunk to eviction is never stored wrong — and the origin is not asked. Otherwise one repo
//! takes the lease (`mr1:lock:{origin/id}`, SET NX PX, renewed while it downloads), fetches,
//! and publishes the blob, then the record. Everyone else, in this repo and in others, waits
//! for the record, polling with a growing interval ([`WAIT_FIRST`] to [`WAIT_MAX`]) rather
//! than in a tight loop, and takes the lease over if its holder dies (the lease expires).
//!
//! Media larger than `cache.max_object_bytes` cannot be shared: its record is published
//! without a blob, and a waiter that finds the record but no blob fetches it itself.

use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use mr_cache::{BlobRead, Cache, Lease};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

/// How long a lease lasts without renewal: a holder that dies delays the others this long.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often a holder renews its lease while it downloads.
pub const LEASE_RENEW_EVERY: Duration = Duration::from_secs(3);
/// First wait between two looks for the record another repo is fetching.
pub const WAIT_FIRST: Duration = Duration::from_millis(50);
/// Longest wait between two looks.
pub const WAIT_MAX: Duration = Duration::from_millis(1000);

/// What the cache says about remote media another repo already fetched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedRecord {
    pub sha256: String,
    pub content_type: String,
    pub upload_name: Option<String>,
    pub size: u64,
}

/// The shared record of `origin/media_id`, if one is cached and readable.
pub async fn read_record(cache: &Cache, origin: &str, media_id: &str) -> Option<SharedRecord> {
    let raw = cache
        .get_record(&mr_cache::remote_record_key(origin, media_id))
        .await?;
    match serde_json::from_slice::<SharedRecord>(&raw) {
        Ok(record) if mr_cache::is_valid_sha256(&record.sha256) => Some(record),
        _ => {
            debug!(%origin, %media_id, "ignoring an unreadable shared remote record");
            None
        }
    }
}

/// Publishes what this repo fetched: the blob (when it fits the cache) from the stored
/// file, then the record, so a reader that sees the record finds the blob.
pub async fn publish(
    cache: &Cache,
    origin: &str,
    media_id: &str,
    record: &SharedRecord,
    file: tokio::fs::File,
) {
    match cache.put_blob(&record.sha256, record.size, file).await {
        Ok(true) => {}
        Ok(false) => {
            debug!(%origin, %media_id, "remote media not cached (too large or no cache); record only")
        }
        Err(err) => debug!(%origin, %media_id, error = %err, "caching fetched remote media failed"),
    }
    if let Ok(value) = serde_json::to_vec(record) {
        cache
            .put_record(
                &mr_cache::remote_record_key(origin, media_id),
                Bytes::from(value),
            )
            .await;
    }
}

/// The cached blob of `record` as a byte stream, if the cache holds all of it at open
/// time; a chunk lost later ends the stream with an error (the copy is then abandoned).
pub async fn cached_bytes(
    cache: &Cache,
    record: &SharedRecord,
) -> Option<impl Stream<Item = Result<Bytes, String>> + Send + 'static> {
    let reader = cache.open_blob(&record.sha256, None).await?;
    if reader.total_size != record.size {
        info!(sha256 = %record.sha256, "cached blob and shared record disagree on the size");
        return None;
    }
    Some(futures_util::stream::unfold(
        Some(reader),
        |reader| async move {
            let mut reader = reader?;
            match reader.next().await {
                BlobRead::Data(bytes) => Some((Ok(bytes), Some(reader))),
                BlobRead::End => None,
                BlobRead::Lost { at } => {
                    Some((Err(format!("the cache lost the blob at byte {at}")), None))
                }
            }
        },
    ))
}

/// Renews `lease` every [`LEASE_RENEW_EVERY`] until dropped; stops when the lease is lost.
pub async fn keep_renewing(cache: &Cache, lease: &Lease) {
    if !lease.is_exclusive() {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(LEASE_RENEW_EVERY).await;
        if !cache.renew_lease(lease, LEASE_TTL).await {
            info!(
                lease = lease.key(),
                "lost the fetch lease; another repo may fetch too"
            );
            return std::future::pending().await;
        }
    }
}
