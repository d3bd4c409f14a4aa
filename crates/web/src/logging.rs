//! Tracing subscriber setup, with a log filter that a config reload can change in place,
//! and without the ERROR lines actix-http writes for what a client did wrong.
//!
//! Every request opens a span (`route_metrics.rs`), whose fields the fmt layer formats when
//! the span is made: that is on every download's path, so the formatting is done by
//! [`PlainFields`] (the same text as tracing-subscriber's default, without its colour
//! machinery when the output has no colours), and the client-error filter is a layer every
//! event passes once ([`NoClientErrors`]), not a per-layer filter the registry would track
//! on every span's creation, entry, exit and close.

use std::fmt::{self as stdfmt, Debug};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Level};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultFields, DefaultVisitor, Writer};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::layer::{Context, SubscriberExt};
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
        .with(NoClientErrors)
        .with(
            fmt::layer()
                .fmt_fields(PlainFields)
                .with_target(true)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .try_init();
    LogLevelHandle(handle)
}

/// Drops actix-http's "stream error" ERROR event (see `ACTIX_STREAM_ERROR_PREFIX`); every
/// other event, of actix-http too, passes. A layer whose `event_enabled` the subscriber asks
/// before any layer sees the event, so it filters for all of them.
struct NoClientErrors;

impl<S: tracing::Subscriber> Layer<S> for NoClientErrors {
    fn event_enabled(&self, event: &Event<'_>, _cx: Context<'_, S>) -> bool {
        !is_client_stream_error(event)
    }
}

/// Formats fields exactly as tracing-subscriber's `DefaultFields` does (`name=value`,
/// space-separated; the message bare; strings quoted), writing plain fields straight to
/// the output when it has no colours. `DefaultFields` wraps every name and `=` in a style
/// even when styles are off, which made formatting a request span's two fields cost about
/// 2,900 instructions. Messages (sanitised of terminal escapes), errors and `r#` names go
/// to `DefaultVisitor` itself.
pub struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> stdfmt::Result {
        if writer.has_ansi_escapes() {
            return DefaultFields::new().format_fields(writer, fields);
        }
        let mut writer = writer;
        let mut batched = Batched {
            out: &mut writer,
            buf: [0; BATCH_BYTES],
            len: 0,
        };
        let result = {
            let mut visitor = PlainVisitor {
                writer: Writer::new(&mut batched),
                is_empty: true,
                result: Ok(()),
            };
            fields.record(&mut visitor);
            visitor.result
        };
        result.and_then(|()| batched.flush())
    }
}

/// Bytes of formatted fields gathered on the stack before they go to the output.
const BATCH_BYTES: usize = 256;

/// Gathers small writes and passes them on in one: a span's fields are formatted into a
/// new, empty `String`, which grew in five steps for a request span's two fields, one
/// reallocation per step.
struct Batched<'a, 'w> {
    out: &'a mut Writer<'w>,
    buf: [u8; BATCH_BYTES],
    len: usize,
}

impl Batched<'_, '_> {
    fn flush(&mut self) -> stdfmt::Result {
        let gathered = std::str::from_utf8(&self.buf[..self.len]).map_err(|_| stdfmt::Error)?;
        self.out.write_str(gathered)?;
        self.len = 0;
        Ok(())
    }
}

impl stdfmt::Write for Batched<'_, '_> {
    fn write_str(&mut self, text: &str) -> stdfmt::Result {
        if self.len + text.len() > BATCH_BYTES {
            self.flush()?;
            if text.len() > BATCH_BYTES {
                return self.out.write_str(text);
            }
        }
        // Whole `str`s only, so the gathered bytes are always valid UTF-8.
        self.buf[self.len..self.len + text.len()].copy_from_slice(text.as_bytes());
        self.len += text.len();
        Ok(())
    }
}

struct PlainVisitor<'writer> {
    writer: Writer<'writer>,
    /// Nothing written yet: no separating space before the next field.
    is_empty: bool,
    result: stdfmt::Result,
}

