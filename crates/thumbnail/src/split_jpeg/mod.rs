//! A baseline JPEG decoder for thumbnails that splits the Huffman decoding of one image
//! across two threads, and decodes at 1/8, 1/4, 1/2 or full size in the IDCT.
//!
//! Handles baseline and extended sequential Huffman JPEGs (SOF0, SOF1) with 8-bit samples,
//! 1 or 3 components, sampling factors 1 or 2, one scan, with or without restart markers.
//! Anything else is [`Outcome::Unsupported`]: the caller falls back to jpeg-decoder.
//! Output dimensions are jpeg-decoder's at the same scale (`ceil(side × eighths / 8)`),
//! pixels RGB8 or L8; EXIF orientation is the caller's.
//!
//! Modules, in the order the data flows: [`header`] (markers up to the scan, limits),
//! [`unstuff`] (entropy bytes to plain bits), [`huffman`] and [`bits`] (table-driven
//! symbol decoding), [`entropy`] (MCUs to coefficients from any decoder state), [`split`]
//! (one or two threads, speculative sync), [`pixels`] (IDCT, upsampling, colour).
//!
//! Deterministic: the pixels depend only on the bytes and the scale, never on the thread
//! count, the split point, thread timing or how a reader's bytes were chunked.

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::probe::Limits;

mod bits;
mod entropy;
mod header;
mod huffman;
mod pixels;
mod split;
#[cfg(test)]
mod test_image;
#[cfg(test)]
mod tests;
mod threads;
mod unstuff;

use entropy::{decode, Cursor, Halt, Layout, Tables, Target, Unobserved, MAX_MCU_BYTES};
use header::{Header, HeaderParser, Step};
pub(crate) use split::{SplitAt, Trace};
use unstuff::Unstuffer;

/// Threads the entropy decoding uses at most.
pub(crate) const MAX_THREADS: usize = 2;

/// Bytes of decoder memory allowed per pixel of `Limits::max_pixels`: what render.rs
/// allows jpeg-decoder. Coefficients take 0.4 (1/4 scale) to 6 (full size, 4:4:4) bytes
/// per pixel, plus up to half again for the speculative thread's copy; a full-size decode
/// of an image near the limit is left to jpeg-decoder.
const MAX_BYTES_PER_PIXEL: u64 = 4;

/// Bytes asked of the reader at once.
const READ_CHUNK: usize = 64 * 1024;

/// Entropy-coded bytes the calling thread decodes at most between two reads while the
/// file arrives (~2 ms): bounds how late it notices the end, when the split happens.
const DECODE_QUANTUM_BYTES: usize = 256 * 1024;

/// A read that took longer than this waited for bytes: the decoder has caught up with the
/// upload and may decode. A faster one found bytes waiting: read on first.
const READ_WAITED: Duration = Duration::from_micros(20);

/// What a decode gives.
#[derive(Debug)]
pub(crate) enum Outcome {
    Decoded(Image),
    /// A JPEG this decoder does not handle (progressive, arithmetic, 12-bit, CMYK, …):
    /// why, as tests and the bench print it (the pipeline falls back either way).
    Unsupported(#[allow(dead_code)] &'static str),
}

/// Decoded pixels, rows top to bottom, no padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Image {
    pub width: u32,
    pub height: u32,
    /// 1 (L8) or 3 (RGB8).
    pub components: u8,
    pub pixels: Vec<u8>,
}

/// How to decode: threads (at most [`MAX_THREADS`] are used) and where to split.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    pub threads: usize,
    pub split: SplitAt,
}

impl Options {
    pub(crate) fn threads(threads: usize) -> Options {
        Options {
            threads: threads.min(MAX_THREADS),
            split: SplitAt::Middle,
        }
    }
}

/// Whether `header` (the file's first bytes, through its scan header at least) is a JPEG
/// this decoder takes at `eighths`/8: then [`decode_reader`] on the whole file never
/// answers [`Outcome::Unsupported`], and a caller need not keep the bytes for another
/// decoder. False when it does not, or when `header` ends before the scan.
pub(crate) fn takes(header: &[u8], eighths: u32, limits: &Limits) -> bool {
    if check_scale(eighths).is_err() {
        return false;
    }
    match HeaderParser::default().feed(header, limits) {
        Ok(Step::Scan { header, .. }) => over_budget(&header, eighths, limits).is_none(),
        _ => false,
    }
}

