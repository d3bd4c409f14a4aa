//! Tests of the split JPEG decoder: pixels against jpeg-decoder, determinism across
//! threads, split points and reader chunking, and hostile input.

use std::io::Read;

use image::RgbImage;
use rand::{Rng, SeedableRng};

use super::test_image::noise_image;
use super::*;

const LIMITS: Limits = Limits {
    max_source_bytes: 64 << 20,
    max_pixels: 100_000_000,
};

/// Baseline 4:4:4, no restart markers: the `image` crate's encoder at quality 90.
fn image_crate_jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(img)
        .unwrap();
    out
}

/// jpeg-encoder with a sampling factor, a restart interval (0: none), RGB or gray.
fn jpeg_encoder_jpeg(
    img: &RgbImage,
    sampling: jpeg_encoder::SamplingFactor,
    restart: u16,
    gray: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, 90);
    encoder.set_sampling_factor(sampling);
    encoder.set_restart_interval(restart);
    let (w, h) = (img.width() as u16, img.height() as u16);
    if gray {
        let luma: Vec<u8> = img.pixels().map(|p| p[1]).collect();
        encoder
            .encode(&luma, w, h, jpeg_encoder::ColorType::Luma)
            .unwrap();
    } else {
        encoder
            .encode(img.as_raw(), w, h, jpeg_encoder::ColorType::Rgb)
            .unwrap();
    }
    out
}

/// jpeg-decoder at the same scale: (width, height, pixels).
fn reference(bytes: &[u8], eighths: u32) -> (u32, u32, Vec<u8>) {
    let mut d = jpeg_decoder::Decoder::new(bytes);
    d.read_info().unwrap();
    let info = d.info().unwrap();
    if eighths < 8 {
        let s = |side: u16| ((u32::from(side) * eighths - 1) / 8 + 1) as u16;
        d.scale(s(info.width), s(info.height)).unwrap();
    }
    let pixels = d.decode().unwrap();
    let info = d.info().unwrap();
    (u32::from(info.width), u32::from(info.height), pixels)
}

fn decoded(outcome: Outcome) -> Image {
    match outcome {
        Outcome::Decoded(image) => image,
        Outcome::Unsupported(why) => panic!("unsupported: {why}"),
    }
}

/// Mean and max absolute difference.
fn difference(a: &[u8], b: &[u8]) -> (f64, u8) {
    assert_eq!(a.len(), b.len());
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    let max = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| x.abs_diff(y))
        .max()
        .unwrap_or(0);
    (sum as f64 / a.len().max(1) as f64, max)
}

/// Same size as jpeg-decoder and close pixels, at every scale; returns the worst (mean,
/// max) seen.
fn assert_close(bytes: &[u8], name: &str) -> (f64, u8) {
    let mut worst = (0f64, 0u8);
    for eighths in [1, 2, 4, 8] {
        let ours = decoded(decode_slice(bytes, eighths, &LIMITS, 2).unwrap());
        let (w, h, theirs) = reference(bytes, eighths);
        assert_eq!((ours.width, ours.height), (w, h), "{name} at {eighths}/8");
        let (mean, max) = difference(&ours.pixels, &theirs);
        eprintln!("{name} at {eighths}/8: {w}×{h}, mean diff {mean:.3}, max {max}");
        assert!(
            mean < 1.5 && max < 16,
            "{name} at {eighths}/8: mean {mean}, max {max}"
        );
        worst = (worst.0.max(mean), worst.1.max(max));
    }
    worst
}

#[test]
fn matches_jpeg_decoder_444_noise() {
    assert_close(
        &image_crate_jpeg(&noise_image(640, 480, 50.0, 1)),
        "4:4:4 noise",
    );
}

