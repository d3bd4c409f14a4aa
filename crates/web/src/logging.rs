//! Tracing subscriber setup, with a log filter that a config reload can change in place.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

/// Changes the active log filter; kept by the reload path.
#[derive(Clone)]
pub struct LogLevelHandle(reload::Handle<EnvFilter, Registry>);

impl LogLevelHandle {
    /// Applies a new filter (`logging.level`); `RUST_LOG`, when set, keeps precedence.
    pub fn set(&self, level: &str) -> Result<(), String> {
        if std::env::var_os("RUST_LOG").is_some() {
            return Ok(());
        }
        let filter = EnvFilter::try_new(level).map_err(|err| err.to_string())?;
        self.0.reload(filter).map_err(|err| err.to_string())
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init(level: &str) -> LogLevelHandle {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|env| EnvFilter::try_new(env).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            fmt::layer()
                .with_target(true)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .try_init();
    LogLevelHandle(handle)
}
