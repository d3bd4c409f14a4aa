//! Tracing subscriber setup, with a log filter that a config reload can change in place,
//! and without the ERROR lines actix-http writes for what a client did wrong.

use std::fmt::Debug;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

/// Where actix-http's HTTP/1 dispatcher logs.
const ACTIX_H1_TARGET: &str = "actix_http::h1::dispatcher";

/// How the dispatcher's connection-ending message begins. It logs it at ERROR after a
/// request it could not parse (answered 400 by actix-http itself), a request head over its
/// buffer (431), or a client that reset the connection; its real internal errors are
/// logged on their own lines first. So the line only ever repeats something a client did
/// or something already logged, and a client must not be able to write ERROR lines.
const ACTIX_STREAM_ERROR_PREFIX: &str = "stream error";

/// Changes the active log filter; kept by the reload path. Not an `ArcSwap` like the other
/// reloadable values: the filter lives inside the subscriber, and tracing-subscriber's
/// `reload` layer is the one way to replace it there.
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
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(NoClientErrors),
        )
        .try_init();
    LogLevelHandle(handle)
}

/// Drops actix-http's "stream error" ERROR event (see `ACTIX_STREAM_ERROR_PREFIX`); every
/// other event, of actix-http too, passes.
struct NoClientErrors;

impl<S> Filter<S> for NoClientErrors {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        !is_client_stream_error(event)
    }
}

fn is_client_stream_error(event: &Event<'_>) -> bool {
    let meta = event.metadata();
    if *meta.level() != Level::ERROR || meta.target() != ACTIX_H1_TARGET {
        return false;
    }
    let mut message = MessagePrefix(false);
    event.record(&mut message);
    message.0
}

/// Whether the event's `message` starts with `ACTIX_STREAM_ERROR_PREFIX`.
struct MessagePrefix(bool);

impl Visit for MessagePrefix {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}").starts_with(ACTIX_STREAM_ERROR_PREFIX);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Collects what the fmt layer writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn only_actix_stream_errors_are_dropped() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(
            fmt::layer()
                .with_writer(captured.clone())
                .with_ansi(false)
                .with_filter(NoClientErrors),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "actix_http::h1::dispatcher", "stream error: request parse error: invalid Header provided");
            tracing::error!(target: "actix_http::h1::dispatcher", "Response payload stream error: kept");
            tracing::error!(target: "mr_web::media", "stream error: ours, kept");
            tracing::warn!(target: "actix_http::h1::dispatcher", "stream error: not ERROR, kept");
        });
        let text = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
        assert!(!text.contains("invalid Header"), "{text}");
        assert_eq!(text.matches("kept").count(), 3, "{text}");
    }
}