/// Decodes a whole JPEG in memory at `eighths`/8 of its size (1, 2, 4 or 8).
pub(crate) fn decode_slice(
    bytes: &[u8],
    eighths: u32,
    limits: &Limits,
    threads: usize,
) -> Result<Outcome> {
    decode_slice_traced(bytes, eighths, limits, Options::threads(threads)).map(|(o, _)| o)
}

/// Decodes a JPEG read from `source`, which yields the file as it arrives: the calling
/// thread decodes while bytes come in (between reads that had to wait, in bounded
/// quanta, so reading never falls far behind), and once the reader ends, or the scan
/// does, what is left is split between it and a second thread. Stops reading at the end
/// of the scan (EOI or any other marker after it): a caller that needs the rest of the
/// stream (trailing data, an appended MPF image) drains it. Reads at most
/// `limits.max_source_bytes`; a scan still going on past them is [`Error::TooLarge`].
pub(crate) fn decode_reader<R: Read>(
    source: R,
    eighths: u32,
    limits: &Limits,
    threads: usize,
) -> Result<Outcome> {
    decode_reader_traced(source, eighths, limits, Options::threads(threads)).map(|(o, _)| o)
}

/// [`decode_slice`] with options, and how the split went.
pub(crate) fn decode_slice_traced(
    bytes: &[u8],
    eighths: u32,
    limits: &Limits,
    options: Options,
) -> Result<(Outcome, Trace)> {
    check_scale(eighths)?;
    if bytes.len() as u64 > limits.max_source_bytes {
        return Err(Error::TooLarge(format!(
            "{} bytes, limit {}",
            bytes.len(),
            limits.max_source_bytes
        )));
    }
    let (header, entropy_start) = match HeaderParser::default().feed(bytes, limits)? {
        Step::NeedMore => return Err(Error::Undecodable("JPEG header: truncated".into())),
        Step::Unsupported(why) => return Ok((Outcome::Unsupported(why), Trace::default())),
        Step::Scan {
            header,
            entropy_start,
        } => (header, entropy_start),
    };
    if let Some(why) = over_budget(&header, eighths, limits) {
        return Ok((Outcome::Unsupported(why), Trace::default()));
    }
    let start = Instant::now();
    let mut unstuffer = Unstuffer::default();
    unstuffer.push(&bytes[entropy_start..]);
    let mut decoder = ScanDecoder::new(header, eighths)?;
    decoder.trace.before_split = start.elapsed();
    let image = decoder.finish(&unstuffer, options)?;
    Ok((Outcome::Decoded(image), decoder.trace))
}

/// [`decode_reader`] with options, and how the split went.
pub(crate) fn decode_reader_traced<R: Read>(
    source: R,
    eighths: u32,
    limits: &Limits,
    options: Options,
) -> Result<(Outcome, Trace)> {
    check_scale(eighths)?;
    let mut source = source.take(limits.max_source_bytes);
    let mut raw = Vec::new();
    let mut buffer = vec![0u8; READ_CHUNK];
    let mut parser = HeaderParser::default();
    let mut scan: Option<(ScanDecoder, usize)> = None;
    let mut unstuffer = Unstuffer::default();
    loop {
        let Arrival { ended, waited } = read_more(&mut source, &mut buffer, &mut raw)?;
        if scan.is_none() {
            match parser.feed(&raw, limits)? {
                Step::NeedMore if ended => {
                    return Err(Error::Undecodable("JPEG header: truncated".into()))
                }
                Step::NeedMore => continue,
                Step::Unsupported(why) => return Ok((Outcome::Unsupported(why), Trace::default())),
                Step::Scan {
                    header,
                    entropy_start,
                } => {
                    if let Some(why) = over_budget(&header, eighths, limits) {
                        return Ok((Outcome::Unsupported(why), Trace::default()));
                    }
                    scan = Some((ScanDecoder::new(header, eighths)?, entropy_start));
                }
            }
        }
        let Some((decoder, next_raw)) = &mut scan else {
            continue;
        };
        *next_raw += unstuffer.push(raw.get(*next_raw..).unwrap_or_default());
        if unstuffer.ended || ended {
            if !unstuffer.ended && raw.len() as u64 >= limits.max_source_bytes {
                return Err(Error::TooLarge(format!(
                    "more than {} bytes",
                    limits.max_source_bytes
                )));
            }
            let image = decoder.finish(&unstuffer, options)?;
            return Ok((Outcome::Decoded(image), decoder.trace));
        }
        if waited {
            decoder.progress(&unstuffer)?;
        }
    }
}

