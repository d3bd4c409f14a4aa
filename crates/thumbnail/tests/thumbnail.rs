//! The thumbnail core end to end: bytes in, encoded thumbnail out, decoded again to check.

mod common;

use common::*;
use image::{DynamicImage, GenericImageView, ImageFormat};
use mr_thumbnail::{
    probe, shared_decodes, thumbnail, thumbnails, thumbnails_each, Error, Format, Method, Request,
    Thumbnail,
};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

fn decode(t: &Thumbnail) -> DynamicImage {
    let format = match t.content_type {
        "image/jpeg" => ImageFormat::Jpeg,
        "image/png" => ImageFormat::Png,
        "image/gif" => ImageFormat::Gif,
        other => panic!("unexpected content type {other}"),
    };
    let image = image::load_from_memory_with_format(&t.bytes, format).unwrap();
    assert_eq!((image.width(), image.height()), (t.width, t.height));
    image
}

fn dims(bytes: &[u8], w: u32, h: u32, method: Method) -> (u32, u32) {
    let t = thumbnail(bytes, &request(w, h, method), &LIMITS).unwrap();
    decode(&t);
    (t.width, t.height)
}

#[test]
fn jpeg_gives_jpeg_of_the_planned_size() {
    let landscape = jpeg(&photo(1200, 900));
    let portrait = jpeg(&photo(900, 1200));
    let square = jpeg(&photo(700, 700));
    #[rustfmt::skip]
    let table = [
        (&landscape, (32, 32, Method::Crop), (32, 32)),
        (&landscape, (96, 96, Method::Crop), (96, 96)),
        (&landscape, (320, 240, Method::Scale), (320, 240)),
        (&landscape, (640, 480, Method::Scale), (640, 480)),
        (&landscape, (800, 600, Method::Scale), (800, 600)),
        (&landscape, (96, 96, Method::Scale), (96, 72)),
        (&portrait, (32, 32, Method::Crop), (32, 32)),
        (&portrait, (96, 96, Method::Crop), (96, 96)),
        (&portrait, (320, 240, Method::Scale), (180, 240)),
        (&portrait, (800, 600, Method::Scale), (450, 600)),
        (&portrait, (800, 600, Method::Crop), (800, 600)),
        (&square, (320, 240, Method::Scale), (240, 240)),
        (&square, (640, 480, Method::Crop), (640, 480)),
        (&square, (800, 600, Method::Crop), (700, 525)),
        (&square, (1000, 1000, Method::Scale), (700, 700)),
        (&landscape, (200, 100, Method::Scale), (133, 100)),
        (&landscape, (2000, 1500, Method::Scale), (1200, 900)),
    ];
    for (bytes, (w, h, m), expect) in table {
        let t = thumbnail(bytes, &request(w, h, m), &LIMITS).unwrap();
        assert_eq!(t.content_type, "image/jpeg");
        assert!(!t.animated);
        decode(&t);
        assert_eq!((t.width, t.height), expect, "asked {w}×{h} {m:?}");
    }
}

#[test]
fn never_upscaled() {
    let png = |w, h| encode(&DynamicImage::ImageRgb8(photo(w, h)), ImageFormat::Png);
    assert_eq!(dims(&png(20, 20), 96, 96, Method::Crop), (20, 20));
    assert_eq!(dims(&png(80, 200), 96, 96, Method::Crop), (80, 80));
    assert_eq!(dims(&png(80, 200), 96, 96, Method::Scale), (38, 96));
    assert_eq!(dims(&png(20, 20), 320, 240, Method::Scale), (20, 20));
    let (w, h) = dims(&jpeg(&photo(1000, 500)), 800, 600, Method::Crop);
    assert!(w.abs_diff(667) <= 1 && h == 500, "{w}×{h}");
}

#[test]
fn png_with_alpha_gives_png_with_alpha() {
    let source = encode(
        &DynamicImage::ImageRgba8(half_transparent(400, 200)),
        ImageFormat::Png,
    );
    let t = thumbnail(&source, &request(100, 100, Method::Scale), &LIMITS).unwrap();
    assert_eq!(t.content_type, "image/png");
    assert_eq!((t.width, t.height), (100, 50));
    let image = decode(&t);
    assert!(image.color().has_alpha());
    assert_eq!(image.get_pixel(10, 25).0, [200, 30, 30, 255]);
    assert_eq!(image.get_pixel(90, 25).0[3], 0);
}

