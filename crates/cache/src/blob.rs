//! Blobs over the key-value layer: streaming writes and verified, ranged reads.
//!
//! A blob of at most `Limits::inline_max_bytes` (see [`crate::INLINE_MAX_BYTES`]) is one key:
//! its header value `mr1:blob:{sha}:m` carries the bytes (inline form, `header.rs`), so a
//! write is one `SET` and an open one `GET`, and the bytes are verified before the open
//! succeeds — a damaged inline value is a miss. A larger blob is stored as chunks
//! `mr1:blob:{sha}:N` and a header (chunked form). Writers put every chunk first and the
//! header last, so a reader that finds a header has seen a complete write. Readers still
//! trust nothing: eviction may drop any single chunk and a key may be overwritten, so every
//! chunk is checked for length and checksum before a byte of it is handed out. A chunk that
//! fails ends the read with [`BlobRead::Lost`] at the offset where correct bytes stop —
//! never wrong or short bytes. A memory-backend value is hashed once: its bytes never
//! change in place, so the first check that passes holds for every later read of that entry
//! (`kv::Checked`).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;

use crate::error::{CacheError, Result};
use crate::header::{
    checksum, seal_inline, start_inline, BlobHeader, StoredBlob, INLINE_HEADER_LEN,
};
use crate::keys::{blob_chunk_key, blob_header_key};
use crate::kv::{Checked, Kv};
use crate::limits::Limits;
use crate::metrics;
use crate::reshard;

/// Writes a blob of `size` bytes read from `reader`; the caller checked that `limits`
/// admit that size. `Ok(false)`: not cached (the backend refused a write — the cache is
/// best effort). At most two chunks are held at once: the one being written and the next
/// one being read.
pub(crate) async fn put_blob<R: AsyncRead + Unpin + Send>(
    kv: &Kv,
    limits: Limits,
    sha256: &str,
    size: u64,
    mut reader: R,
) -> Result<bool> {
    if size <= limits.inline_max_bytes() {
        return put_inline(kv, limits, sha256, size, reader).await;
    }
    let chunk_bytes = limits.chunk_bytes;
    let mut checksums =
        Vec::with_capacity(usize::try_from(size.div_ceil(chunk_bytes)).unwrap_or(0));
    let mut in_flight: Option<(u64, Bytes)> = None;
    let mut offset = 0u64;
    loop {
        let want = chunk_bytes.min(size - offset);
        let write = async {
            match in_flight.take() {
                Some((index, bytes)) => {
                    kv.set(blob_chunk_key(sha256, index), bytes, limits.ttl)
                        .await
                }
                None => true,
            }
        };
        let (read, written) = tokio::join!(read_chunk(&mut reader, want), write);
        let chunk = read?;
        if !written {
            tracing::debug!(sha256, "cache refused a chunk; blob not cached");
            return Ok(false);
        }
        if want == 0 {
            // `read_chunk(0)` probes for one extra byte.
            if !chunk.is_empty() {
                return Err(CacheError::SizeMismatch {
                    expected: size,
                    actual: size + 1,
                    more: true,
                });
            }
            break;
        }
        if (chunk.len() as u64) < want {
            return Err(CacheError::SizeMismatch {
                expected: size,
                actual: offset + chunk.len() as u64,
                more: false,
            });
        }
        checksums.push(checksum(&chunk));
        in_flight = Some((offset / chunk_bytes, chunk));
        offset += want;
    }
    let header = BlobHeader {
        total_size: size,
        chunk_size: chunk_bytes as u32,
        checksums,
    };
    Ok(kv
        .set(blob_header_key(sha256), header.encode(), limits.ttl)
        .await)
}

/// Writes a blob small enough to live inside its header value: one `SET`, nothing else.
async fn put_inline<R: AsyncRead + Unpin + Send>(
    kv: &Kv,
    limits: Limits,
    sha256: &str,
    size: u64,
    mut reader: R,
) -> Result<bool> {
    // The caller checked `size` against the inline limit, far below usize::MAX.
    let len = usize::try_from(size).unwrap_or(usize::MAX);
    let mut value = start_inline(len);
    fill(&mut reader, &mut value, INLINE_HEADER_LEN + len).await?;
    let got = (value.len() - INLINE_HEADER_LEN) as u64;
    if got < size {
        return Err(CacheError::SizeMismatch {
            expected: size,
            actual: got,
            more: false,
        });
    }
    if !read_chunk(&mut reader, 0).await?.is_empty() {
        return Err(CacheError::SizeMismatch {
            expected: size,
            actual: size + 1,
            more: true,
        });
    }
    seal_inline(&mut value);
    Ok(kv
        .set(blob_header_key(sha256), value.freeze(), limits.ttl)
        .await)
}