#[test]
fn matches_jpeg_decoder_subsampled_odd_sizes() {
    use jpeg_encoder::SamplingFactor as S;
    let img = noise_image(1001, 757, 20.0, 2);
    for (sampling, name) in [
        (S::F_2_2, "4:2:0"),
        (S::F_2_1, "4:2:2"),
        (S::F_1_2, "4:4:0"),
    ] {
        assert_close(&jpeg_encoder_jpeg(&img, sampling, 0, false), name);
    }
}

#[test]
fn matches_jpeg_decoder_grayscale() {
    let img = noise_image(1001, 757, 30.0, 3);
    assert_close(
        &jpeg_encoder_jpeg(&img, jpeg_encoder::SamplingFactor::F_1_1, 0, true),
        "gray",
    );
}

#[test]
fn matches_jpeg_decoder_with_restart_markers() {
    let img = noise_image(1001, 757, 30.0, 4);
    let bytes = jpeg_encoder_jpeg(&img, jpeg_encoder::SamplingFactor::F_2_2, 7, false);
    assert_close(&bytes, "4:2:0 restart 7");
    let (_, trace) = decode_slice_traced(&bytes, 2, &LIMITS, Options::threads(2)).unwrap();
    assert!(
        trace.at_restart && trace.second_thread_mcus > 0,
        "{trace:?}"
    );
}

/// A reader handing out `chunk` bytes per read, optionally pausing every read (so the
/// decoder's decode-while-arriving path runs), counting what it gave.
struct Chunked<'a> {
    data: &'a [u8],
    pos: usize,
    chunk: usize,
    pause: Option<std::time::Duration>,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(pause) = self.pause {
            std::thread::sleep(pause);
        }
        let n = buf.len().min(self.chunk).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn chunked(data: &[u8], chunk: usize) -> Chunked<'_> {
    Chunked {
        data,
        pos: 0,
        chunk,
        pause: None,
    }
}

/// Big enough to be split (over [`split::MIN_SPLIT_BYTES`] of data on each side).
fn splittable_jpeg() -> Vec<u8> {
    let bytes = image_crate_jpeg(&noise_image(1001, 757, 50.0, 5));
    assert!(
        bytes.len() > 4 * split::MIN_SPLIT_BYTES,
        "{} bytes",
        bytes.len()
    );
    bytes
}

fn with_split(bytes: &[u8], eighths: u32, byte: usize) -> (Image, Trace) {
    let options = Options {
        threads: 2,
        split: SplitAt::Byte(byte),
    };
    let (outcome, trace) = decode_slice_traced(bytes, eighths, &LIMITS, options).unwrap();
    (decoded(outcome), trace)
}

#[test]
fn same_pixels_wherever_the_split_is() {
    let bytes = splittable_jpeg();
    for eighths in [2, 4] {
        let one = decoded(decode_slice(&bytes, eighths, &LIMITS, 1).unwrap());
        let mut synced = 0;
        let splits: Vec<usize> = (1..bytes.len())
            .step_by(bytes.len() / 97)
            .chain([1, 2, 3])
            .collect();
        for &byte in &splits {
            let (two, trace) = with_split(&bytes, eighths, byte);
            assert!(two == one, "split at byte {byte}, {eighths}/8: {trace:?}");
            synced += usize::from(trace.synced_after.is_some());
        }
        // Determinism holds either way; speed needs sync to be the rule.
        assert!(
            synced * 10 >= splits.len() * 9,
            "synced {synced} of {}",
            splits.len()
        );
    }
}

#[test]
fn same_pixels_wherever_the_split_is_with_restart_markers() {
    let img = noise_image(1001, 757, 50.0, 6);
    for sampling in [
        jpeg_encoder::SamplingFactor::F_1_1,
        jpeg_encoder::SamplingFactor::F_2_2,
    ] {
        let bytes = jpeg_encoder_jpeg(&img, sampling, 5, false);
        let one = decoded(decode_slice(&bytes, 2, &LIMITS, 1).unwrap());
        let mut split = 0;
        for byte in (1..bytes.len()).step_by(bytes.len() / 41) {
            let (two, trace) = with_split(&bytes, 2, byte);
            assert!(two == one, "split at byte {byte}: {trace:?}");
            split += usize::from(trace.at_restart);
        }
        assert!(split > 30, "split at a restart marker {split} times");
    }
}