#[test]
fn other_pixel_layouts() {
    let gray = DynamicImage::ImageRgb8(photo(300, 200)).to_luma8();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new(&mut out)
        .encode_image(&gray)
        .unwrap();
    let t = thumbnail(&out, &request(96, 96, Method::Crop), &LIMITS).unwrap();
    assert_eq!((t.content_type, t.width, t.height), ("image/jpeg", 96, 96));
    assert_eq!(
        decode(&t).color(),
        image::ColorType::L8,
        "a gray source, a gray JPEG"
    );

    let la = DynamicImage::ImageRgba8(half_transparent(300, 200)).to_luma_alpha8();
    let rgba16 = DynamicImage::ImageRgba8(half_transparent(300, 200)).to_rgba16();
    for source in [
        encode(&DynamicImage::ImageLumaA8(la), ImageFormat::Png),
        encode(&DynamicImage::ImageRgba16(rgba16), ImageFormat::Png),
    ] {
        let t = thumbnail(&source, &request(150, 150, Method::Scale), &LIMITS).unwrap();
        assert_eq!((t.content_type, t.width, t.height), ("image/png", 150, 100));
        let image = decode(&t);
        assert!(image.color().has_alpha());
        assert_eq!(image.to_rgba8().get_pixel(140, 50).0[3], 0);
    }
}

#[test]
fn gif_and_webp_give_png() {
    let rgba = DynamicImage::ImageRgba8(half_transparent(300, 150));
    for format in [ImageFormat::Gif, ImageFormat::WebP] {
        let source = encode(&rgba, format);
        let t = thumbnail(&source, &request(96, 96, Method::Crop), &LIMITS).unwrap();
        assert_eq!(t.content_type, "image/png", "{format:?}");
        assert_eq!((t.width, t.height), (96, 96));
        assert!(decode(&t).color().has_alpha());
    }
}

#[test]
fn animated_gif_only_when_asked() {
    let source = animated_gif(200, 100, 4);
    let mut req = Request {
        animated: true,
        ..request(96, 96, Method::Scale)
    };
    let t = thumbnail(&source, &req, &LIMITS).unwrap();
    assert_eq!(t.content_type, "image/gif");
    assert!(t.animated);
    assert_eq!((t.width, t.height), (96, 48));
    assert_eq!(gif_frames(&t.bytes), 4);
    decode(&t);

    req.animated = false;
    let t = thumbnail(&source, &req, &LIMITS).unwrap();
    assert_eq!(t.content_type, "image/png");
    assert!(!t.animated);
    assert_eq!((t.width, t.height), (96, 48));

    // A still GIF asked animated stays a still.
    let still = encode(&DynamicImage::ImageRgb8(photo(50, 50)), ImageFormat::Gif);
    req.animated = true;
    let t = thumbnail(&still, &req, &LIMITS).unwrap();
    assert_eq!(t.content_type, "image/png");
    assert!(!t.animated);
}

#[test]
fn animated_webp_gives_animated_gif_only_when_asked() {
    let source = animated_webp(120, 60, 3);
    let mut req = Request {
        animated: true,
        ..request(96, 96, Method::Crop)
    };
    let t = thumbnail(&source, &req, &LIMITS).unwrap();
    assert_eq!(t.content_type, "image/gif");
    assert!(t.animated);
    assert_eq!((t.width, t.height), (60, 60));
    assert_eq!(gif_frames(&t.bytes), 3);

    req.animated = false;
    let t = thumbnail(&source, &req, &LIMITS).unwrap();
    assert_eq!(t.content_type, "image/png");
    assert!(!t.animated);
    assert_eq!((t.width, t.height), (60, 60));
    decode(&t);
}

#[test]
fn animated_frames_are_bounded() {
    let source = animated_gif(16, 16, (mr_thumbnail::MAX_ANIMATED_FRAMES + 5) as u8);
    let req = Request {
        animated: true,
        ..request(8, 8, Method::Crop)
    };
    let t = thumbnail(&source, &req, &LIMITS).unwrap();
    assert_eq!(gif_frames(&t.bytes), mr_thumbnail::MAX_ANIMATED_FRAMES);
}

