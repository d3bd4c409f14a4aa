//! `Cache::fill_in_background`, against the memory backend and three real redis-server
//! shards: one fill per blob at a time, the in-flight entry gone however a fill ends
//! (finished, source failed, panicked, aborted midway), nothing started for a blob the
//! cache would not keep, and a fill that raced an eviction undone.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use mr_cache::FillOutcome;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::oneshot;

use super::*;

/// Size of the test blobs: three chunks, so a fill stopped midway has written some.
const LEN: usize = 10_000;

/// How the reader a source opens behaves after its first half.
enum Then {
    /// Says so on `reached` and never yields again (a fill to abort midway).
    Stall(Option<oneshot::Sender<()>>),
    /// Fails, as a disk read would.
    Fail,
    /// Panics, as a bug in the reader would.
    Panic,
}

impl AsyncRead for Then {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Then::Stall(reached) => {
                if let Some(reached) = reached.take() {
                    let _ = reached.send(());
                }
                // Never woken: the test aborts the fill.
                Poll::Pending
            }
            Then::Fail => Poll::Ready(Err(io::Error::other("disk read failed"))),
            Then::Panic => panic!("reader bug (panic injected by the test)"),
        }
    }
}

/// A reader yielding the first half of `data`, then doing `then`.
fn half_then(data: &[u8], then: Then) -> impl AsyncRead + Unpin + Send + 'static {
    io::Cursor::new(data[..data.len() / 2].to_vec()).chain(then)
}

/// A source that counts its openings and yields all of `data`.
fn counted_source(
    opens: &Arc<AtomicUsize>,
    data: &[u8],
) -> impl std::future::Future<Output = io::Result<io::Cursor<Vec<u8>>>> + Send + 'static {
    let (opens, data) = (opens.clone(), data.to_vec());
    async move {
        opens.fetch_add(1, Ordering::SeqCst);
        Ok(io::Cursor::new(data))
    }
}

/// Fills `sha` with all of `data` from a fresh source and waits for the outcome.
async fn fill_whole(f: &Fixture, sha: &str, data: &[u8]) -> Option<FillOutcome> {
    let opens = Arc::new(AtomicUsize::new(0));
    let handle =
        f.cache
            .fill_in_background(sha, data.len() as u64, counted_source(&opens, data))?;
    Some(handle.await.expect("a fill of a good source finishes"))
}

/// Asserts the cache holds exactly `data` under `sha`.
async fn assert_cached(f: &Fixture, sha: &str, data: &[u8]) {
    let reader = f.cache.open_blob(sha, None).await.expect("blob cached");
    let (got, ending) = read_all(reader).await;
    assert_eq!(ending, Ending::End);
    assert!(got == data, "cached bytes differ from the source");
}

/// SETs all shards have been sent (0 for the memory backend).
fn sets_sent(f: &Fixture) -> u64 {
    f.shards.iter().map(|(_, s)| set_commands_seen(s)).sum()
}

pub async fn single_flight(f: &Fixture) {
    let data = bytes_of(LEN, 700);
    let sha = sha(700);
    let opens = Arc::new(AtomicUsize::new(0));
    let sets_before = sets_sent(f);
    // The first fill holds its source closed until the gate opens, so it stays in flight.
    let (open_gate, gate) = oneshot::channel::<()>();
    let gated = {
        let (opens, data) = (opens.clone(), data.clone());
        async move {
            opens.fetch_add(1, Ordering::SeqCst);
            let _ = gate.await;
            Ok::<_, io::Error>(io::Cursor::new(data))
        }
    };
    let first = f
        .cache
        .fill_in_background(&sha, LEN as u64, gated)
        .expect("the first fill starts");
    for _ in 0..8 {
        assert!(
            f.cache
                .fill_in_background(&sha, LEN as u64, counted_source(&opens, &data))
                .is_none(),
            "a second fill of a blob in flight must not start"
        );
    }
    // Another blob is not held up by this one.
    assert_eq!(
        fill_whole(f, &common::sha(701), &data).await,
        Some(FillOutcome::Stored)
    );
    let sets_for_one_blob = sets_sent(f) - sets_before;
    let _ = open_gate.send(());
    assert_eq!(first.await.unwrap(), FillOutcome::Stored);
    assert_eq!(
        opens.load(Ordering::SeqCst),
        1,
        "the source was opened once"
    );
    assert_eq!(
        sets_sent(f) - sets_before,
        2 * sets_for_one_blob,
        "one blob written once besides the other one"
    );
    assert_cached(f, &sha, &data).await;
    // Finished: the entry is gone, a later fill runs again.
    assert_eq!(fill_whole(f, &sha, &data).await, Some(FillOutcome::Stored));
}

pub async fn aborted_midway_leaves_no_entry(f: &Fixture) {
    let data = bytes_of(LEN, 710);
    let sha = sha(710);
    let (reached_tx, reached) = oneshot::channel();
    let source = half_then(&data, Then::Stall(Some(reached_tx)));
    let fill = f
        .cache
        .fill_in_background(&sha, LEN as u64, async move { Ok::<_, io::Error>(source) })
        .expect("fill starts");
    reached.await.expect("the fill read half of the blob");
    fill.abort();
    assert!(fill.await.unwrap_err().is_cancelled());
    assert!(
        f.cache.open_blob(&sha, None).await.is_none(),
        "an aborted fill publishes nothing"
    );
    assert_eq!(fill_whole(f, &sha, &data).await, Some(FillOutcome::Stored));
    assert_cached(f, &sha, &data).await;
}

