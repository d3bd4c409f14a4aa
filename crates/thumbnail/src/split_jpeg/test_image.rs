//! The photo the decoder's tests and its bench decode: the federation bench's 12 MP test
//! image (integration/src/bin/federation-bench/thumbnails.rs), at any size and noise.

use image::RgbImage;
use rand::{RngCore, SeedableRng};

/// Gradients, rings and per-pixel noise of `amplitude` (0–255) from `seed`.
pub(crate) fn noise_image(width: u32, height: u32, amplitude: f32, seed: u64) -> RgbImage {
    let mut noise = vec![0u8; (width * height * 3) as usize];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut noise);
    let mut img = RgbImage::new(width, height);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let i = ((y * width + x) * 3) as usize;
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let (dx, dy) = (fx - 0.5, fy - 0.5);
        let ring = ((dx * dx + dy * dy).sqrt() * 60.0 + seed as f32).sin() * 40.0;
        let base = [
            fx * 200.0 + ring,
            fy * 200.0 - ring,
            (fx + fy) * 100.0 + ring * 0.5,
        ];
        for c in 0..3 {
            px[c] =
                (base[c] + 28.0 + noise[i + c] as f32 * amplitude / 255.0).clamp(0.0, 255.0) as u8;
        }
    }
    img
}