#[test]
fn exif_orientation_6_gives_portrait() {
    // Stored 600×300: left half red, right half blue. Orientation 6 turns it a quarter
    // clockwise for display: 300×600 with red on top.
    let stored = image::RgbImage::from_fn(600, 300, |x, _| {
        if x < 300 {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([0, 0, 255])
        }
    });
    let source = with_exif(&jpeg(&stored), &exif_block(Some(6), false));
    let info = probe(&source, &LIMITS).unwrap();
    assert_eq!(
        (info.format, info.width, info.height),
        (Format::Jpeg, 300, 600)
    );
    for (w, h, m, expect) in [
        (96, 96, Method::Scale, (48, 96)),
        (800, 600, Method::Scale, (300, 600)),
        (32, 32, Method::Crop, (32, 32)),
    ] {
        let t = thumbnail(&source, &request(w, h, m), &LIMITS).unwrap();
        assert_eq!((t.width, t.height), expect);
        let image = decode(&t).to_rgb8();
        let top = image.get_pixel(t.width / 2, t.height / 8).0;
        let bottom = image.get_pixel(t.width / 2, t.height * 7 / 8).0;
        assert!(top[0] > 200 && top[2] < 60, "top {top:?}");
        assert!(bottom[2] > 200 && bottom[0] < 60, "bottom {bottom:?}");
    }
}

#[test]
fn exif_and_gps_are_never_copied() {
    let source = with_exif(&jpeg(&photo(640, 480)), &exif_block(Some(1), true));
    // The source really carries the GPS IFD.
    let mut d = jpeg_decoder::Decoder::new(&source[..]);
    d.decode().unwrap();
    assert!(d
        .exif_data()
        .is_some_and(|e| e.windows(2).any(|w| w == [0x25, 0x88])));

    for (w, h, m) in [(96, 96, Method::Crop), (640, 480, Method::Scale)] {
        let t = thumbnail(&source, &request(w, h, m), &LIMITS).unwrap();
        let mut d = jpeg_decoder::Decoder::new(&t.bytes[..]);
        d.decode().unwrap();
        assert!(d.exif_data().is_none());
        assert!(!t.bytes.windows(6).any(|w| w == b"Exif\0\0"));
        // No APP1 (EXIF/XMP) segment at all.
        assert!(!t.bytes.windows(2).any(|w| w == [0xFF, 0xE1]));
    }
}

#[test]
fn same_input_same_bytes() {
    let sources = [
        jpeg(&photo(900, 700)),
        encode(
            &DynamicImage::ImageRgba8(half_transparent(300, 200)),
            ImageFormat::Png,
        ),
        animated_gif(120, 80, 3),
    ];
    for source in &sources {
        for animated in [false, true] {
            let req = Request {
                animated,
                ..request(96, 96, Method::Crop)
            };
            let a = thumbnail(source, &req, &LIMITS).unwrap();
            let b = thumbnail(source, &req, &LIMITS).unwrap();
            assert_eq!(a, b);
        }
    }
}

/// Synapse's default sizes, as media-repo pre-generates them.
fn default_sizes() -> Vec<Request> {
    vec![
        request(32, 32, Method::Crop),
        request(96, 96, Method::Crop),
        request(320, 240, Method::Scale),
        request(640, 480, Method::Scale),
        request(800, 600, Method::Scale),
    ]
}

#[test]
fn batch_gives_the_bytes_of_single_thumbnails() {
    let sources = [
        // 32 and 96 crop at 1/4, 320×240 at 1/2, the larger scaled sizes at full size.
        jpeg(&photo(1200, 900)),
        with_exif(&jpeg(&photo(900, 600)), &exif_block(Some(6), false)),
        encode(
            &DynamicImage::ImageRgba8(half_transparent(500, 350)),
            ImageFormat::Png,
        ),
        encode(&DynamicImage::ImageRgb8(photo(450, 300)), ImageFormat::WebP),
        animated_gif(300, 200, 3),
    ];
    let mut requests = default_sizes();
    requests.push(Request {
        animated: true,
        ..request(96, 96, Method::Crop)
    });
    for source in &sources {
        let batch = thumbnails(source, &requests, &LIMITS).unwrap();
        assert_eq!(batch.len(), requests.len());
        for (made, req) in batch.iter().zip(&requests) {
            assert_eq!(made, &thumbnail(source, req, &LIMITS).unwrap(), "{req:?}");
        }
        // Spread over workers group by group: the same bytes again.
        for group in shared_decodes(source, &requests, &LIMITS).unwrap() {
            let asked: Vec<Request> = group.iter().map(|&i| requests[i]).collect();
            let made = thumbnails(source, &asked, &LIMITS).unwrap();
            for (t, &i) in made.iter().zip(&group) {
                assert_eq!(t, &batch[i]);
            }
        }
    }
}

