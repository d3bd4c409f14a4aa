//! The bytes of a download: from the cache when it has them, else from the datastore, and
//! from the datastore for the rest when the cache loses a chunk mid-response.
//!
//! A cache miss asks the cache to fill itself from the datastore file
//! ([`fill_from_datastore`]); whether, when and how often is the cache's policy
//! (`mr_cache::Cache::fill_in_background`).

use std::sync::LazyLock;

use actix_web::web;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use mr_cache::{BlobRead, BlobReader};
use prometheus::{register_int_counter_vec, IntCounter, IntCounterVec};
use tokio::io::AsyncReadExt;
use tokio_util::io::{ReaderStream, StreamReader};
use tracing::{debug, warn};

use crate::state::AppState;

/// Read size for datastore files.
const FILE_READ_CHUNK: usize = 64 * 1024;

static DOWNLOAD_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "media_repo_download_bytes_total",
        "Bytes sent to downloaders, by where they were read from (cache, datastore, or fresh: a thumbnail just made, from memory)",
        &["source"]
    )
    .expect("metric registered once")
});

// Each source's counter resolved once: `with_label_values` hashes the label and takes the
// vector's lock on every call, and a small download would pay that per chunk.
static FROM_CACHE: LazyLock<IntCounter> =
    LazyLock::new(|| DOWNLOAD_BYTES.with_label_values(&["cache"]));
static FROM_DATASTORE: LazyLock<IntCounter> =
    LazyLock::new(|| DOWNLOAD_BYTES.with_label_values(&["datastore"]));
static FROM_MEMORY: LazyLock<IntCounter> =
    LazyLock::new(|| DOWNLOAD_BYTES.with_label_values(&["fresh"]));

type FileStream = ReaderStream<tokio::io::Take<tokio::fs::File>>;

enum Source {
    /// Bytes at hand (a thumbnail just made), already cut to the range.
    Memory(Bytes),
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
            fill_from_datastore(&state, sha256, location, size);
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

    /// Bytes `start..=end_inclusive` of `bytes`, which the caller holds whole (a thumbnail
    /// just made, served while it is being stored).
    pub fn in_memory(
        state: web::Data<AppState>,
        bytes: Bytes,
        start: u64,
        end_inclusive: u64,
    ) -> MediaBody {
        let len = bytes.len() as u64;
        let end = end_inclusive.saturating_add(1).min(len);
        let start = start.min(end);
        // usize: both are at most `bytes.len()`.
        let part = bytes.slice(start as usize..end as usize);
        MediaBody {
            state,
            location: String::new(),
            position: start,
            end,
            source: if part.is_empty() {
                Source::Done
            } else {
                Source::Memory(part)
            },
        }
    }

    /// All the bytes to send, when the cache handed them over whole at open (an inline
    /// blob): a small download is answered with them at once, as a bare handler would,
    /// without the stream machinery (which costs more than the bytes at 4 KiB). None
    /// otherwise: stream the body with [`MediaBody::into_stream`].
    pub fn take_ready(&mut self) -> Option<Bytes> {
        if let Source::Memory(bytes) = &mut self.source {
            let bytes = std::mem::take(bytes);
            self.position = self.end;
            self.source = Source::Done;
            FROM_MEMORY.inc_by(bytes.len() as u64);
            return Some(bytes);
        }
        let Source::Cache(reader) = &mut self.source else {
            return None;
        };
        let bytes = reader.take_ready()?;
        self.position = self.end;
        self.source = Source::Done;
        FROM_CACHE.inc_by(bytes.len() as u64);
        Some(bytes)
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
                // `respond` takes these whole with `take_ready`; a stream still ends right.
                Source::Memory(_) => return self.take_ready().map(Ok),
                Source::Cache(reader) => match reader.next().await {
                    BlobRead::Data(bytes) => {
                        self.position += bytes.len() as u64;
                        FROM_CACHE.inc_by(bytes.len() as u64);
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
                        FROM_DATASTORE.inc_by(bytes.len() as u64);
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

/// Asks the cache to copy the stored blob at `location` into itself in the background
/// (a download's miss, a fresh upload). The cache decides whether: not for the `none`
/// backend, not above `cache.max_object_bytes`, once per blob at a time.
pub fn fill_from_datastore(state: &web::Data<AppState>, sha256: &str, location: &str, size: u64) {
    let opener = state.clone();
    let location = location.to_owned();
    // The handle is dropped: the fill runs on, and its outcome is the cache's to log.
    let _ = state.cache.fill_in_background(sha256, size, async move {
        opener.datastore.open(&location).await
    });
}

/// [`fill_from_datastore`] for a blob whose bytes are still in memory (a small upload's
/// body, the chunks as they arrived): the same policy, without opening the file and reading
/// it back on the blocking pool.
pub fn fill_from_memory(state: &web::Data<AppState>, sha256: &str, chunks: Vec<Bytes>) {
    let size = chunks.iter().map(|chunk| chunk.len() as u64).sum();
    let chunks = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
    let _ = state.cache.fill_in_background(sha256, size, async move {
        Ok::<_, std::convert::Infallible>(StreamReader::new(chunks))
    });
}
