//! Errors a cache call can return to its caller.
//!
//! Backend failures (a shard down, a full mailbox, an evicted key) are never errors: the
//! cache only holds copies, so those become misses. What is left is the caller's own input
//! going wrong while we read it.

/// An error from [`crate::Cache::put_blob`]: the bytes handed to us could not be read as promised.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The reader failed; nothing was published (the header is written last).
    #[error("reading the blob to cache failed: {0}")]
    Read(#[from] std::io::Error),
    /// The reader produced a different number of bytes than the size the caller announced.
    #[error("blob size mismatch: announced {expected} bytes, reader produced {actual}{more}", more = if *.more { " or more" } else { "" })]
    SizeMismatch {
        expected: u64,
        actual: u64,
        /// True when the reader went past `expected` (we stop reading at expected + 1).
        more: bool,
    },
}

pub type Result<T> = std::result::Result<T, CacheError>;
