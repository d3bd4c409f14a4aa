//! Leases: short exclusive claims (`SET NX PX` with a random token) so that only one media
//! repo fetches a given remote file at a time while the others wait for its record.

use bytes::Bytes;

/// A lease this process took with [`crate::Cache::try_lease`]. Give it back with
/// [`crate::Cache::release`]; if we crash, it expires on its own after its TTL.
#[derive(Debug)]
pub struct Lease {
    pub(crate) key: String,
    /// Random per lease, so a release never deletes a lease someone else took after ours
    /// expired.
    pub(crate) token: Bytes,
    pub(crate) exclusive: bool,
}

impl Lease {
    pub(crate) fn new(key: &str, exclusive: bool) -> Lease {
        let token = format!("{:032x}", rand::random::<u128>());
        Lease {
            key: key.to_owned(),
            token: Bytes::from(token),
            exclusive,
        }
    }

    /// The key this lease is on.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// False when the cache could not be asked (no cache, or its shard is down): the caller
    /// goes ahead anyway — a duplicate fetch is better than a failed or stalled request.
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }
}
