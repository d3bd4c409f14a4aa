//! Test images built in the tests: encoded with the `image` crate, EXIF blocks and
//! hostile headers written byte by byte. Plus a per-thread peak-allocation meter.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Cursor;

use image::codecs::gif::{GifEncoder, Repeat};
use image::codecs::jpeg::JpegEncoder;
use image::{Delay, Frame, ImageEncoder, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use mr_thumbnail::{Limits, Method, Request};

/// The defaults of `thumbnails` in the config.
pub const LIMITS: Limits = Limits {
    max_source_bytes: 20 * 1024 * 1024,
    max_pixels: 32_000_000,
};

pub fn request(width: u32, height: u32, method: Method) -> Request {
    Request {
        width,
        height,
        method,
        animated: false,
    }
}

/// A smooth gradient with some structure, like a photo (cheap to encode).
pub fn photo(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb([
            (x * 255 / width.max(1)) as u8,
            (y * 255 / height.max(1)) as u8,
            ((x ^ y) & 0xFF) as u8,
        ])
    })
}

pub fn jpeg(image: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 90)
        .write_image(
            image,
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

pub fn encode(image: &image::DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// An RGBA image: opaque on the left half, fully transparent on the right half.
pub fn half_transparent(width: u32, height: u32) -> RgbaImage {
    RgbaImage::from_fn(width, height, |x, _| {
        if x < width / 2 {
            Rgba([200, 30, 30, 255])
        } else {
            Rgba([0, 0, 0, 0])
        }
    })
}

/// An animated GIF of `frames` frames, each a different colour.
pub fn animated_gif(width: u32, height: u32, frames: u8) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut out);
        encoder.set_repeat(Repeat::Infinite).unwrap();
        for i in 0..frames {
            let image = RgbaImage::from_pixel(
                width,
                height,
                Rgba([i.wrapping_mul(40), 255 - i.wrapping_mul(40), i, 255]),
            );
            encoder
                .encode_frame(Frame::from_parts(
                    image,
                    0,
                    0,
                    Delay::from_numer_denom_ms(100, 1),
                ))
                .unwrap();
        }
    }
    out
}

/// Counts the frames of a GIF.
pub fn gif_frames(bytes: &[u8]) -> usize {
    use image::AnimationDecoder;
    image::codecs::gif::GifDecoder::new(Cursor::new(bytes))
        .unwrap()
        .into_frames()
        .count()
}

/// A little-endian TIFF/EXIF block: IFD0 with Orientation (when given) and a pointer to
/// a GPS IFD holding GPSVersionID and GPSLatitudeRef "N" (when `gps`).
pub fn exif_block(orientation: Option<u16>, gps: bool) -> Vec<u8> {
    let mut entries: Vec<[u8; 12]> = Vec::new();
    let entry = |tag: u16, kind: u16, count: u32, value: [u8; 4]| {
        let mut e = [0u8; 12];
        e[0..2].copy_from_slice(&tag.to_le_bytes());
        e[2..4].copy_from_slice(&kind.to_le_bytes());
        e[4..8].copy_from_slice(&count.to_le_bytes());
        e[8..12].copy_from_slice(&value);
        e
    };
    if let Some(o) = orientation {
        let v = o.to_le_bytes();
        entries.push(entry(0x0112, 3, 1, [v[0], v[1], 0, 0]));
    }
    let ifd0_len = 2 + 12 * (entries.len() + usize::from(gps)) + 4;
    let gps_offset = (8 + ifd0_len) as u32;
    if gps {
        entries.push(entry(0x8825, 4, 1, gps_offset.to_le_bytes()));
    }
    let mut tiff = b"II\x2A\x00\x08\x00\x00\x00".to_vec();
    tiff.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for e in &entries {
        tiff.extend_from_slice(e);
    }
    tiff.extend_from_slice(&0u32.to_le_bytes());
    if gps {
        tiff.extend_from_slice(&2u16.to_le_bytes());
        tiff.extend_from_slice(&entry(0x0000, 1, 4, [2, 3, 0, 0]));
        tiff.extend_from_slice(&entry(0x0001, 2, 2, *b"N\0\0\0"));
        tiff.extend_from_slice(&0u32.to_le_bytes());
    }
    tiff
}

