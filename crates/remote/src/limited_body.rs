//! Reading a response body from another server with a hard cap, so a peer that streams an
//! endless or huge answer (a hostile or broken homeserver) costs at most the cap in memory.
//! Every body media-repo reads from another server into memory goes through here
//! (whoami answers, `.well-known`, and later keys and federation JSON).

use bytes::{Bytes, BytesMut};

/// Why a capped read failed.
#[derive(Debug, thiserror::Error)]
pub enum LimitedBodyError {
    #[error("the answer is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("reading the answer failed: {0}")]
    Read(#[from] reqwest::Error),
    #[error("the answer did not arrive within {after:?}")]
    TimedOut { after: std::time::Duration },
}

/// Reads the whole body if it is at most `limit` bytes; stops reading (and drops the
/// connection) as soon as it is known to be larger.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, LimitedBodyError> {
    if response
        .content_length()
        .is_some_and(|declared| declared > limit as u64)
    {
        return Err(LimitedBodyError::TooLarge { limit });
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(LimitedBodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
