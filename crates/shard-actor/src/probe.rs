//! The health probe's exchange: PING and a read of the key-format marker in one pipelined
//! round trip, the marker written back when missing ([`crate::format`] says why). The actor
//! ([`crate::actor`]) runs it through the one command path every health interval and turns
//! its answer into the shard's health.

use redis::aio::ConnectionManager;
use redis::RedisResult;

use crate::command::{is_error_reply, Failure};
use crate::format::{Marker, FORMAT_MARKER_KEY, KEY_FORMAT_VERSION};

/// PING and `GET` of the marker, pipelined; a missing marker is written with `SET .. NX`
/// (never over another version's) and read again if another repo wrote one first. A server
/// that refuses the write (OOM under `noeviction`) leaves the marker missing, which is no
/// reason to stop using the shard: the next health round tries again.
pub(crate) async fn ping_and_check_marker(
    shard: String,
    mut conn: ConnectionManager,
) -> Result<Marker, Failure> {
    let (_pong, value): (String, Option<Vec<u8>>) = redis::pipe()
        .cmd("PING")
        .cmd("GET")
        .arg(FORMAT_MARKER_KEY)
        .query_async(&mut conn)
        .await?;
    let marker = Marker::of(value.as_deref());
    if marker != Marker::Missing {
        return Ok(marker);
    }
    let written: RedisResult<Option<String>> = redis::cmd("SET")
        .arg(FORMAT_MARKER_KEY)
        .arg(KEY_FORMAT_VERSION)
        .arg("NX")
        .query_async(&mut conn)
        .await;
    match written {
        Ok(Some(_)) => {
            tracing::debug!(
                shard,
                version = %KEY_FORMAT_VERSION,
                "wrote the key-format marker"
            );
            Ok(Marker::Ours)
        }
        // Another repo wrote one between our GET and SET: whatever it wrote decides.
        Ok(None) => {
            let value: Option<Vec<u8>> = redis::cmd("GET")
                .arg(FORMAT_MARKER_KEY)
                .query_async(&mut conn)
                .await?;
            Ok(Marker::of(value.as_deref()))
        }
        Err(err) if is_error_reply(&err) => {
            tracing::debug!(shard, %err, "writing the key-format marker was refused");
            Ok(Marker::Missing)
        }
        Err(err) => Err(err.into()),
    }
}