/// Reads exactly `want` bytes unless the reader ends first, into a buffer of exactly that
/// capacity (the memory backend weighs values by length, so no slack may hide in them).
/// `want == 0` reads at most one byte, to detect a reader longer than announced.
async fn read_chunk<R: AsyncRead + Unpin>(reader: &mut R, want: u64) -> std::io::Result<Bytes> {
    let want = usize::try_from(want.max(1)).unwrap_or(usize::MAX);
    let mut buf = BytesMut::with_capacity(want);
    fill(reader, &mut buf, want).await?;
    Ok(buf.freeze())
}

/// Appends to `buf` until it is `len` bytes long or the reader ends, never reading past
/// that (the bytes after belong to the size check).
async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    len: usize,
) -> std::io::Result<()> {
    let mut limited = reader.take(len.saturating_sub(buf.len()) as u64);
    while buf.len() < len {
        if limited.read_buf(buf).await? == 0 {
            break;
        }
    }
    Ok(())
}

/// Every key a blob may occupy, for deleting it everywhere. Without a header we cannot know
/// the chunk count, so this also lists every chunk a blob within today's limits could have:
/// quarantined media must not linger in the cache because its header was evicted first.
pub(crate) async fn blob_keys(kv: &Kv, limits: Limits, sha256: &str) -> Vec<String> {
    let header_key = blob_header_key(sha256);
    let from_header = kv
        .get(&header_key)
        .await
        .and_then(|bytes| StoredBlob::decode(&bytes))
        .map_or(0, |stored| stored.chunk_count());
    let possible = limits.max_object_bytes.div_ceil(limits.chunk_bytes);
    let count = from_header.max(possible);
    let mut keys = Vec::with_capacity(usize::try_from(count).unwrap_or(0) + 1);
    keys.push(header_key);
    keys.extend((0..count).map(|i| blob_chunk_key(sha256, i)));
    keys
}

/// Opens a blob for reading `range` (inclusive, absolute offsets; None = all of it).
/// None when the header is missing or damaged (for an inline blob: its bytes too), or the
/// range does not fit the blob. A header missing on the blob's shard is looked for on its
/// previous owner after a reshard (`reshard.rs`): found there, the blob is read from it and
/// moved to its current shard in the background.
pub(crate) async fn open_blob(
    kv: &Kv,
    limits: Limits,
    sha256: &str,
    range: Option<(u64, u64)>,
) -> Option<BlobReader> {
    let header_key = blob_header_key(sha256);
    let (stored, source) = match kv.get_checked(&header_key).await {
        Some((raw, checked)) => (StoredBlob::decode_checked(&raw, &checked)?, kv.clone()),
        None => {
            let found = reshard::read_previous(kv, &header_key, "blob_open").await?;
            let Some(stored) = StoredBlob::decode(&found.value) else {
                found.count("blob_open", "miss");
                return None;
            };
            found.count("blob_open", "hit");
            reshard::spawn_move_blob(
                kv,
                found.source.clone(),
                limits,
                sha256,
                found.value,
                &stored,
            );
            (stored, found.source)
        }
    };
    let total_size = match &stored {
        StoredBlob::Chunked(header) => header.total_size,
        StoredBlob::Inline(bytes) => bytes.len() as u64,
    };
    let (pos, end) = match range {
        None => (0, total_size),
        Some((start, last)) if start <= last && last < total_size => (start, last + 1),
        Some(_) => return None,
    };
    Some(BlobReader {
        total_size,
        kv: source,
        sha256: sha256.to_owned(),
        source: match stored {
            StoredBlob::Chunked(header) => Source::Chunks(Arc::new(header)),
            StoredBlob::Inline(bytes) => Source::Inline(bytes),
        },
        pos,
        end,
        lost_at: None,
        prefetch: None,
    })
}

/// One step of a blob read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobRead {
    /// The next bytes of the requested range, verified.
    Data(Bytes),
    /// The whole range has been delivered.
    End,
    /// The cache lost the blob at absolute offset `at`: every byte before it was delivered
    /// and correct; the caller finishes from the datastore. Repeated on every later call.
    Lost { at: u64 },
}

/// Where a reader's bytes come from.
enum Source {
    /// Chunk keys, fetched one by one (shared so a fetch needs no copy of the checksums).
    Chunks(Arc<BlobHeader>),
    /// Already here: an inline blob, verified when it was opened.
    Inline(Bytes),
}