/// What one [`read_more`] got.
struct Arrival {
    /// The source is at its end.
    ended: bool,
    /// The read took longer than [`READ_WAITED`]: it waited for bytes to arrive.
    waited: bool,
}

/// Reads one more chunk into `raw` through `buffer`.
fn read_more(source: &mut impl Read, buffer: &mut [u8], raw: &mut Vec<u8>) -> Result<Arrival> {
    loop {
        // Only the read is timed: appending to `raw` may reallocate, which is no wait.
        let start = Instant::now();
        match source.read(buffer) {
            Ok(n) => {
                let waited = start.elapsed() > READ_WAITED;
                raw.extend_from_slice(&buffer[..n.min(buffer.len())]);
                return Ok(Arrival {
                    ended: n == 0,
                    waited,
                });
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Undecodable(format!("reading the JPEG: {e}"))),
        }
    }
}

/// Why a decode would need more memory than [`MAX_BYTES_PER_PIXEL`] allows, if it would.
fn over_budget(header: &Header, eighths: u32, limits: &Limits) -> Option<&'static str> {
    let layout = Layout::new(header, eighths as usize);
    let coefficient_bytes = layout.coefficients(layout.total_mcus) as u64 * 2;
    let needed = coefficient_bytes.saturating_add(coefficient_bytes / 2);
    (needed > limits.max_pixels.saturating_mul(MAX_BYTES_PER_PIXEL))
        .then_some("JPEG too large for this decoder at this scale")
}

fn check_scale(eighths: u32) -> Result<()> {
    match eighths {
        1 | 2 | 4 | 8 => Ok(()),
        _ => Err(Error::InvalidRequest(
            "JPEG scale must be 1, 2, 4 or 8 eighths",
        )),
    }
}

/// The state of one image's decode once its header is known.
struct ScanDecoder {
    header: Box<Header>,
    layout: Layout,
    eighths: u32,
    coefs: Vec<i16>,
    /// How far the calling thread has decoded while the bytes arrived.
    cursor: Cursor,
    trace: Trace,
}

impl ScanDecoder {
    fn new(header: Box<Header>, eighths: u32) -> Result<ScanDecoder> {
        let layout = Layout::new(&header, eighths as usize);
        // The header checked the pixel count against the limit: this is bounded.
        let coefs = vec![0i16; layout.coefficients(layout.total_mcus)];
        Ok(ScanDecoder {
            header,
            layout,
            eighths,
            coefs,
            cursor: Cursor::at(0, 0),
            trace: Trace::default(),
        })
    }

    /// Decodes MCUs whose bytes have surely all arrived (incomplete data), at most
    /// [`DECODE_QUANTUM_BYTES`] of them.
    fn progress(&mut self, unstuffer: &Unstuffer) -> Result<()> {
        let Some(safe_end) = unstuffer.data.len().checked_sub(MAX_MCU_BYTES) else {
            return Ok(());
        };
        let quantum_end = (self.cursor.bitpos / 8).saturating_add(DECODE_QUANTUM_BYTES as u64);
        let stop = (safe_end as u64).min(quantum_end) * 8;
        let tables = Tables::new(&self.header, &self.layout)?;
        let mut target = Target {
            layout: &self.layout,
            tables: &tables,
            data: &unstuffer.data,
            restarts: &unstuffer.restarts,
            complete: false,
            out: &mut self.coefs,
            out_base: 0,
        };
        let total = self.layout.total_mcus;
        let halt = decode(&mut target, &mut self.cursor, total, stop, &mut Unobserved)?;
        debug_assert!(halt != Halt::Observed);
        Ok(())
    }

    /// Decodes the rest once all the data is in, and makes the pixels.
    fn finish(&mut self, unstuffer: &Unstuffer, options: Options) -> Result<Image> {
        let tables = Tables::new(&self.header, &self.layout)?;
        let scan = split::Scan {
            layout: &self.layout,
            tables: &tables,
            data: &unstuffer.data,
            restarts: &unstuffer.restarts,
        };
        let threads = options.threads.min(MAX_THREADS);
        self.trace.mcus_while_arriving = self.cursor.mcu;
        let start = Instant::now();
        split::finish(
            &scan,
            &mut self.coefs,
            self.cursor,
            threads,
            options.split,
            &mut self.trace,
        )?;
        self.trace.entropy = start.elapsed();
        let start = Instant::now();
        let image = pixels::render(
            &self.header,
            &self.layout,
            &self.coefs,
            self.eighths,
            threads,
        );
        self.trace.pixels = start.elapsed();
        image
    }
}
