//! Free TCP ports for the processes a test starts.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

/// The machine's own Redis listens on 6379; a test must never hand it out (or talk to
/// it). 8000 and 9000 are the embedded default config's public and operators' ports.
const RESERVED_PORTS: &[u16] = &[6379, 8000, 9000];

/// How many times to ask the OS before giving up; the OS hands out a fresh ephemeral
/// port each time, so only a pathological machine runs out.
const MAX_ATTEMPTS: usize = 200;

/// Ports already given to a test of this process. Two tests running in parallel threads
/// each bind `:0`, drop the listener and get their port back; without this set the OS
/// could hand the same just-released port to both before either server binds it.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A port on 127.0.0.1 that was free a moment ago and that this process has not handed
/// out before. Port 6379 (the machine's Redis), 8000 and 9000 (the embedded default
/// config's ports) are never returned.
///
/// Panics if no port can be found: a test cannot do anything useful without one.
pub fn free_port() -> u16 {
    for _ in 0..MAX_ATTEMPTS {
        let port = match TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()) {
            Ok(addr) => addr.port(),
            Err(e) => panic!("cannot bind 127.0.0.1:0 to find a free port: {e}"),
        };
        if RESERVED_PORTS.contains(&port) {
            continue;
        }
        let mut seen = handed_out().lock().unwrap_or_else(|p| p.into_inner());
        if seen.insert(port) {
            return port;
        }
    }
    panic!("no free port found on 127.0.0.1 after {MAX_ATTEMPTS} attempts");
}

/// True if nothing listens on 127.0.0.1:`port` right now (we can bind it ourselves).
pub(crate) fn port_is_bindable(port: u16) -> std::io::Result<()> {
    TcpListener::bind(("127.0.0.1", port)).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_unique_and_never_reserved() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        assert!(ports.iter().all(|p| !RESERVED_PORTS.contains(p)));
        for p in ports {
            port_is_bindable(p).unwrap();
        }
    }
}