pub async fn aborted_before_it_ran_leaves_no_entry(f: &Fixture) {
    let data = bytes_of(LEN, 715);
    let sha = sha(715);
    let opens = Arc::new(AtomicUsize::new(0));
    let fill = f
        .cache
        .fill_in_background(&sha, LEN as u64, counted_source(&opens, &data))
        .expect("fill starts");
    // Aborted before its task was first polled (the test has not yielded since).
    fill.abort();
    assert!(fill.await.unwrap_err().is_cancelled());
    assert_eq!(opens.load(Ordering::SeqCst), 0);
    assert_eq!(fill_whole(f, &sha, &data).await, Some(FillOutcome::Stored));
}

pub async fn failed_source_leaves_no_entry(f: &Fixture) {
    let data = bytes_of(LEN, 720);
    let sha = sha(720);
    let unopenable = async { Err::<io::Cursor<Vec<u8>>, _>("no such file") };
    let fill = f.cache.fill_in_background(&sha, LEN as u64, unopenable);
    assert_eq!(fill.unwrap().await.unwrap(), FillOutcome::SourceFailed);
    let source = half_then(&data, Then::Fail);
    let fill =
        f.cache
            .fill_in_background(&sha, LEN as u64, async move { Ok::<_, io::Error>(source) });
    assert_eq!(fill.unwrap().await.unwrap(), FillOutcome::SourceFailed);
    let short = io::Cursor::new(data[..LEN - 1].to_vec());
    let fill =
        f.cache
            .fill_in_background(&sha, LEN as u64, async move { Ok::<_, io::Error>(short) });
    assert_eq!(fill.unwrap().await.unwrap(), FillOutcome::SourceFailed);
    assert!(f.cache.open_blob(&sha, None).await.is_none());
    assert_eq!(fill_whole(f, &sha, &data).await, Some(FillOutcome::Stored));
    assert_cached(f, &sha, &data).await;
}

pub async fn panicked_fill_leaves_no_entry(f: &Fixture) {
    let data = bytes_of(LEN, 730);
    let sha = sha(730);
    let source = half_then(&data, Then::Panic);
    let fill = f
        .cache
        .fill_in_background(&sha, LEN as u64, async move { Ok::<_, io::Error>(source) })
        .expect("fill starts");
    assert!(fill.await.unwrap_err().is_panic());
    assert!(f.cache.open_blob(&sha, None).await.is_none());
    assert_eq!(fill_whole(f, &sha, &data).await, Some(FillOutcome::Stored));
    assert_cached(f, &sha, &data).await;
}

pub async fn too_big_is_not_filled(f: &Fixture) {
    let data = bytes_of(MAX_OBJECT as usize + 1, 740);
    let sha = sha(740);
    let opens = Arc::new(AtomicUsize::new(0));
    let fill = f
        .cache
        .fill_in_background(&sha, data.len() as u64, counted_source(&opens, &data));
    assert!(fill.is_none(), "a blob over max_object_bytes is not filled");
    tokio::task::yield_now().await;
    assert_eq!(
        opens.load(Ordering::SeqCst),
        0,
        "its source is never opened"
    );
    assert!(f.cache.open_blob(&sha, None).await.is_none());
    // The limit itself is admitted.
    let data = bytes_of(MAX_OBJECT as usize, 741);
    assert_eq!(
        fill_whole(f, &common::sha(741), &data).await,
        Some(FillOutcome::Stored)
    );
    assert_cached(f, &common::sha(741), &data).await;
}

pub async fn fill_racing_an_eviction_is_undone(f: &Fixture) {
    let data = bytes_of(LEN, 750);
    let sha = sha(750);
    f.cache.guard_against_refill(&sha);
    assert_eq!(fill_whole(f, &sha, &data).await, Some(FillOutcome::Undone));
    assert!(f.cache.open_blob(&sha, None).await.is_none());
    // Other blobs are filled as usual.
    assert_eq!(
        fill_whole(f, &common::sha(751), &data).await,
        Some(FillOutcome::Stored)
    );
}

macro_rules! fill_tests {
    ($backend:ident, $fixture:expr) => {
        mod $backend {
            use super::*;
            fill_tests!(@each $fixture; single_flight, aborted_midway_leaves_no_entry,
                aborted_before_it_ran_leaves_no_entry, failed_source_leaves_no_entry,
                panicked_fill_leaves_no_entry, too_big_is_not_filled,
                fill_racing_an_eviction_is_undone);
        }
    };
    (@each $fixture:expr; $($case:ident),*) => {
        $(
            #[actix_rt::test]
            async fn $case() {
                let f = $fixture.await;
                super::$case(&f).await;
            }
        )*
    };
}

fill_tests!(memory, Fixture::memory());
fill_tests!(redis, Fixture::redis());

#[actix_rt::test]
async fn none_backend_never_fills() {
    let mut cfg = base_config();
    cfg.backend = mr_config::CacheBackend::None;
    let cache = Cache::start(&cfg);
    let opens = Arc::new(AtomicUsize::new(0));
    let data = bytes_of(LEN, 760);
    assert!(cache
        .fill_in_background(&sha(760), LEN as u64, counted_source(&opens, &data))
        .is_none());
    tokio::task::yield_now().await;
    assert_eq!(opens.load(Ordering::SeqCst), 0);
}
