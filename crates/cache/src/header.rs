//! The blob header (`mr1:blob:{sha}:m`): what a reader must know before trusting any byte.
//!
//! Compact binary, little-endian, fixed layout, in one of two forms told apart by the
//! version byte. **Chunked** (version 3): the bytes live in chunk keys `mr1:blob:{sha}:N`,
//! written before this header.
//!
//! ```text
//! offset  size      field
//! 0       4         magic "MRBH"
//! 4       1         format version (3 = chunked)
//! 5       8         total size in bytes (u64)
//! 13      4         chunk size in bytes (u32, > 0)
//! 17      4         chunk count (u32) = ceil(total / chunk size)
//! 21      8 * n     XXH3-64 (seed 0) of each chunk, in order
//! 21+8n   8         XXH3-64 (seed 0) of all preceding header bytes
//! ```
//!
//! **Inline** (version 4): a blob of at most [`crate::INLINE_MAX_BYTES`] (and at most one
//! chunk) travels inside its header value, so writing it is one `SET` and reading it one
//! `GET`; no chunk key exists. The bytes are checked exactly like a chunk's.
//!
//! ```text
//! offset  size      field
//! 0       4         magic "MRBH"
//! 4       1         format version (4 = inline)
//! 5       8         total size in bytes (u64) = length of the bytes
//! 13      8         XXH3-64 (seed 0) of the bytes (the one chunk's checksum)
//! 21      8         XXH3-64 (seed 0) of header bytes 0..21
//! 29      total     the bytes
//! ```
//!
//! Anything that does not decode exactly (wrong length, magic, unknown version, count,
//! self checksum, or inline bytes that fail their checksum) is treated as a miss: a damaged
//! header must never make us serve bytes. Versions 1 (chunked) and 2 (inline) were the same
//! layouts checksummed with XXH64; XXH3 hashes a 64 KiB value 3–5 times faster on this
//! project's machines (SSE2, no build flags), and every read of a Redis blob hashes all of
//! its bytes. Blobs of those versions, or of any version a reader does not know, are
//! misses: the reader fetches the bytes from its datastore and writes them again in its own
//! version, so repos of two versions sharing shards never misread each other.

use bytes::{BufMut, Bytes, BytesMut};
use xxhash_rust::xxh3::xxh3_64;

use crate::kv::Checked;

const MAGIC: &[u8; 4] = b"MRBH";
/// Version byte of the chunked form.
const VERSION_CHUNKED: u8 = 3;
/// Version byte of the inline form.
const VERSION_INLINE: u8 = 4;
const FIXED_LEN: usize = 4 + 1 + 8 + 4 + 4;
/// Bytes of the inline form before the blob's own bytes (fixed fields + both checksums).
pub(crate) const INLINE_HEADER_LEN: usize = 4 + 1 + 8 + 8 + 8;
/// Refuse headers claiming more chunks than this (a 64 GiB blob at 1 KiB chunks): bounds the
/// allocation a corrupt or hostile header could cause.
const MAX_CHUNKS: u32 = 1 << 26;

/// Checksum used for chunks and the header itself (XXH3-64, seed 0).
pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// What a header value holds, once decoded and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoredBlob {
    /// The bytes are in chunk keys, described by this header.
    Chunked(BlobHeader),
    /// The whole blob, already checked against its checksum.
    Inline(Bytes),
}

impl StoredBlob {
    /// Decodes a header value of either form; None for anything damaged or unknown.
    pub(crate) fn decode(value: &Bytes) -> Option<StoredBlob> {
        Self::decode_checked(value, &Checked::default())
    }

    /// [`StoredBlob::decode`] of a value whose inline bytes may be known to match their
    /// checksum already (`checked`, see `kv::Checked`): then they are not hashed again, and
    /// when they are hashed and match, `checked` remembers it. Everything else (the fixed
    /// fields, the header's own checksum) is checked every time.
    pub(crate) fn decode_checked(value: &Bytes, checked: &Checked) -> Option<StoredBlob> {
        match value.get(4) {
            Some(&VERSION_INLINE) => decode_inline(value, checked).map(StoredBlob::Inline),
            _ => BlobHeader::decode(value).map(StoredBlob::Chunked),
        }
    }

    /// Number of chunk keys this blob uses (0 when inline).
    pub(crate) fn chunk_count(&self) -> u64 {
        match self {
            StoredBlob::Chunked(header) => header.chunk_count(),
            StoredBlob::Inline(_) => 0,
        }
    }
}

