//! Thumbnails of an image upload made while its bytes arrive.
//!
//! A photo's configured thumbnails cost one decode, several times longer than the
//! upload itself. Decoding after the upload is answered makes a client that asks for a
//! thumbnail right away wait for upload + re-read + decode; decoding from the upload's
//! body as it arrives (`mr_thumbnail::thumbnails_each_streaming`) overlaps the decode with
//! the transfer and reads nothing back from the datastore.
//!
//! Only done when it costs nobody a wait: it takes a background worker of the thumbnail
//! pool if one is free at the start of the upload (else the thumbnails are made after the
//! upload, as before), and gives the worker back when the upload's bytes stall for
//! [`IDLE_LIMIT`] or keep coming past [`TIME_LIMIT`]. Nothing is stored from here: the
//! thumbnails wait in memory until the upload's media row is written, and are dropped
//! with the upload if it fails (`Thumbnailer::pregenerate` stores them).

use std::io::{self, Read};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use prometheus::{register_int_counter_vec, IntCounterVec};
use tokio::sync::mpsc;
use tracing::debug;

use super::thumbnail::{configured_sizes, render_request, Asked};
use crate::state::AppState;

/// Longest pause in the upload's bytes the decode waits through; longer, it gives its
/// worker back and the thumbnails are made after the upload.
pub const IDLE_LIMIT: Duration = Duration::from_secs(1);
/// Longest an upload may take for its thumbnails to be made as it arrives.
pub const TIME_LIMIT: Duration = Duration::from_secs(10);

static EARLY_UPLOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "media_repo_thumbnail_early_uploads_total",
        "Image uploads by how their configured thumbnails were made: outcome=made (decoded \
         as the upload arrived: a JPEG or PNG), made_after_end (from the upload's bytes in \
         memory once all were in: GIF, WebP, a header past the first 4 KiB...) and \
         fell_back (the decode gave up or failed: bytes stalled, not decodable...; made from \
         the datastore after) count stored uploads; busy counts uploads that found no \
         background worker free when they began (counted then, stored or not; their \
         thumbnails are made from the datastore after)",
        &["outcome"]
    )
    .expect("metric registered once")
});

/// Registers the metric with every outcome at zero.
pub(super) fn register_metrics() {
    for outcome in ["made", "made_after_end", "fell_back", "busy"] {
        EARLY_UPLOADS.with_label_values(&[outcome]);
    }
}

/// Asks whether anyone waits for the thumbnail of a size (by index in the sizes).
type WaitedFor = Box<dyn Fn(usize) -> bool + Send + Sync>;

/// What the upload hands the decoding thread.
enum Piece {
    Chunk(Bytes),
    /// The body is complete.
    End,
}

/// The configured thumbnails of one upload, being made from its body as it arrives.
pub struct EarlyThumbnails {
    sizes: Vec<Asked>,
    feed: Feed,
    waited_for: Arc<OnceLock<WaitedFor>>,
    made: mpsc::UnboundedReceiver<(usize, mr_thumbnail::Thumbnail)>,
    done: tokio::task::JoinHandle<Result<mr_thumbnail::Decoded, String>>,
}

impl EarlyThumbnails {
    /// Starts making the configured thumbnails of an upload said to be `content_type`
    /// (and `declared_bytes` long, when the client said), if it may be thumbnailed and a
    /// background worker is free.
    pub fn start(
        state: &AppState,
        content_type: &str,
        declared_bytes: Option<u64>,
    ) -> Option<EarlyThumbnails> {
        let config = state.config();
        let thumbnails = &config.thumbnails;
        if !thumbnails.enabled
            || !content_type.starts_with("image/")
            || declared_bytes.is_some_and(|n| n > thumbnails.max_source_bytes)
        {
            return None;
        }
        let sizes = configured_sizes(&config);
        if sizes.is_empty() {
            return None;
        }
        let Some(worker) = state.thumbnails.try_background_worker() else {
            EARLY_UPLOADS.with_label_values(&["busy"]).inc();
            return None;
        };
        let limits = mr_thumbnail::Limits {
            max_source_bytes: thumbnails.max_source_bytes,
            max_pixels: thumbnails.max_pixels,
        };
        let requests: Vec<mr_thumbnail::Request> = sizes
            .iter()
            .map(|a| render_request(a.width, a.height, *a))
            .collect();
        let (pieces, received) = std_mpsc::channel();
        let (made_tx, made) = mpsc::unbounded_channel();
        let waited_for: Arc<OnceLock<WaitedFor>> = Arc::new(OnceLock::new());
        let asks = waited_for.clone();
        let done = tokio::task::spawn_blocking(move || {
            let _worker = worker;
            let body = BodyReader {
                pieces: received,
                current: Bytes::new(),
                ended: false,
                deadline: Instant::now() + TIME_LIMIT,
            };
            let waited_for = |i: usize| asks.get().is_some_and(|f| f(i));
            mr_thumbnail::thumbnails_each_streaming(body, &requests, &limits, waited_for, |i, t| {
                // Nobody to hand it to: the upload failed; the rest is dropped with it.
                let _ = made_tx.send((i, t));
            })
            .map_err(|e| e.to_string())
        });
        Some(EarlyThumbnails {
            sizes,
            feed: Feed {
                pieces: Some(pieces),
                fed_bytes: 0,
                max_bytes: limits.max_source_bytes,
            },
            waited_for,
            made,
            done,
        })
    }

