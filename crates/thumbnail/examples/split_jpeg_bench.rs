//! Times the split JPEG decoder (`src/split_jpeg`) against jpeg-decoder at 1/4 scale on
//! the federation bench's noise photos (4000×3000, quality 90, noise amplitude 50 and 20):
//! one thread, two threads from a slice, and two threads from a reader that delivers the
//! file at ~300 MB/s in 64 KiB chunks (time from the first byte to pixels).
//!
//! `nice -n 15 cargo run --release -p mr-thumbnail --example split_jpeg_bench [runs [one]]`
//! (`one` or `two`: only the 1- or 2-thread slice decode of the first image, for
//! `perf stat` and profiles)
//!
//! Measured 2026-12-01 20:26 UTC (CPUs idle at the start, load average 5.1 from the other
//! workload, 2 cores), median of 9:
//!
//! | image | jpeg-decoder | 1 thread | 2 threads, slice | 2 threads, reader at 300 MB/s |
//! |---|---:|---:|---:|---:|
//! | noise 50, 9.35 MiB | 100.4 ms | 60.0 ms | 32.2 ms | 54.6 ms from the first byte (upload 32.7) |
//! | noise 20, 3.54 MiB | 56.2 ms | 37.3 ms | 20.7 ms | 28.1 ms from the first byte (upload 12.4) |
//!
//! Speculation synced 32 bytes after the split byte (reader: 18–39). Pixels vs
//! jpeg-decoder: mean absolute difference 0.006, max 1.
//!
//! The decoder is crate-private, so it is compiled in here from its source, with the two
//! crate items it uses supplied from the public API.

use std::io::Read;
use std::time::{Duration, Instant};

mod error {
    pub use mr_thumbnail::{Error, Result};
}
mod probe {
    pub use mr_thumbnail::Limits;
}
#[allow(unused_imports, dead_code)] // the bench calls the traced entry points only
#[path = "../src/split_jpeg/mod.rs"]
mod split_jpeg;

use split_jpeg::{Options, Outcome};
#[path = "../src/split_jpeg/test_image.rs"]
mod test_image;
use test_image::noise_image;

const LIMITS: mr_thumbnail::Limits = mr_thumbnail::Limits {
    max_source_bytes: 64 << 20,
    max_pixels: 100_000_000,
};

/// Scale of the bench decodes (1/4).
const EIGHTHS: u32 = 2;

/// Upload speed the paced reader imitates, and its chunk.
const BYTES_PER_SEC: f64 = 300e6;
const CHUNK: usize = 64 * 1024;

/// Delivers `data` in [`CHUNK`]s, each no earlier than it would arrive at
/// [`BYTES_PER_SEC`] from the first read.
struct Paced<'a> {
    data: &'a [u8],
    pos: usize,
    start: Option<Instant>,
    /// When the last byte was handed out.
    last: Option<Instant>,
}

impl Read for Paced<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let start = *self.start.get_or_insert_with(Instant::now);
        let n = buf.len().min(CHUNK).min(self.data.len() - self.pos);
        let due = start + Duration::from_secs_f64((self.pos + n) as f64 / BYTES_PER_SEC);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.data.len() && self.last.is_none() {
            self.last = Some(Instant::now());
        }
        Ok(n)
    }
}

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut out = f(); // warm-up
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        out = f();
        times.push(t.elapsed());
    }
    (median(times), out)
}

fn jpeg_decoder_quarter(bytes: &[u8]) -> Vec<u8> {
    let mut d = jpeg_decoder::Decoder::new(bytes);
    d.read_info().unwrap();
    let info = d.info().unwrap();
    let s = |side: u16| ((u32::from(side) * EIGHTHS - 1) / 8 + 1) as u16;
    d.scale(s(info.width), s(info.height)).unwrap();
    d.decode().unwrap()
}

fn pixels(outcome: Outcome) -> Vec<u8> {
    match outcome {
        Outcome::Decoded(image) => image.pixels,
        Outcome::Unsupported(why) => panic!("unsupported: {why}"),
    }
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(9);
    let only = std::env::args().nth(2);
    if let Some(threads @ 1..=2) = only.as_deref().map(|o| if o == "one" { 1 } else { 2 }) {
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(&noise_image(4000, 3000, 50.0, 1))
            .unwrap();
        let options = Options::threads(threads);
        let (t, (_, trace)) = time(runs, || {
            split_jpeg::decode_slice_traced(&bytes, EIGHTHS, &LIMITS, options).unwrap()
        });
        println!("split_jpeg threads={threads}: {t:.1} ms {trace:?}");
        return;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("median of {runs} runs, 1/4 scale, 4000×3000 quality 90 (image crate encoder)");
    println!("load average at start: {}", load.trim());
    for amplitude in [50.0, 20.0] {
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(&noise_image(4000, 3000, amplitude, 1))
            .unwrap();
        println!(
            "\nnoise amplitude {amplitude}: {:.2} MiB",
            bytes.len() as f64 / (1 << 20) as f64
        );
        let (t_ref, reference) = time(runs, || jpeg_decoder_quarter(&bytes));
        let one = Options::threads(1);
        let two = Options::threads(2);
        let (t1, (o1, trace1)) = time(runs, || {
            split_jpeg::decode_slice_traced(&bytes, EIGHTHS, &LIMITS, one).unwrap()
        });
        let (t2, (o2, trace)) = time(runs, || {
            split_jpeg::decode_slice_traced(&bytes, EIGHTHS, &LIMITS, two).unwrap()
        });
        // From the first byte to pixels, and from the last byte to pixels.
        let (tr, (o3, reader_trace, after)) = time(runs, || {
            let mut source = Paced {
                data: &bytes,
                pos: 0,
                start: None,
                last: None,
            };
            let decoded =
                split_jpeg::decode_reader_traced(&mut source, EIGHTHS, &LIMITS, two).unwrap();
            let after = source.last.map(|t| t.elapsed()).unwrap_or_default();
            (decoded.0, decoded.1, after)
        });
        let upload = bytes.len() as f64 / BYTES_PER_SEC * 1e3;
        let (p1, p2, p3) = (pixels(o1), pixels(o2), pixels(o3));
        assert!(
            p1 == p2 && p2 == p3,
            "thread counts or reader gave different pixels"
        );
        let diff: u64 = p1
            .iter()
            .zip(&reference)
            .map(|(&a, &b)| u64::from(a.abs_diff(b)))
            .sum();
        let max = p1
            .iter()
            .zip(&reference)
            .map(|(&a, &b)| a.abs_diff(b))
            .max()
            .unwrap_or(0);
        println!("jpeg-decoder 1/4:              {t_ref:6.1} ms");
        println!("split_jpeg threads=1:          {t1:6.1} ms   {trace1:?}");
        println!("split_jpeg threads=2 (slice):  {t2:6.1} ms   {trace:?}");
        println!(
            "split_jpeg threads=2 (reader): {tr:6.1} ms from the first byte (upload alone {upload:.1} ms; last run {:.1} ms after the last byte)   {reader_trace:?}",
            after.as_secs_f64() * 1e3
        );
        println!(
            "pixels vs jpeg-decoder: mean abs diff {:.4}, max {max}",
            diff as f64 / p1.len() as f64
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\nload average at end: {}", load.trim());
}
