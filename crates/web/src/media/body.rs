//! The bytes of a download: from the cache when it has them, else from the datastore, and
//! from the datastore for the rest when the cache loses a chunk mid-response.
//!
//! A cache miss fills the cache in the background (never delaying the response); one fill
//! per blob at a time.

use std::sync::LazyLock;

use actix_web::web;
use bytes::Bytes;
use dashmap::DashSet;
use futures_util::{Stream, StreamExt};
use mr_cache::{BlobRead, BlobReader};
use prometheus::{register_int_counter_vec, IntCounterVec};
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;
use tracing::{debug, warn};

use crate::state::AppState;

/// Read size for datastore files.
const FILE_READ_CHUNK: usize = 64 * 1024;

static DOWNLOAD_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "media_repo_download_bytes_total",
        "Bytes sent to downloaders, by where they were read from (cache or datastore)",
        &["source"]
    )
    .expect("metric registered once")
});

/// Blobs whose cache fill is running, so concurrent misses start one fill, not many.
static FILLS_IN_FLIGHT: LazyLock<DashSet<String>> = LazyLock::new(DashSet::new);

/// How long after an eviction a finished fill of the same blob deletes it again: a
/// download that read its row just before a quarantine may start a fill just after the
/// eviction. Far longer than the moment between a download's row read and its cache miss.
pub const REFILL_GUARD: std::time::Duration = std::time::Duration::from_secs(60);

/// Blobs evicted within [`REFILL_GUARD`] (quarantine): a fill of one of them is undone.
static RECENTLY_EVICTED: LazyLock<moka::sync::Cache<String, ()>> = LazyLock::new(|| {
    moka::sync::Cache::builder()
        .max_capacity(1_000_000)
        .time_to_live(REFILL_GUARD)
        .build()
});

/// Marks a blob as just evicted, so a fill that races the eviction is undone.
pub fn guard_against_refill(sha256: &str) {
    RECENTLY_EVICTED.insert(sha256.to_owned(), ());
}

type FileStream = ReaderStream<tokio::io::Take<tokio::fs::File>>;

enum Source {
    Cache(BlobReader),
    File(FileStream),
    Done,
}

/// Where the bytes of one download come from, positioned at the first byte to send.
pub struct MediaBody {
    state: web::Data<AppState>,
    location: String,
    /// Absolute offset of the next byte to send.
    position: u64,
    /// Absolute offset one past the last byte to send.
    end: u64,
    source: Source,
}

/// Opens `location` in the datastore at `start`, limited to `len` bytes.
async fn open_file(
    state: &AppState,
    location: &str,
    start: u64,
    len: u64,
) -> Result<FileStream, mr_storage::Error> {
    let file = state.datastore.open_at(location, start).await?;
    Ok(ReaderStream::with_capacity(file.take(len), FILE_READ_CHUNK))
}

impl MediaBody {
    /// Picks the source for bytes `start..=end` of the blob: the cache on a hit, the
    /// datastore on a miss (which also starts a background fill).
    pub async fn open(
        state: web::Data<AppState>,
        sha256: &str,
        location: &str,
        size: u64,
        start: u64,
        end_inclusive: u64,
    ) -> Result<MediaBody, mr_storage::Error> {
        let end = end_inclusive + 1;
        let range = if start == 0 && end == size {
            None
        } else {
            Some((start, end_inclusive))
        };
        let source = if size == 0 {
            Source::Done
        } else if let Some(reader) = state.cache.open_blob(sha256, range).await {
            Source::Cache(reader)
        } else {
            if size <= state.config().cache.max_object_bytes {
                fill_cache_in_background(&state, sha256, location, size);
            }
            Source::File(open_file(&state, location, start, end - start).await?)
        };
        Ok(MediaBody {
            state,
            location: location.to_owned(),
            position: start,
            end,
            source,
        })
    }

    /// The response body stream.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, std::io::Error>> + 'static {
        futures_util::stream::unfold(self, |mut body| async move {
            let item = body.next_chunk().await?;
            Some((item, body))
        })
    }

    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if self.position >= self.end {
                self.source = Source::Done;
            }
            match &mut self.source {
                Source::Done => return None,
                Source::Cache(reader) => match reader.next().await {
                    BlobRead::Data(bytes) => {
                        self.position += bytes.len() as u64;
                        DOWNLOAD_BYTES
                            .with_label_values(&["cache"])
                            .inc_by(bytes.len() as u64);
                        return Some(Ok(bytes));
                    }
                    BlobRead::End => {
                        if self.position < self.end {
                            // The cache said it was done early: never send short bytes.
                            warn!(
                                position = self.position,
                                end = self.end,
                                "cache ended early; finishing from the datastore"
                            );
                            if let Err(err) = self.switch_to_file().await {
                                return Some(Err(err));
                            }
                        } else {
                            self.source = Source::Done;
                        }
                    }
                    BlobRead::Lost { at } => {
                        debug!(
                            at,
                            position = self.position,
                            "cache lost a chunk; finishing from the datastore"
                        );
                        if let Err(err) = self.switch_to_file().await {
                            return Some(Err(err));
                        }
                    }
                },
                Source::File(stream) => match stream.next().await {
                    Some(Ok(bytes)) => {
                        self.position += bytes.len() as u64;
                        DOWNLOAD_BYTES
                            .with_label_values(&["datastore"])
                            .inc_by(bytes.len() as u64);
                        return Some(Ok(bytes));
                    }
                    Some(Err(err)) => {
                        self.source = Source::Done;
                        return Some(Err(err));
                    }
                    None => {
                        if self.position < self.end {
                            self.source = Source::Done;
                            return Some(Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "datastore file is shorter than its recorded size",
                            )));
                        }
                        self.source = Source::Done;
                    }
                },
            }
        }
    }

    /// Continues from the datastore at the first byte not yet sent. Ends the stream with an
    /// error (the client sees a cut connection, never wrong bytes) if the file is unreadable.
    async fn switch_to_file(&mut self) -> Result<(), std::io::Error> {
        match open_file(
            &self.state,
            &self.location,
            self.position,
            self.end - self.position,
        )
        .await
        {
            Ok(stream) => {
                self.source = Source::File(stream);
                Ok(())
            }
            Err(err) => {
                warn!(error = %err, location = %self.location, "datastore unreadable while finishing a download");
                self.source = Source::Done;
                Err(std::io::Error::other(err.to_string()))
            }
        }
    }
}

/// Copies a stored blob into the cache on a background task, once per blob at a time.
pub fn fill_cache_in_background(
    state: &web::Data<AppState>,
    sha256: &str,
    location: &str,
    size: u64,
) {
    if state.cache.backend() == "none" || !FILLS_IN_FLIGHT.insert(sha256.to_owned()) {
        return;
    }
    let state = state.clone();
    let sha256 = sha256.to_owned();
    let location = location.to_owned();
    actix_web::rt::spawn(async move {
        match state.datastore.open(&location).await {
            Ok(file) => match state.cache.put_blob(&sha256, size, file).await {
                Ok(true) if RECENTLY_EVICTED.contains_key(&sha256) => {
                    state.cache.delete_blob(&sha256).await;
                    debug!(%sha256, "cache fill raced an eviction; evicted again");
                }
                Ok(stored) => debug!(%sha256, stored, "cache fill finished"),
                Err(err) => debug!(%sha256, error = %err, "cache fill failed"),
            },
            Err(err) => {
                warn!(%sha256, error = %err, "cache fill could not open the datastore file")
            }
        }
        FILLS_IN_FLIGHT.remove(&sha256);
    });
}