#[test]
fn sizes_someone_waits_for_come_first_with_the_same_bytes() {
    let requests = default_sizes();
    let last = requests.len() - 1;
    let sources = [
        jpeg(&photo(1200, 900)),
        encode(
            &DynamicImage::ImageRgba8(half_transparent(500, 350)),
            ImageFormat::Png,
        ),
    ];
    for source in &sources {
        let batch = thumbnails(source, &requests, &LIMITS).unwrap();
        let mut order = Vec::new();
        thumbnails_each(
            source,
            &requests,
            &LIMITS,
            |i| i == last,
            |i, made| {
                assert_eq!(made, batch[i], "{:?}", requests[i]);
                order.push(i);
            },
        )
        .unwrap();
        assert_eq!(order[0], last, "the size waited for is made first");
        order.sort_unstable();
        assert_eq!(order, (0..requests.len()).collect::<Vec<_>>());
    }
}

#[test]
fn shared_decodes_group_jpegs_by_idct_scale_largest_first() {
    let requests = default_sizes();
    // 4000×3000: every default size at 1/4, one decode.
    let big = jpeg(&photo(4000, 3000));
    assert_eq!(
        shared_decodes(&big, &requests, &LIMITS).unwrap(),
        vec![vec![0, 1, 2, 3, 4]]
    );
    // 2000×1500: 32 and 96 crop and 320×240 at 1/4, 640×480 and 800×600 at 1/2.
    let medium = jpeg(&photo(2000, 1500));
    assert_eq!(
        shared_decodes(&medium, &requests, &LIMITS).unwrap(),
        vec![vec![3, 4], vec![0, 1, 2]]
    );
    // 1200×900: 32 and 96 crop at 1/4, 320×240 at 1/2, 640×480 and 800×600 at full size.
    let small = jpeg(&photo(1200, 900));
    assert_eq!(
        shared_decodes(&small, &requests, &LIMITS).unwrap(),
        vec![vec![3, 4], vec![2], vec![0, 1]]
    );
    // Any other still: one decode for every size.
    let png = encode(&DynamicImage::ImageRgb8(photo(400, 300)), ImageFormat::Png);
    assert_eq!(
        shared_decodes(&png, &requests, &LIMITS).unwrap(),
        vec![vec![0, 1, 2, 3, 4]]
    );
    // An animated request on an animated GIF decodes on its own.
    let gif = animated_gif(120, 80, 3);
    let animated = Request {
        animated: true,
        ..request(32, 32, Method::Crop)
    };
    assert_eq!(
        shared_decodes(&gif, &[requests[0], animated, requests[1]], &LIMITS).unwrap(),
        vec![vec![0, 2], vec![1]]
    );
}

#[test]
fn declared_50000_squared_refused_without_allocating() {
    let png = png_bomb(50_000, 50_000);
    let gif = gif_bomb(50_000, 50_000);
    let jpeg = jpeg_bomb(50_000, 50_000);
    for bomb in [&png, &gif, &jpeg] {
        assert!(bomb.len() < 1024, "{} bytes", bomb.len());
        reset_peak();
        let probed = probe(bomb, &LIMITS);
        let rendered = thumbnail(bomb, &request(96, 96, Method::Crop), &LIMITS);
        // The largest single allocation is tiny next to the 10 GB the header asks for.
        assert!(peak() < 1024 * 1024, "peak allocation {} bytes", peak());
        assert!(matches!(probed, Err(Error::TooLarge(_))), "{probed:?}");
        assert!(matches!(rendered, Err(Error::TooLarge(_))), "{rendered:?}");
    }
}

#[test]
fn over_max_source_bytes_is_too_large() {
    let source = jpeg(&photo(64, 64));
    let limits = mr_thumbnail::Limits {
        max_source_bytes: source.len() as u64 - 1,
        ..LIMITS
    };
    let r = thumbnail(&source, &request(32, 32, Method::Crop), &limits);
    assert!(matches!(r, Err(Error::TooLarge(_))), "{r:?}");
    let limits = mr_thumbnail::Limits {
        max_pixels: 64 * 64 - 1,
        ..LIMITS
    };
    let r = thumbnail(&source, &request(32, 32, Method::Crop), &limits);
    assert!(matches!(r, Err(Error::TooLarge(_))), "{r:?}");
}