    /// The sizes being made, in the order [`EarlyThumbnails::next`] indexes them.
    pub fn sizes(&self) -> &[Asked] {
        &self.sizes
    }

    /// Hands a chunk of the body to the decode (never waits: the chunk is shared, not
    /// copied, and the decode may have given up already). A body past the thumbnail
    /// limit ends the decode.
    pub fn feed(&mut self, chunk: &Bytes) {
        self.feed.chunk(chunk);
    }

    /// Tells the decode the body is complete. Without it, a dropped upload is a failed one.
    pub fn body_complete(&self) {
        self.feed.end();
    }

    /// Tells the decode how to learn whether someone waits for a size (made next).
    pub fn set_waited_for(&self, waited_for: impl Fn(usize) -> bool + Send + Sync + 'static) {
        let _ = self.waited_for.set(Box::new(waited_for));
    }

    /// The next thumbnail made, with the index of its size; `None` once none will come.
    pub async fn next(&mut self) -> Option<(usize, mr_thumbnail::Thumbnail)> {
        self.made.recv().await
    }

    /// How the decode ended: an error (the bytes stalled, not an image, …) means the sizes
    /// not handed over by [`EarlyThumbnails::next`] were not made.
    pub async fn finish(self) -> Result<(), String> {
        let result = match self.done.await {
            Ok(result) => result,
            Err(err) => Err(format!("the decoding task failed: {err}")),
        };
        let outcome = match result {
            Ok(mr_thumbnail::Decoded::AsItArrived) => "made",
            Ok(mr_thumbnail::Decoded::AfterItsEnd) => "made_after_end",
            Err(_) => "fell_back",
        };
        EARLY_UPLOADS.with_label_values(&[outcome]).inc();
        result.map(drop)
    }
}

/// The upload's side of the channel to the decoding thread.
struct Feed {
    /// `None` once the body passed `max_bytes`: the decode then ends at once instead of
    /// the chunks piling up for it.
    pieces: Option<std_mpsc::Sender<Piece>>,
    fed_bytes: u64,
    max_bytes: u64,
}

impl Feed {
    fn chunk(&mut self, chunk: &Bytes) {
        self.fed_bytes += chunk.len() as u64;
        if self.fed_bytes > self.max_bytes {
            self.pieces = None;
        }
        if let Some(pieces) = &self.pieces {
            let _ = pieces.send(Piece::Chunk(chunk.clone()));
        }
    }

    fn end(&self) {
        if let Some(pieces) = &self.pieces {
            let _ = pieces.send(Piece::End);
        }
    }
}

/// The upload's body as the decoder reads it: blocks for the next chunk, up to the limits.
struct BodyReader {
    pieces: std_mpsc::Receiver<Piece>,
    current: Bytes,
    ended: bool,
    deadline: Instant,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            let wait = IDLE_LIMIT.min(self.deadline.saturating_duration_since(Instant::now()));
            match self.pieces.recv_timeout(wait) {
                Ok(Piece::Chunk(chunk)) => self.current = chunk,
                Ok(Piece::End) => self.ended = true,
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    debug!("upload too slow to thumbnail as it arrives; made after it");
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the upload's bytes came too slowly",
                    ));
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upload ended before its last byte",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(deadline: Duration) -> (std_mpsc::Sender<Piece>, BodyReader) {
        let (tx, rx) = std_mpsc::channel();
        let body = BodyReader {
            pieces: rx,
            current: Bytes::new(),
            ended: false,
            deadline: Instant::now() + deadline,
        };
        (tx, body)
    }

    #[test]
    fn the_body_reads_as_sent_and_ends_only_when_complete() {
        let (tx, mut body) = reader(TIME_LIMIT);
        tx.send(Piece::Chunk(Bytes::from_static(b"hello ")))
            .unwrap();
        tx.send(Piece::Chunk(Bytes::from_static(b"world"))).unwrap();
        tx.send(Piece::End).unwrap();
        let mut all = Vec::new();
        body.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"hello world");
        assert_eq!(body.read(&mut [0; 4]).unwrap(), 0, "stays at its end");

        // Dropped without `End`: the upload failed, never a short source.
        let (tx, mut body) = reader(TIME_LIMIT);
        tx.send(Piece::Chunk(Bytes::from_static(b"half"))).unwrap();
        drop(tx);
        let err = body.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_body_past_the_limit_ends_the_decode_at_once() {
        let (tx, mut body) = reader(TIME_LIMIT);
        let mut feed = Feed {
            pieces: Some(tx),
            fed_bytes: 0,
            max_bytes: 10,
        };
        feed.chunk(&Bytes::from_static(b"0123456789"));
        let mut buf = [0; 16];
        assert_eq!(body.read(&mut buf).unwrap(), 10);
        feed.chunk(&Bytes::from_static(b"x"));
        feed.end();
        let started = Instant::now();
        let err = body.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(started.elapsed() < IDLE_LIMIT, "not left waiting for more");
    }

    #[test]
    fn a_stalled_or_slow_body_is_given_up() {
        // Nothing for longer than IDLE_LIMIT.
        let (_tx, mut body) = reader(TIME_LIMIT);
        let started = Instant::now();
        let err = body.read(&mut [0; 4]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= IDLE_LIMIT);
        // Past the time limit, even while bytes keep coming.
        let (tx, mut body) = reader(Duration::ZERO);
        tx.send(Piece::Chunk(Bytes::from_static(b"late"))).unwrap();
        assert_eq!(body.read(&mut [0; 4]).unwrap(), 4, "what is there is read");
        let err = body.read(&mut [0; 4]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