#[test]
fn same_pixels_however_the_reader_chunks() {
    let bytes = splittable_jpeg();
    let slice = decoded(decode_slice(&bytes, 2, &LIMITS, 2).unwrap());
    for chunk in [1, 7, 64 * 1024] {
        for threads in [1, 2] {
            let image =
                decoded(decode_reader(chunked(&bytes, chunk), 2, &LIMITS, threads).unwrap());
            assert!(image == slice, "{chunk}-byte reads, {threads} threads");
        }
    }
    // Reads that wait: the calling thread decodes while the bytes arrive.
    let slow = Chunked {
        data: &bytes,
        pos: 0,
        chunk: 8192,
        pause: Some(std::time::Duration::from_micros(300)),
    };
    let (outcome, trace) = decode_reader_traced(slow, 2, &LIMITS, Options::threads(2)).unwrap();
    assert!(decoded(outcome) == slice);
    assert!(trace.mcus_while_arriving > 0, "{trace:?}");
}

#[test]
fn same_pixels_for_restart_markers_through_a_reader() {
    let img = noise_image(1001, 757, 50.0, 7);
    let bytes = jpeg_encoder_jpeg(&img, jpeg_encoder::SamplingFactor::F_2_1, 3, false);
    let slice = decoded(decode_slice(&bytes, 4, &LIMITS, 1).unwrap());
    for chunk in [1, 7, 64 * 1024] {
        let image = decoded(decode_reader(chunked(&bytes, chunk), 4, &LIMITS, 2).unwrap());
        assert!(image == slice, "{chunk}-byte reads");
    }
    let slow = Chunked {
        data: &bytes,
        pos: 0,
        chunk: 4096,
        pause: Some(std::time::Duration::from_micros(300)),
    };
    assert!(decoded(decode_reader(slow, 4, &LIMITS, 2).unwrap()) == slice);
}

/// Offset of the first segment with `marker` (its 0xFF).
fn segment(bytes: &[u8], marker: u8) -> usize {
    let mut i = 2;
    while bytes[i + 1] != marker {
        i += 2 + usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
    }
    i
}

fn small_jpeg() -> Vec<u8> {
    image_crate_jpeg(&noise_image(123, 77, 40.0, 8))
}

/// Either result is fine; a panic is not. Slices and readers, 1 and 2 threads, agree.
fn survives(bytes: &[u8]) -> Option<Image> {
    let one = decode_slice(bytes, 2, &LIMITS, 1);
    let two = decode_slice(bytes, 2, &LIMITS, 2);
    let read = decode_reader(chunked(bytes, 7), 2, &LIMITS, 2);
    match (one, two, read) {
        (Ok(Outcome::Decoded(a)), Ok(Outcome::Decoded(b)), Ok(Outcome::Decoded(c))) => {
            assert!(a == b && b == c);
            Some(a)
        }
        (Err(_), Err(_), Err(_))
        | (Ok(Outcome::Unsupported(_)), Ok(Outcome::Unsupported(_)), _) => None,
        (a, b, c) => panic!(
            "disagree: {:?} / {:?} / {:?}",
            a.is_ok(),
            b.is_ok(),
            c.is_ok()
        ),
    }
}

#[test]
fn truncated_files_fail_cleanly() {
    for bytes in [small_jpeg(), splittable_jpeg()] {
        let step = (bytes.len() / 300).max(1);
        for cut in (0..bytes.len() - 2).step_by(step).chain(0..40) {
            assert!(
                survives(&bytes[..cut]).is_none(),
                "cut at {cut} of {}",
                bytes.len()
            );
        }
    }
}

