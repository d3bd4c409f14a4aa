//! Tests of the split JPEG decoder: pixels against jpeg-decoder, determinism across
//! threads, split points and reader chunking, and hostile input.

use std::io::{Cursor as IoCursor, Read};

use image::RgbImage;
use rand::{Rng, RngCore, SeedableRng};

use super::*;

const LIMITS: Limits = Limits { max_source_bytes: 64 << 20, max_pixels: 100_000_000 };

/// The federation bench's test photo: gradients, rings and per-pixel noise.
pub(super) fn noise_image(width: u32, height: u32, amplitude: f32, seed: u64) -> RgbImage {
    let mut noise = vec![0u8; (width * height * 3) as usize];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut noise);
    let mut img = RgbImage::new(width, height);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let i = ((y * width + x) * 3) as usize;
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let (dx, dy) = (fx - 0.5, fy - 0.5);
        let ring = ((dx * dx + dy * dy).sqrt() * 60.0 + seed as f32).sin() * 40.0;
        let base = [fx * 200.0 + ring, fy * 200.0 - ring, (fx + fy) * 100.0 + ring * 0.5];
        for c in 0..3 {
            px[c] = (base[c] + 28.0 + noise[i + c] as f32 * amplitude / 255.0).clamp(0.0, 255.0)
                as u8;
        }
    }
    img
}

/// Baseline 4:4:4, no restart markers: the `image` crate's encoder at quality 90.
fn image_crate_jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(img).unwrap();
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
        encoder.encode(&luma, w, h, jpeg_encoder::ColorType::Luma).unwrap();
    } else {
        encoder.encode(img.as_raw(), w, h, jpeg_encoder::ColorType::Rgb).unwrap();
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
    let sum: u64 = a.iter().zip(b).map(|(&x, &y)| u64::from(x.abs_diff(y))).sum();
    let max = a.iter().zip(b).map(|(&x, &y)| x.abs_diff(y)).max().unwrap_or(0);
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
        assert!(mean < 1.5 && max < 16, "{name} at {eighths}/8: mean {mean}, max {max}");
        worst = (worst.0.max(mean), worst.1.max(max));
    }
    worst
}

#[test]
fn matches_jpeg_decoder_444_noise() {
    assert_close(&image_crate_jpeg(&noise_image(640, 480, 50.0, 1)), "4:4:4 noise");
}

#[test]
fn matches_jpeg_decoder_subsampled_odd_sizes() {
    use jpeg_encoder::SamplingFactor as S;
    let img = noise_image(1001, 757, 20.0, 2);
    for (sampling, name) in [(S::F_2_2, "4:2:0"), (S::F_2_1, "4:2:2"), (S::F_1_2, "4:4:0")] {
        assert_close(&jpeg_encoder_jpeg(&img, sampling, 0, false), name);
    }
}

#[test]
fn matches_jpeg_decoder_grayscale() {
    let img = noise_image(1001, 757, 30.0, 3);
    assert_close(&jpeg_encoder_jpeg(&img, jpeg_encoder::SamplingFactor::F_1_1, 0, true), "gray");
}

#[test]
fn matches_jpeg_decoder_with_restart_markers() {
    let img = noise_image(1001, 757, 30.0, 4);
    let bytes = jpeg_encoder_jpeg(&img, jpeg_encoder::SamplingFactor::F_2_2, 7, false);
    assert_close(&bytes, "4:2:0 restart 7");
    let (_, trace) = decode_slice_traced(&bytes, 2, &LIMITS, Options::threads(2)).unwrap();
    assert!(trace.at_restart && trace.second_thread_mcus > 0, "{trace:?}");
}
