//! How a `SET` is put into words: the command built once, at its final size, so a large
//! value is copied into it exactly once (redis-rs copies it twice more on its way to the
//! socket, out of our reach).

use std::time::Duration;

/// Room for the argument bytes of `SET key value [NX] PX ms` besides key and value: the
/// command and option names plus the digits of any `u64`.
const SET_ARGS_OVERHEAD: usize = "SET".len() + "NX".len() + "PX".len() + 20;

/// `SET key value [NX] [PX ms]`, its argument buffer sized once up front: growing it while
/// appending after a large value would reallocate (and copy) that value a second time.
pub(crate) fn set_command(key: &str, value: &[u8], ttl: Option<Duration>, nx: bool) -> redis::Cmd {
    let mut cmd = redis::Cmd::with_capacity(6, key.len() + value.len() + SET_ARGS_OVERHEAD);
    cmd.arg("SET").arg(key).arg(value);
    if nx {
        cmd.arg("NX");
    }
    if let Some(ttl) = ttl {
        cmd.arg("PX").arg(px(ttl));
    }
    cmd
}

/// Milliseconds for `PX`, at least 1 (Redis rejects 0).
fn px(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_commands_carry_every_argument_in_order() {
        let value = vec![7u8; 300 * 1024];
        let packed =
            set_command("k", &value, Some(Duration::from_millis(1500)), false).get_packed_command();
        let mut expected = b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$307200\r\n".to_vec();
        expected.extend_from_slice(&value);
        expected.extend_from_slice(b"\r\n$2\r\nPX\r\n$4\r\n1500\r\n");
        assert_eq!(packed, expected);

        let packed = set_command("lease", b"me", Some(Duration::MAX), true).get_packed_command();
        let expected = format!(
            "*6\r\n$3\r\nSET\r\n$5\r\nlease\r\n$2\r\nme\r\n$2\r\nNX\r\n$2\r\nPX\r\n$20\r\n{}\r\n",
            u64::MAX
        );
        assert_eq!(packed, expected.as_bytes());

        let packed = set_command("k", b"v", None, false).get_packed_command();
        assert_eq!(packed, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
    }

    #[test]
    fn px_is_never_zero() {
        assert_eq!(px(Duration::ZERO), 1);
        assert_eq!(px(Duration::from_secs(2)), 2000);
    }
}