#[test]
fn corrupt_entropy_data_never_panics_and_stays_deterministic() {
    let bytes = splittable_jpeg();
    let start = segment(&bytes, 0xDA) + 20;
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for _ in 0..60 {
        let mut bad = bytes.clone();
        for _ in 0..rng.gen_range(1..8) {
            let at = rng.gen_range(start..bad.len() - 2);
            bad[at] = rng.gen();
        }
        survives(&bad);
    }
}

#[test]
fn bogus_huffman_tables_are_errors() {
    let bytes = small_jpeg();
    let dht = segment(&bytes, 0xC4);
    // Counts start after FF C4, the length and the class/index byte.
    for (offset, value) in [(5, 255u8), (5, 3), (6, 5), (20, 200), (4, 0x25), (4, 0x05)] {
        let mut bad = bytes.clone();
        bad[dht + offset] = value;
        survives(&bad);
    }
    // More codes of a length than the length allows (3 one-bit codes), counts kept in sum.
    let mut bad = bytes.clone();
    let counts = dht + 5;
    let total: u32 = bad[counts..counts + 16].iter().map(|&c| u32::from(c)).sum();
    bad[counts..counts + 16].fill(0);
    bad[counts] = 3;
    bad[counts + 15] = (total - 3) as u8;
    assert!(matches!(
        decode_slice(&bad, 2, &LIMITS, 2),
        Err(Error::Undecodable(_))
    ));
}

#[test]
fn huge_declared_size_is_too_large_before_decoding() {
    let mut bytes = small_jpeg();
    let sof = segment(&bytes, 0xC0);
    bytes[sof + 5..sof + 9].copy_from_slice(&[0xC3, 0x50, 0xC3, 0x50]); // 50000×50000
    assert!(matches!(
        decode_slice(&bytes, 2, &LIMITS, 2),
        Err(Error::TooLarge(_))
    ));
    assert!(matches!(
        decode_reader(chunked(&bytes, 7), 2, &LIMITS, 2),
        Err(Error::TooLarge(_))
    ));
}

#[test]
fn odd_frames_are_errors_or_unsupported() {
    let bytes = small_jpeg();
    let sof = segment(&bytes, 0xC0);
    let patched = |at: usize, value: u8| {
        let mut b = bytes.clone();
        b[sof + at] = value;
        b
    };
    let unsupported =
        |b: &[u8]| matches!(decode_slice(b, 2, &LIMITS, 2), Ok(Outcome::Unsupported(_)));
    let error = |b: &[u8]| decode_slice(b, 2, &LIMITS, 2).is_err();
    assert!(error(
        &[&patched(7, 0)[..sof + 8], &[0][..], &bytes[sof + 9..]].concat()
    )); // width 0
    assert!(unsupported(
        &[&patched(5, 0)[..sof + 6], &[0][..], &bytes[sof + 7..]].concat()
    )); // height 0
    assert!(unsupported(&patched(4, 12))); // 12-bit
    assert!(unsupported(&patched(9, 4))); // 4 components
    assert!(unsupported(&patched(9, 2))); // 2 components
    assert!(unsupported(&patched(11, 0x31))); // sampling 3
    assert!(unsupported(&patched(1, 0xC2))); // progressive
    assert!(unsupported(&patched(1, 0xC9))); // arithmetic
    assert!(error(&[]));
    assert!(error(b"not a jpeg"));
    assert!(error(&bytes[..sof]));
    let mut progressive = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut progressive, 90);
    encoder.set_progressive(true);
    encoder
        .encode(&[128u8; 48 * 32 * 3], 48, 32, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    assert!(unsupported(&progressive));
}

#[test]
fn source_limit_is_kept() {
    let bytes = splittable_jpeg();
    let limits = Limits {
        max_source_bytes: bytes.len() as u64 - 1,
        ..LIMITS
    };
    assert!(matches!(
        decode_slice(&bytes, 2, &limits, 2),
        Err(Error::TooLarge(_))
    ));
    let mut reader = chunked(&bytes, 1000);
    assert!(matches!(
        decode_reader(&mut reader, 2, &limits, 2),
        Err(Error::TooLarge(_))
    ));
    assert!(reader.pos as u64 <= limits.max_source_bytes);
    let exact = Limits {
        max_source_bytes: bytes.len() as u64,
        ..LIMITS
    };
    assert!(decode_reader(chunked(&bytes, 1000), 2, &exact, 2).is_ok());
}

