//! Filling the cache from the stored copy of a blob (a download's miss, a fresh upload):
//! the one place that decides whether and when a copy is made, run on a background task so
//! it never delays the caller.
//!
//! * Nothing starts, and the source is never opened, for the `none` backend or a blob
//!   `cache.max_object_bytes` does not admit (the check `put_blob` applies too).
//! * Single flight: one fill per blob at a time per [`Cache`]; a fill asked for while one
//!   runs is not started. The in-flight entry belongs to a drop guard, so it goes however
//!   the fill ends: finished, source failed, panicked, or its task aborted. (A leaked entry
//!   would keep that blob out of the cache for the life of the process.)
//! * A fill that races an eviction is undone: a blob marked with
//!   [`Cache::guard_against_refill`] within [`REFILL_GUARD`] is deleted again once its fill
//!   stored it.

use std::collections::HashSet;
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mr_config::CacheBackend;
use tokio::io::AsyncRead;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::cache::Cache;

/// How long after an eviction a finished fill of the same blob deletes it again: a
/// download that read its row just before a quarantine may start a fill just after the
/// eviction. Far longer than the moment between a download's row read and its cache miss.
pub const REFILL_GUARD: Duration = Duration::from_secs(60);

/// Most blobs remembered as just evicted (one name each, for [`REFILL_GUARD`]); a mass
/// quarantine beyond this forgets the oldest marks first.
const MAX_GUARDED_EVICTIONS: u64 = 1_000_000;

/// How a fill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillOutcome {
    /// The blob is in the cache.
    Stored,
    /// The backend did not take it (the cache is best effort; a later miss tries again).
    NotStored,
    /// Stored, then deleted again: the blob was evicted while the fill ran.
    Undone,
    /// The source could not be opened or read, or yielded another size than announced.
    SourceFailed,
}

/// The fill state one [`Cache`] owns.
pub(crate) struct Fills {
    /// Blobs whose fill is running. A std lock: held only to insert or remove one name,
    /// never across an await.
    in_flight: Mutex<HashSet<String>>,
    /// Blobs evicted within [`REFILL_GUARD`]: a fill of one of them is undone.
    recently_evicted: moka::sync::Cache<String, ()>,
}

impl Default for Fills {
    fn default() -> Fills {
        Fills {
            in_flight: Mutex::new(HashSet::new()),
            recently_evicted: moka::sync::Cache::builder()
                .max_capacity(MAX_GUARDED_EVICTIONS)
                .time_to_live(REFILL_GUARD)
                .build(),
        }
    }
}

impl Fills {
    /// Takes the in-flight entry for `sha256`; None when a fill of it is already running.
    fn enter(self: &Arc<Self>, sha256: &str) -> Option<InFlight> {
        let entered = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(sha256.to_owned());
        entered.then(|| InFlight {
            fills: Arc::clone(self),
            sha256: sha256.to_owned(),
        })
    }
}

/// One running fill's entry in the in-flight set, removed when this is dropped: at the end
/// of the fill, or when its task unwinds from a panic or is aborted.
struct InFlight {
    fills: Arc<Fills>,
    sha256: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.fills
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.sha256);
    }
}

impl Cache {
    /// Copies the blob `sha256` of `size` bytes into the cache on a background task,
    /// reading it from what `source` opens (awaited on that task, and only if the fill
    /// starts). None: no fill started — no cache, a blob too big to cache, or a fill of this
    /// blob already running. The handle may be dropped; the fill runs on.
    pub fn fill_in_background<S, R, E>(
        &self,
        sha256: &str,
        size: u64,
        source: S,
    ) -> Option<JoinHandle<FillOutcome>>
    where
        S: Future<Output = Result<R, E>> + Send + 'static,
        R: AsyncRead + Unpin + Send + 'static,
        E: Display + Send + 'static,
    {
        if self.kind() == CacheBackend::None || !self.limits().admits(size) {
            return None;
        }
        let in_flight = self.fills().enter(sha256)?;
        let cache = self.clone();
        Some(tokio::spawn(async move {
            let outcome = cache.fill(&in_flight.sha256, size, source).await;
            drop(in_flight);
            outcome
        }))
    }

    /// Marks a blob as just evicted (a quarantine), so a fill that races the eviction is
    /// undone when it ends. Other deletions (purge) leave no mark.
    pub fn guard_against_refill(&self, sha256: &str) {
        self.fills().recently_evicted.insert(sha256.to_owned(), ());
    }

    /// The body of one fill, run while its in-flight entry is held.
    async fn fill<S, R, E>(&self, sha256: &str, size: u64, source: S) -> FillOutcome
    where
        S: Future<Output = Result<R, E>>,
        R: AsyncRead + Unpin + Send,
        E: Display,
    {
        let reader = match source.await {
            Ok(reader) => reader,
            Err(err) => {
                warn!(%sha256, error = %err, "cache fill could not open its source");
                return FillOutcome::SourceFailed;
            }
        };
        match self.put_blob(sha256, size, reader).await {
            Ok(true) if self.fills().recently_evicted.contains_key(sha256) => {
                self.delete_blob(sha256).await;
                debug!(%sha256, "cache fill raced an eviction; evicted again");
                FillOutcome::Undone
            }
            Ok(stored) => {
                debug!(%sha256, stored, "cache fill finished");
                if stored {
                    FillOutcome::Stored
                } else {
                    FillOutcome::NotStored
                }
            }
            Err(err) => {
                debug!(%sha256, error = %err, "cache fill failed");
                FillOutcome::SourceFailed
            }
        }
    }
}
