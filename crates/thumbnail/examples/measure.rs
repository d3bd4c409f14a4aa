//! Times a 12-megapixel JPEG thumbnailed to 800×600 and 96×96: this crate against the
//! plain `image` crate. `cargo run --release -p mr-thumbnail --example measure`.
//! Wall-clock medians; jpeg-decoder decodes colour components on up to three threads.

use std::time::{Duration, Instant};

use fast_image_resize as fr;
use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{ImageEncoder, Rgb, RgbImage};
use mr_thumbnail::{thumbnail, Limits, Method, Request};

const RUNS: usize = 7;

fn median(mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[RUNS / 2]
}

fn encode_jpeg(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality)
        .write_image(
            image,
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

fn main() {
    // Smooth gradients plus a little noise: closer to a photo than flat colour.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let source = RgbImage::from_fn(4000, 3000, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = (seed >> 60) as u32;
        Rgb([
            (x * 255 / 4000 + n) as u8,
            (y * 255 / 3000 + n) as u8,
            ((x + y) * 255 / 7000) as u8,
        ])
    });
    let jpeg = encode_jpeg(&source, 90);
    println!("source: 4000×3000 JPEG, {} bytes", jpeg.len());
    let limits = Limits {
        max_source_bytes: 20 * 1024 * 1024,
        max_pixels: 32_000_000,
    };

    let t = median(|| {
        image::load_from_memory(&jpeg).unwrap();
    });
    println!("decode only, image (zune-jpeg), full size: {t:?}");
    let t = median(|| {
        jpeg_decoder::Decoder::new(&jpeg[..]).decode().unwrap();
    });
    println!("decode only, jpeg-decoder, full size:      {t:?}");

    for (w, h) in [(800u32, 600u32), (96, 96)] {
        println!("-- {w}×{h}, decode + resize + JPEG q85 encode");
        let t = median(|| {
            let img = image::load_from_memory(&jpeg).unwrap();
            let out = img.resize(w, h, FilterType::Lanczos3).to_rgb8();
            encode_jpeg(&out, 85);
        });
        println!("image decode + image resize Lanczos3:          {t:?}");
        let t = median(|| {
            let img = image::load_from_memory(&jpeg).unwrap();
            let out = img.thumbnail(w, h).to_rgb8();
            encode_jpeg(&out, 85);
        });
        println!("image decode + image thumbnail (box filter):   {t:?}");
        let t = median(|| {
            let img = image::load_from_memory(&jpeg).unwrap().to_rgb8();
            let src =
                fr::images::ImageRef::new(4000, 3000, img.as_raw(), fr::PixelType::U8x3).unwrap();
            let mut dst = fr::images::Image::new(w, w * 3 / 4, fr::PixelType::U8x3);
            let opts = fr::ResizeOptions::new()
                .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3));
            fr::Resizer::new().resize(&src, &mut dst, &opts).unwrap();
            let out = RgbImage::from_raw(w, w * 3 / 4, dst.into_vec()).unwrap();
            encode_jpeg(&out, 85);
        });
        println!("image decode + fast_image_resize Lanczos3:     {t:?}");
        let request = Request {
            width: w,
            height: h,
            method: Method::Scale,
            animated: false,
        };
        let t = median(|| {
            thumbnail(&jpeg, &request, &limits).unwrap();
        });
        println!("mr_thumbnail (DCT-scaled decode + fir):        {t:?}");
    }
}