#[test]
fn bad_scale_is_an_invalid_request() {
    assert!(matches!(
        decode_slice(&small_jpeg(), 3, &LIMITS, 2),
        Err(Error::InvalidRequest(_))
    ));
}

#[test]
fn full_size_near_the_pixel_limit_is_left_to_jpeg_decoder() {
    let bytes = small_jpeg();
    let tight = Limits {
        max_pixels: 123 * 77,
        ..LIMITS
    };
    assert!(matches!(
        decode_slice(&bytes, 8, &tight, 2),
        Ok(Outcome::Unsupported(_))
    ));
    assert!(matches!(
        decode_slice(&bytes, 2, &tight, 2),
        Ok(Outcome::Decoded(_))
    ));
}

#[test]
fn corrupt_headers_never_panic() {
    let bytes = small_jpeg();
    let header_end = segment(&bytes, 0xDA) + 14;
    let mut rng = rand::rngs::StdRng::seed_from_u64(10);
    for _ in 0..400 {
        let mut bad = bytes.clone();
        for _ in 0..rng.gen_range(1..4) {
            let at = rng.gen_range(2..header_end);
            bad[at] = rng.gen();
        }
        // Header damage may make 1-thread, 2-thread and reader decodes fail differently
        // only in how they fail, never by panicking.
        let _ = decode_slice(&bad, 2, &LIMITS, 1);
        let _ = decode_slice(&bad, 4, &LIMITS, 2);
        let _ = decode_reader(chunked(&bad, 7), 2, &LIMITS, 2);
    }
}

#[test]
fn same_pixels_when_speculation_fails() {
    let bytes = splittable_jpeg();
    let one = decoded(decode_slice(&bytes, 2, &LIMITS, 1).unwrap());
    for byte in [1, bytes.len() / 3, bytes.len() / 2, bytes.len() - 100] {
        let options = Options {
            threads: 2,
            split: SplitAt::ByteWithoutSync(byte),
        };
        let (outcome, trace) = decode_slice_traced(&bytes, 2, &LIMITS, options).unwrap();
        assert!(decoded(outcome) == one, "split at {byte}");
        assert_eq!(
            (trace.synced_after, trace.second_thread_mcus),
            (None, 0),
            "{trace:?}"
        );
    }
}

/// The OS refusing the second threads (entropy split at a guessed byte or at a restart
/// marker, the IDCT bands, the colour rows): the same pixels from one thread, no error.
#[test]
fn same_pixels_when_no_second_thread_can_be_had() {
    let plain = splittable_jpeg();
    let restarts = jpeg_encoder_jpeg(
        &noise_image(1001, 757, 50.0, 6),
        jpeg_encoder::SamplingFactor::F_2_2,
        5,
        false,
    );
    for (name, bytes) in [("plain", &plain), ("restart markers", &restarts)] {
        for eighths in [2, 8] {
            let one = decoded(decode_slice(bytes, eighths, &LIMITS, 1).unwrap());
            let middle = bytes.len() / 2;
            let (two, trace) = with_split(bytes, eighths, middle);
            assert!(two == one, "{name}, {eighths}/8, two threads: {trace:?}");
            assert!(
                trace.second_thread_mcus > 0,
                "{name}: no split to refuse: {trace:?}"
            );
            let (refused, trace) =
                threads::with_spawns_refused(|| with_split(bytes, eighths, middle));
            assert!(
                refused == one,
                "{name}, {eighths}/8, spawns refused: {trace:?}"
            );
            assert_eq!(trace.second_thread_mcus, 0, "{name}: {trace:?}");
        }
    }
}