/// A streaming, verified read of one cached blob (or a range of it).
pub struct BlobReader {
    /// Size of the whole blob, whatever range is being read.
    pub total_size: u64,
    kv: Kv,
    sha256: String,
    /// Where the bytes are.
    source: Source,
    /// Next absolute offset to deliver.
    pos: u64,
    /// One past the last offset to deliver.
    end: u64,
    lost_at: Option<u64>,
    /// The next chunk, already requested while the caller sends the current one.
    prefetch: Option<(u64, JoinHandle<Option<Bytes>>)>,
}

impl BlobReader {
    /// The absolute range this reader delivers, inclusive start, exclusive end.
    pub fn range(&self) -> (u64, u64) {
        (self.pos, self.end)
    }

    /// All the bytes still to deliver, when they are in hand already (an inline blob,
    /// verified when it was opened), counted as served like [`BlobReader::next`] counts
    /// them; the reader is at its end afterwards. None for a chunked blob (its bytes are
    /// still to fetch: read them with `next`). Lets a caller answer a small download with
    /// the bytes instead of a stream.
    pub fn take_ready(&mut self) -> Option<Bytes> {
        match &self.source {
            Source::Inline(bytes) if self.lost_at.is_none() && self.pos < self.end => {
                // `open_blob` checked the range against the inline length.
                let ready = bytes.slice(self.pos as usize..self.end as usize);
                self.pos = self.end;
                metrics::bytes_served(self.kv.kind(), ready.len());
                Some(ready)
            }
            _ => None,
        }
    }

    pub async fn next(&mut self) -> BlobRead {
        if let Some(at) = self.lost_at {
            return BlobRead::Lost { at };
        }
        if self.pos >= self.end {
            return BlobRead::End;
        }
        let (chunk_start, bytes) = match &self.source {
            Source::Inline(bytes) => (0, bytes.clone()),
            Source::Chunks(header) => {
                let header = Arc::clone(header);
                match self.next_chunk(&header).await {
                    Some(found) => found,
                    None => return self.lose(),
                }
            }
        };
        let chunk_len = bytes.len() as u64;
        let from = (self.pos - chunk_start) as usize;
        let to = (self.end.min(chunk_start + chunk_len) - chunk_start) as usize;
        self.pos = chunk_start + to as u64;
        metrics::bytes_served(self.kv.kind(), to - from);
        BlobRead::Data(bytes.slice(from..to))
    }

    /// Fetches and verifies the chunk holding `pos`: its start offset and bytes, or None
    /// if the cache lost or damaged it.
    async fn next_chunk(&mut self, header: &BlobHeader) -> Option<(u64, Bytes)> {
        let index = self.pos / u64::from(header.chunk_size);
        let (chunk_start, chunk_len) = header.chunk_span(index);
        let fetched = match self.prefetch.take() {
            Some((i, handle)) if i == index => {
                self.start_prefetch(header, index + 1);
                // Prefetched from a remote backend: nothing known, hashed below.
                handle
                    .await
                    .ok()
                    .flatten()
                    .map(|bytes| (bytes, Checked::default()))
            }
            stale => {
                if let Some((_, handle)) = stale {
                    handle.abort();
                }
                self.start_prefetch(header, index + 1);
                self.kv
                    .get_checked(&blob_chunk_key(&self.sha256, index))
                    .await
            }
        };
        let verified = fetched
            .filter(|(bytes, checked)| {
                bytes.len() as u64 == chunk_len
                    && checked.verify(bytes, header.checksums[index as usize])
            })
            .map(|(bytes, _)| bytes);
        verified.map(|bytes| (chunk_start, bytes))
    }

    fn lose(&mut self) -> BlobRead {
        let at = self.pos;
        tracing::debug!(sha256 = %self.sha256, at, "cached blob lost a chunk");
        metrics::request(self.kv.backend(), "blob_read", "lost");
        self.lost_at = Some(at);
        if let Some((_, handle)) = self.prefetch.take() {
            handle.abort();
        }
        BlobRead::Lost { at }
    }

    /// Requests chunk `index` in the background if the range needs it and the backend is
    /// remote; keeps at most this one chunk ahead.
    fn start_prefetch(&mut self, header: &BlobHeader, index: u64) {
        let (start, _) = header.chunk_span(index);
        if index >= header.chunk_count() || start >= self.end || !self.kv.prefetch_pays() {
            return;
        }
        let kv = self.kv.clone();
        let key = blob_chunk_key(&self.sha256, index);
        let handle = tokio::spawn(async move { kv.get(&key).await });
        self.prefetch = Some((index, handle));
    }
}

impl Drop for BlobReader {
    fn drop(&mut self) {
        // A reader dropped mid-stream (client went away) must not leave a fetch running.
        if let Some((_, handle)) = self.prefetch.take() {
            handle.abort();
        }
    }
}
