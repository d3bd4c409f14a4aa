//! The shard's usage figures: `INFO memory` and `DBSIZE`, and the parsing of INFO's text.
//! Read by the [`crate::messages::Info`] message and every [`crate::STATS_INTERVAL`] for
//! the gauges, both through the one command path ([`crate::command`]).

use redis::aio::ConnectionManager;

use crate::command::{ok, Command, Failure};
use crate::error::Result;
use crate::messages::ShardInfo;
use crate::metrics;

/// Runs [`fetch`] as `command` and puts the figures into the shard's gauges.
pub(crate) async fn read_usage(command: Command) -> Result<ShardInfo> {
    let shard = command.shard().to_owned();
    let info = command.run(fetch, ok).await?;
    metrics::set_usage(&shard, info.used_memory_bytes, info.keys);
    Ok(info)
}

/// `INFO memory` then `DBSIZE` on `conn`.
async fn fetch(mut conn: ConnectionManager) -> std::result::Result<ShardInfo, Failure> {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await?;
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
    let used_memory_bytes = parse_used_memory(&info)
        .ok_or_else(|| Failure::Protocol("INFO memory has no used_memory field".to_owned()))?;
    Ok(ShardInfo {
        used_memory_bytes,
        keys,
    })
}

/// `used_memory:<n>` from an INFO reply.
fn parse_used_memory(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|line| line.trim_end().strip_prefix("used_memory:"))
        .and_then(|value| value.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_memory_is_read_from_info() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n";
        assert_eq!(parse_used_memory(info), Some(1_048_576));
        assert_eq!(parse_used_memory("# Memory\r\n"), None);
    }
}