impl PlainVisitor<'_> {
    /// Fields `DefaultVisitor` treats specially; it formats them itself.
    fn is_special(field: &Field) -> bool {
        let name = field.name();
        name == "message" || name.starts_with("r#")
    }

    /// `log.*` fields are the `log` crate's metadata, already shown: never written.
    fn is_log_metadata(field: &Field) -> bool {
        field.name().starts_with("log.")
    }

    fn delegate(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        self.is_empty = false;
    }

    /// The separating space and `name=`.
    fn start(&mut self, field: &Field) -> stdfmt::Result {
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.writer.write_str(" ")?;
        }
        self.writer.write_str(field.name())?;
        self.writer.write_str("=")
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() || Self::is_log_metadata(field) {
            return;
        }
        if Self::is_special(field) {
            return self.delegate(|v| v.record_str(field, value));
        }
        self.result = self.start(field).and_then(|()| {
            // Quoted like `{:?}`; text that `{:?}` would escape goes through it.
            let plain = value
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ');
            if plain {
                self.writer.write_str("\"")?;
                self.writer.write_str(value)?;
                self.writer.write_str("\"")
            } else {
                write!(self.writer, "{value:?}")
            }
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_err() || Self::is_log_metadata(field) {
            return;
        }
        self.delegate(|v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if self.result.is_err() || Self::is_log_metadata(field) {
            return;
        }
        if Self::is_special(field) {
            return self.delegate(|v| v.record_debug(field, value));
        }
        self.result = self
            .start(field)
            .and_then(|()| write!(self.writer, "{value:?}"));
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
        let subscriber = tracing_subscriber::registry().with(NoClientErrors).with(
            fmt::layer()
                .fmt_fields(PlainFields)
                .with_writer(captured.clone())
                .with_ansi(false),
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

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "outer failed")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// What the fmt layer writes for spans and events of every kind of field, with
    /// `fields` formatting them.
    fn log_text<N>(fields: N) -> String
    where
        N: for<'w> fmt::FormatFields<'w> + Send + Sync + 'static,
    {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(
            fmt::layer()
                .fmt_fields(fields)
                .without_time()
                .with_writer(captured.clone())
                .with_ansi(false),
        );
        tracing::subscriber::with_default(subscriber, || {
            let route = "/_matrix/client/v1/media/download/{server}/{media_id}";
            let span = tracing::info_span!("request", method = "GET", route = %route);
            let _entered = span.enter();
            let inner = tracing::info_span!("inner", r#type = "thumbnail", n = 3_i64, ok = true);
            let _inner = inner.enter();
            tracing::info!(sha256 = %"ab".repeat(32), size = 4096_u64, "stored \x1b[31m object");
            tracing::warn!(
                quoted = "say \"hi\"",
                slash = "a\\b",
                tab = "a\tb",
                unicode = "caf\u{e9}",
                empty = "",
                debugged = ?vec![1, 2],
                long = "l".repeat(300).as_str(),
                longer = %"m".repeat(600),
                "odd values"
            );
            let err = Outer(std::io::Error::other("disk gone"));
            tracing::error!(error = &err as &(dyn std::error::Error + 'static), "failed");
            tracing::info!(message = "explicit message", extra = 1.5_f64);
        });
        let text = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
        text
    }

    #[test]
    fn plain_fields_write_what_the_default_fields_write() {
        let plain = log_text(PlainFields);
        let default = log_text(DefaultFields::new());
        assert_eq!(plain, default);
        for expected in [
            r#"request{method="GET" route=/_matrix/client/v1/media/download/{server}/{media_id}}"#,
            "inner{type=\"thumbnail\" n=3 ok=true}",
            r#"quoted="say \"hi\"""#,
            "failed error=outer failed error.sources=[disk gone]",
        ] {
            assert!(plain.contains(expected), "{expected} in {plain}");
        }
    }
}