#[test]
fn not_images_are_refused() {
    let req = request(96, 96, Method::Crop);
    for text in [&b"hello, this is not an image\n"[..], b"", b"\xFF\xD8"] {
        let r = thumbnail(text, &req, &LIMITS);
        assert!(matches!(r, Err(Error::NotAnImage)), "{r:?}");
    }
    let svg = br#"<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" width="50000" height="50000"><rect width="1" height="1"/></svg>"#;
    let r = thumbnail(svg, &req, &LIMITS);
    assert!(matches!(r, Err(Error::Unsupported("svg"))), "{r:?}");
    let r = thumbnail(b"  <svg viewBox='0 0 1 1'/>", &req, &LIMITS);
    assert!(matches!(r, Err(Error::Unsupported("svg"))), "{r:?}");
    let bmp = encode(&DynamicImage::ImageRgb8(photo(8, 8)), ImageFormat::Bmp);
    let r = thumbnail(&bmp, &req, &LIMITS);
    assert!(matches!(r, Err(Error::Unsupported("bmp"))), "{r:?}");
}

#[test]
fn zero_size_request_is_invalid() {
    let source = jpeg(&photo(64, 64));
    let r = thumbnail(&source, &request(0, 32, Method::Scale), &LIMITS);
    assert!(matches!(r, Err(Error::InvalidRequest(_))), "{r:?}");
}

#[test]
fn truncated_images_are_errors_not_panics() {
    let sources = [
        jpeg(&photo(640, 480)),
        encode(&DynamicImage::ImageRgb8(photo(640, 480)), ImageFormat::Png),
        encode(&DynamicImage::ImageRgb8(photo(64, 48)), ImageFormat::Gif),
        encode(&DynamicImage::ImageRgb8(photo(64, 48)), ImageFormat::WebP),
    ];
    for source in &sources {
        for cut in [source.len() / 2, 40, 12] {
            for animated in [false, true] {
                let req = Request {
                    animated,
                    ..request(96, 96, Method::Crop)
                };
                let r = thumbnail(&source[..cut], &req, &LIMITS);
                assert!(
                    matches!(r, Err(Error::Undecodable(_) | Error::NotAnImage)),
                    "cut at {cut} of {}: {r:?}",
                    source.len()
                );
            }
        }
    }
}

/// A 12-megapixel JPEG to the two sizes the issue names, through the crate and through
/// the plain `image` resize: same sizes, similar pixels. (Timings: `cargo run --release
/// -p mr-thumbnail --example measure`.)
#[test]
fn twelve_megapixel_jpeg_matches_plain_image_resize() {
    let source = jpeg(&photo(4000, 3000));
    for (w, h) in [(800, 600), (96, 96)] {
        let ours = thumbnail(&source, &request(w, h, Method::Scale), &LIMITS).unwrap();
        let ours = decode(&ours).to_rgb8();
        let plain = image::load_from_memory(&source)
            .unwrap()
            .resize(w, h, image::imageops::FilterType::Lanczos3)
            .to_rgb8();
        assert_eq!(ours.dimensions(), plain.dimensions());
        let diff: u64 = ours
            .as_raw()
            .iter()
            .zip(plain.as_raw())
            .map(|(a, b)| u64::from(a.abs_diff(*b)))
            .sum();
        let mean = diff as f64 / ours.as_raw().len() as f64;
        assert!(mean < 8.0, "{w}×{h}: mean difference {mean}");
    }
}

/// Corrupted bytes (a few bytes overwritten, then sometimes cut short) give a thumbnail
/// or an error, never a panic. Deterministic: a fixed xorshift seed.
#[test]
fn corrupted_images_never_panic() {
    let sources = [
        jpeg(&photo(64, 48)),
        with_exif(&jpeg(&photo(40, 30)), &exif_block(Some(6), true)),
        encode(
            &DynamicImage::ImageRgba8(half_transparent(64, 48)),
            ImageFormat::Png,
        ),
        encode(&DynamicImage::ImageRgb8(photo(64, 48)), ImageFormat::Gif),
        encode(&DynamicImage::ImageRgb8(photo(64, 48)), ImageFormat::WebP),
        animated_gif(40, 30, 3),
        animated_webp(40, 30, 3),
    ];
    let mut seed = 0x853C_49E6_748F_EA9Bu64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for source in &sources {
        for round in 0..400 {
            let mut bytes = source.clone();
            for _ in 0..1 + next() % 4 {
                // Keep the magic bytes so the decoders, not the sniffer, see the damage.
                let at = 8 + (next() as usize) % (bytes.len() - 8);
                bytes[at] = next() as u8;
            }
            if round % 3 == 0 {
                bytes.truncate(8 + (next() as usize) % (bytes.len() - 8));
            }
            for animated in [false, true] {
                let req = Request {
                    animated,
                    ..request(24, 24, Method::Crop)
                };
                if let Ok(t) = thumbnail(&bytes, &req, &LIMITS) {
                    assert!(t.width <= 24 && t.height <= 24);
                }
            }
        }
    }
}