/// Inserts an APP1 "Exif" segment holding `tiff` right after the JPEG's SOI marker.
pub fn with_exif(jpeg: &[u8], tiff: &[u8]) -> Vec<u8> {
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(tiff);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A PNG declaring `width` × `height` RGBA pixels whose IDAT holds a few bytes only.
pub fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    // A zlib stream of a few zero bytes: far too short, but a decoder would only find
    // out after allocating the image.
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9C, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A GIF whose logical screen and single image declare `width` × `height`.
pub fn gif_bomb(width: u16, height: u16) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&[0x80, 0, 0]); // global colour table of 2 entries
    out.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    out.push(0x2C); // image descriptor
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.push(0);
    out.extend_from_slice(&[2, 2, 0x4C, 0x01, 0]); // LZW min code size, a tiny block
    out.push(0x3B);
    out
}

/// A real 16×16 JPEG whose frame header (SOF0) is patched to declare `width` ×
/// `height`: valid tables and a tiny scan, a header promising gigabytes.
pub fn jpeg_bomb(width: u16, height: u16) -> Vec<u8> {
    let mut out = jpeg(&photo(16, 16));
    let sof = out
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline JPEG has SOF0");
    out[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    out[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The global allocator of this test binary: `System`, recording per thread the largest
/// single allocation since [`reset_peak`].
pub struct PeakAlloc;

thread_local! {
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = PEAK.try_with(|p| p.set(p.get().max(layout.size())));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = PEAK.try_with(|p| p.set(p.get().max(layout.size())));
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = PEAK.try_with(|p| p.set(p.get().max(new_size)));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

pub fn reset_peak() {
    PEAK.with(|p| p.set(0));
}

/// The largest single allocation on this thread since [`reset_peak`].
pub fn peak() -> usize {
    PEAK.with(|p| p.get())
}

/// An animated WebP of `frames` frames of `width` × `height`, each a different colour:
/// VP8X + ANIM + one ANMF per frame around the lossless VP8L bitstream the `image`
/// crate writes for a still.
pub fn animated_webp(width: u32, height: u32, frames: u8) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(kind);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(0);
        }
    }
    let u24 = |v: u32| [v as u8, (v >> 8) as u8, (v >> 16) as u8];
    let mut body = b"WEBP".to_vec();
    let mut vp8x = vec![0x02, 0, 0, 0]; // animation flag
    vp8x.extend_from_slice(&u24(width - 1));
    vp8x.extend_from_slice(&u24(height - 1));
    chunk(&mut body, b"VP8X", &vp8x);
    chunk(&mut body, b"ANIM", &[255, 255, 255, 255, 0, 0]);
    for i in 0..frames {
        let still = RgbImage::from_pixel(width, height, Rgb([i.wrapping_mul(60), 100, 200]));
        let still = encode(&image::DynamicImage::ImageRgb8(still), ImageFormat::WebP);
        assert_eq!(
            &still[12..16],
            b"VP8L",
            "image wrote a simple lossless WebP"
        );
        let mut anmf = Vec::new();
        anmf.extend_from_slice(&u24(0));
        anmf.extend_from_slice(&u24(0));
        anmf.extend_from_slice(&u24(width - 1));
        anmf.extend_from_slice(&u24(height - 1));
        anmf.extend_from_slice(&u24(100)); // duration, ms
        anmf.push(0x02); // do not blend, do not dispose
        anmf.extend_from_slice(&still[12..]);
        chunk(&mut body, b"ANMF", &anmf);
    }
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}