/// Prepares an inline value for a blob of `len` bytes: the header's space is reserved and
/// zeroed, the caller appends exactly `len` bytes, then [`seal_inline`] fills the header in.
/// The buffer has exactly the final capacity (the memory backend weighs values by length).
pub(crate) fn start_inline(len: usize) -> BytesMut {
    let mut buf = BytesMut::with_capacity(INLINE_HEADER_LEN + len);
    buf.put_bytes(0, INLINE_HEADER_LEN);
    buf
}

/// Writes the inline header in front of the bytes appended after [`start_inline`].
pub(crate) fn seal_inline(buf: &mut BytesMut) {
    let total = (buf.len() - INLINE_HEADER_LEN) as u64;
    let data_sum = checksum(&buf[INLINE_HEADER_LEN..]);
    let mut head = [0u8; INLINE_HEADER_LEN];
    head[..4].copy_from_slice(MAGIC);
    head[4] = VERSION_INLINE;
    head[5..13].copy_from_slice(&total.to_le_bytes());
    head[13..21].copy_from_slice(&data_sum.to_le_bytes());
    let own = checksum(&head[..21]);
    head[21..29].copy_from_slice(&own.to_le_bytes());
    buf[..INLINE_HEADER_LEN].copy_from_slice(&head);
}

/// The verified bytes of an inline value, sharing its buffer; None if anything is off.
fn decode_inline(value: &Bytes, checked: &Checked) -> Option<Bytes> {
    if value.len() < INLINE_HEADER_LEN || &value[..4] != MAGIC || value[4] != VERSION_INLINE {
        return None;
    }
    let word = |at: usize| value[at..at + 8].try_into().ok().map(u64::from_le_bytes);
    let (total, data_sum, own) = (word(5)?, word(13)?, word(21)?);
    if checksum(&value[..21]) != own
        || u64::try_from(value.len() - INLINE_HEADER_LEN).ok()? != total
    {
        return None;
    }
    let bytes = value.slice(INLINE_HEADER_LEN..);
    checked.verify(&bytes, data_sum).then_some(bytes)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobHeader {
    pub(crate) total_size: u64,
    pub(crate) chunk_size: u32,
    pub(crate) checksums: Vec<u64>,
}

impl BlobHeader {
    pub(crate) fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(FIXED_LEN + 8 * self.checksums.len() + 8);
        buf.put_slice(MAGIC);
        buf.put_u8(VERSION_CHUNKED);
        buf.put_u64_le(self.total_size);
        buf.put_u32_le(self.chunk_size);
        buf.put_u32_le(self.checksums.len() as u32);
        for sum in &self.checksums {
            buf.put_u64_le(*sum);
        }
        let own = checksum(&buf);
        buf.put_u64_le(own);
        buf.freeze()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<BlobHeader> {
        if bytes.len() < FIXED_LEN + 8 || &bytes[..4] != MAGIC || bytes[4] != VERSION_CHUNKED {
            return None;
        }
        let total_size = u64::from_le_bytes(bytes[5..13].try_into().ok()?);
        let chunk_size = u32::from_le_bytes(bytes[13..17].try_into().ok()?);
        let count = u32::from_le_bytes(bytes[17..21].try_into().ok()?);
        if chunk_size == 0
            || count > MAX_CHUNKS
            || total_size.div_ceil(u64::from(chunk_size)) != u64::from(count)
        {
            return None;
        }
        let body_len = FIXED_LEN + 8 * count as usize;
        if bytes.len() != body_len + 8 {
            return None;
        }
        let stored = u64::from_le_bytes(bytes[body_len..].try_into().ok()?);
        if checksum(&bytes[..body_len]) != stored {
            return None;
        }
        let checksums = bytes[FIXED_LEN..body_len]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        Some(BlobHeader {
            total_size,
            chunk_size,
            checksums,
        })
    }

    pub(crate) fn chunk_count(&self) -> u64 {
        self.checksums.len() as u64
    }

    /// Absolute offset and length of chunk `index`.
    pub(crate) fn chunk_span(&self, index: u64) -> (u64, u64) {
        let start = index * u64::from(self.chunk_size);
        let len = u64::from(self.chunk_size).min(self.total_size.saturating_sub(start));
        (start, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BlobHeader {
        BlobHeader {
            total_size: 10,
            chunk_size: 4,
            checksums: vec![1, 2, 3],
        }
    }

    #[test]
    fn round_trip() {
        let h = sample();
        assert_eq!(BlobHeader::decode(&h.encode()), Some(h.clone()));
        assert_eq!(h.chunk_span(2), (8, 2));
        let empty = BlobHeader {
            total_size: 0,
            chunk_size: 4,
            checksums: vec![],
        };
        assert_eq!(BlobHeader::decode(&empty.encode()), Some(empty));
    }

    #[test]
    fn damage_is_rejected() {
        let good = sample().encode();
        for i in 0..good.len() {
            let mut bad = good.to_vec();
            bad[i] ^= 0x40;
            assert_eq!(BlobHeader::decode(&bad), None, "flip at byte {i} accepted");
        }
        assert_eq!(BlobHeader::decode(&good[..good.len() - 1]), None);
        let mut longer = good.to_vec();
        longer.push(0);
        assert_eq!(BlobHeader::decode(&longer), None);
        // Count inconsistent with size, even with a valid self checksum.
        let wrong = BlobHeader {
            total_size: 20,
            chunk_size: 4,
            checksums: vec![1, 2, 3],
        };
        assert_eq!(BlobHeader::decode(&wrong.encode()), None);
    }

    fn inline(bytes: &[u8]) -> Bytes {
        let mut value = start_inline(bytes.len());
        value.extend_from_slice(bytes);
        seal_inline(&mut value);
        value.freeze()
    }

    #[test]
    fn inline_round_trip() {
        for data in [&b""[..], b"x", b"hello inline blob"] {
            let value = inline(data);
            assert_eq!(value.len(), INLINE_HEADER_LEN + data.len());
            assert_eq!(
                StoredBlob::decode(&value),
                Some(StoredBlob::Inline(Bytes::copy_from_slice(data)))
            );
            assert_eq!(StoredBlob::decode(&value).unwrap().chunk_count(), 0);
        }
        // The chunked form still decodes through the same entry point.
        let chunked = sample();
        assert_eq!(
            StoredBlob::decode(&chunked.encode()),
            Some(StoredBlob::Chunked(chunked))
        );
    }

    #[test]
    fn inline_damage_is_rejected() {
        let good = inline(b"some bytes worth keeping");
        for i in 0..good.len() {
            let mut bad = good.to_vec();
            bad[i] ^= 0x40;
            assert_eq!(
                StoredBlob::decode(&Bytes::from(bad)),
                None,
                "flip at byte {i} accepted"
            );
        }
        for cut in 0..good.len() {
            assert_eq!(StoredBlob::decode(&good.slice(..cut)), None, "cut at {cut}");
        }
        let mut longer = good.to_vec();
        longer.push(0);
        assert_eq!(StoredBlob::decode(&Bytes::from(longer)), None);
        // An unknown version is a miss even when everything else is consistent.
        let mut future = good.to_vec();
        future[4] = 5;
        let own = checksum(&future[..21]);
        future[21..29].copy_from_slice(&own.to_le_bytes());
        assert_eq!(StoredBlob::decode(&Bytes::from(future)), None);
    }

    /// A value written by a version that checksummed with XXH64 (format versions 1 and 2):
    /// consistent in itself, yet a miss, never misread.
    #[test]
    fn values_of_the_xxh64_versions_are_misses() {
        use xxhash_rust::xxh64::xxh64;
        let data = b"bytes an older repo wrote";
        let mut old_inline = Vec::new();
        old_inline.extend_from_slice(MAGIC);
        old_inline.push(2);
        old_inline.extend_from_slice(&(data.len() as u64).to_le_bytes());
        old_inline.extend_from_slice(&xxh64(data, 0).to_le_bytes());
        let own = xxh64(&old_inline, 0);
        old_inline.extend_from_slice(&own.to_le_bytes());
        old_inline.extend_from_slice(data);
        assert_eq!(StoredBlob::decode(&Bytes::from(old_inline)), None);

        let mut old_chunked = Vec::new();
        old_chunked.extend_from_slice(MAGIC);
        old_chunked.push(1);
        old_chunked.extend_from_slice(&(data.len() as u64).to_le_bytes());
        old_chunked.extend_from_slice(&(data.len() as u32).to_le_bytes());
        old_chunked.extend_from_slice(&1u32.to_le_bytes());
        old_chunked.extend_from_slice(&xxh64(data, 0).to_le_bytes());
        let own = xxh64(&old_chunked, 0);
        old_chunked.extend_from_slice(&own.to_le_bytes());
        assert_eq!(StoredBlob::decode(&Bytes::from(old_chunked)), None);
    }
}
