//! The blob header (`mr1:blob:{sha}:m`): what a reader must know before trusting any chunk.
//!
//! Compact binary, little-endian, fixed layout:
//!
//! ```text
//! offset  size      field
//! 0       4         magic "MRBH"
//! 4       1         format version (1)
//! 5       8         total size in bytes (u64)
//! 13      4         chunk size in bytes (u32, > 0)
//! 17      4         chunk count (u32) = ceil(total / chunk size)
//! 21      8 * n     xxh64 (seed 0) of each chunk, in order
//! 21+8n   8         xxh64 (seed 0) of all preceding header bytes
//! ```
//!
//! Anything that does not decode exactly (wrong length, magic, version, count, or self
//! checksum) is treated as a miss: a damaged header must never make us serve bytes.

use bytes::{BufMut, Bytes, BytesMut};
use xxhash_rust::xxh64::xxh64;

const MAGIC: &[u8; 4] = b"MRBH";
const VERSION: u8 = 1;
const FIXED_LEN: usize = 4 + 1 + 8 + 4 + 4;
/// Refuse headers claiming more chunks than this (a 64 GiB blob at 1 KiB chunks): bounds the
/// allocation a corrupt or hostile header could cause.
const MAX_CHUNKS: u32 = 1 << 26;

/// Checksum used for chunks and the header itself.
pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    xxh64(bytes, 0)
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
        buf.put_u8(VERSION);
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
        if bytes.len() < FIXED_LEN + 8 || &bytes[..4] != MAGIC || bytes[4] != VERSION {
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
}
