//! `LogCapture`: a process-wide tracing subscriber that keeps every formatted line in memory,
//! for tests that assert what was logged (e.g. "exactly one down line for this shard").
//!
//! Global rather than `tracing::subscriber::with_default`, because shard actors log from
//! their own arbiter threads, which a thread-local default would not see. The tests of one
//! binary share it, so each test filters the lines by a name only it uses (its shard name).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::fmt::MakeWriter;

/// Bytes kept at most; a test process that logs more is doing something else than what
/// these assertions are for, and [`LogCapture::lines_containing`] then fails loudly.
pub const MAX_CAPTURED_BYTES: usize = 64 * 1024 * 1024;

/// The captured output; see the module docs.
#[derive(Clone)]
pub struct LogCapture {
    buf: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    overflowed: bool,
}

static CAPTURE: OnceLock<LogCapture> = OnceLock::new();

/// Installs the capturing subscriber (INFO and above, no colours) on first use and returns
/// it. Panics if another global subscriber was installed first: the test could not see the
/// lines it asserts on.
pub fn capture_logs() -> LogCapture {
    CAPTURE
        .get_or_init(|| {
            let capture = LogCapture {
                buf: Arc::new(Mutex::new(Captured::default())),
            };
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_ansi(false)
                .with_writer(capture.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("another global tracing subscriber was installed first");
            capture
        })
        .clone()
}

impl LogCapture {
    /// Every captured line that has `field` (e.g. `shard=a`) as one whitespace-separated
    /// token, so `shard=a` does not also pick `shard=ab`, and contains all of `needles`.
    pub fn lines_with(&self, field: &str, needles: &[&str]) -> Vec<String> {
        self.lines_containing(needles)
            .into_iter()
            .filter(|line| line.split_whitespace().any(|token| token == field))
            .collect()
    }

    /// Every captured line that contains all of `needles`.
    pub fn lines_containing(&self, needles: &[&str]) -> Vec<String> {
        let captured = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        assert!(
            !captured.overflowed,
            "more than {MAX_CAPTURED_BYTES} bytes logged; lines were dropped"
        );
        String::from_utf8_lossy(&captured.bytes)
            .lines()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .map(str::to_owned)
            .collect()
    }
}

impl Write for LogCapture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut captured = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        if captured.bytes.len() + data.len() > MAX_CAPTURED_BYTES {
            captured.overflowed = true;
        } else {
            captured.bytes.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> LogCapture {
        self.clone()
    }
}
