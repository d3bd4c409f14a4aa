//! What the source is, from its first bytes and its header only: the format from magic
//! bytes, the dimensions from the header (no pixel is decoded, no pixel buffer
//! allocated), and the limits check. A decompression bomb (a small file declaring
//! 50000×50000) is refused here, before [`crate::render`] allocates anything.

use std::io::Cursor;

use image::{ImageDecoder, ImageFormat, ImageReader};

use crate::error::{Error, Result};

/// The limits a source must fit, from `thumbnails.max_source_bytes` and
/// `thumbnails.max_pixels` in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest source, in bytes.
    pub max_source_bytes: u64,
    /// Largest source, in pixels (width × height as stored); bounds the decoded buffer.
    pub max_pixels: u64,
}

/// The formats we thumbnail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Jpeg,
    Png,
    Gif,
    WebP,
}

impl Format {
    pub(crate) fn image_format(self) -> ImageFormat {
        match self {
            Format::Jpeg => ImageFormat::Jpeg,
            Format::Png => ImageFormat::Png,
            Format::Gif => ImageFormat::Gif,
            Format::WebP => ImageFormat::WebP,
        }
    }
}

/// What [`probe`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    pub format: Format,
    /// Width as displayed: after the EXIF orientation is applied.
    pub width: u32,
    /// Height as displayed: after the EXIF orientation is applied.
    pub height: u32,
}

/// How many leading bytes are searched for `<svg` in a text file.
const SVG_SNIFF_BYTES: usize = 4096;

/// The format from the magic bytes, or why it is not one we thumbnail.
pub fn sniff(bytes: &[u8]) -> Result<Format> {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(&[0xFF, 0xD8, 0xFF]) {
        return Ok(Format::Jpeg);
    }
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Ok(Format::Png);
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return Ok(Format::Gif);
    }
    if bytes.len() >= 12 && starts(b"RIFF") && &bytes[8..12] == b"WEBP" {
        return Ok(Format::WebP);
    }
    // Recognised, but not thumbnailed.
    if starts(b"BM") {
        return Err(Error::Unsupported("bmp"));
    }
    if starts(b"II*\0") || starts(b"MM\0*") {
        return Err(Error::Unsupported("tiff"));
    }
    if starts(&[0, 0, 1, 0]) {
        return Err(Error::Unsupported("ico"));
    }
    if starts(&[0xFF, 0x0A]) || starts(b"\0\0\0\x0CJXL \r\n\x87\n") {
        return Err(Error::Unsupported("jpeg xl"));
    }
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        return Err(Error::Unsupported("heif/avif"));
    }
    if starts(b"8BPS") {
        return Err(Error::Unsupported("psd"));
    }
    if looks_like_svg(bytes) {
        return Err(Error::Unsupported("svg"));
    }
    Err(Error::NotAnImage)
}

/// Text (optionally with a UTF-8 BOM) starting with `<` and naming `<svg` early on.
fn looks_like_svg(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(SVG_SNIFF_BYTES)];
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let text = head.trim_ascii_start();
    text.starts_with(b"<") && text.windows(4).any(|w| w.eq_ignore_ascii_case(b"<svg"))
}

/// Sniffs the format, reads the dimensions and the EXIF orientation from the header, and
/// checks `limits`. Blocking (it parses headers in memory); callers run it on the bounded
/// blocking pool, like [`crate::thumbnail`].
///
/// Errors: [`Error::TooLarge`] (bytes or pixels over the limits), [`Error::NotAnImage`],
/// [`Error::Unsupported`], [`Error::Undecodable`] (a header that does not parse).
pub fn probe(bytes: &[u8], limits: &Limits) -> Result<SourceInfo> {
    if bytes.len() as u64 > limits.max_source_bytes {
        return Err(Error::TooLarge(format!(
            "{} bytes, limit {}",
            bytes.len(),
            limits.max_source_bytes
        )));
    }
    let format = sniff(bytes)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format.image_format());
    // Only headers are read here; the pixel limit below is ours, checked before any
    // decoder allocates a buffer, so the decoders' own allocation limits must not turn a
    // bomb into "undecodable" first.
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(undecodable)?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, limits)?;
    // A broken EXIF block is not worth refusing the image for.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let (width, height) = if swaps_sides(orientation) {
        (height, width)
    } else {
        (width, height)
    };
    Ok(SourceInfo {
        format,
        width,
        height,
    })
}

/// Refuses zero-sized images and images over `limits.max_pixels`.
pub(crate) fn check_pixels(width: u32, height: u32, limits: &Limits) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::Undecodable(format!("{width}×{height} image")));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(Error::TooLarge(format!(
            "{width}×{height} = {pixels} pixels, limit {}",
            limits.max_pixels
        )));
    }
    Ok(())
}

/// Whether an orientation turns the image by a quarter, swapping width and height.
pub(crate) fn swaps_sides(o: image::metadata::Orientation) -> bool {
    use image::metadata::Orientation::*;
    matches!(o, Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH)
}

pub(crate) fn undecodable(e: impl std::fmt::Display) -> Error {
    Error::Undecodable(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic_bytes() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0rest").unwrap(), Format::Jpeg);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest").unwrap(), Format::Png);
        assert_eq!(sniff(b"GIF89a....").unwrap(), Format::Gif);
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 ").unwrap(), Format::WebP);
        assert!(matches!(
            sniff(b"RIFF\0\0\0\0WAVEfmt "),
            Err(Error::NotAnImage)
        ));
        assert!(matches!(
            sniff(b"\xEF\xBB\xBF <svg/>"),
            Err(Error::Unsupported("svg"))
        ));
        assert!(matches!(sniff(b"<html><body>"), Err(Error::NotAnImage)));
        assert!(matches!(
            sniff(b"II*\0...."),
            Err(Error::Unsupported("tiff"))
        ));
        assert!(matches!(
            sniff(b"\0\0\0\x1cftypavif"),
            Err(Error::Unsupported("heif/avif"))
        ));
        assert!(matches!(sniff(b""), Err(Error::NotAnImage)));
    }

    #[test]
    fn pixel_limit_is_inclusive() {
        let limits = Limits {
            max_source_bytes: 1,
            max_pixels: 100,
        };
        assert!(check_pixels(10, 10, &limits).is_ok());
        assert!(matches!(
            check_pixels(10, 11, &limits),
            Err(Error::TooLarge(_))
        ));
        assert!(matches!(
            check_pixels(0, 11, &limits),
            Err(Error::Undecodable(_))
        ));
        assert!(matches!(
            check_pixels(u32::MAX, u32::MAX, &limits),
            Err(Error::TooLarge(_))
        ));
    }
}
