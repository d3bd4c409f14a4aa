//! Decoding, orienting, cropping, resizing and encoding: the pixels of a thumbnail.
//!
//! * Decoding is bounded: [`fn@crate::probe`] has checked the pixel count from the header,
//!   and the decoders get an allocation limit as well (`image::Limits`).
//! * JPEG sources are decoded at 1/2 or 1/4 scale inside the IDCT: the smallest scale at
//!   which the reduced image still has at least as many pixels as the output in both
//!   directions; then resized. Baseline JPEGs by [`split_jpeg`] (its Huffman decoding
//!   split over [`JPEG_DECODE_THREADS`] threads: ~3× faster than jpeg-decoder on a 12 MP
//!   photo), the others (progressive, CMYK, 12-bit, …) by jpeg-decoder's DCT scaling.
//! * Resizing is fast_image_resize with Lanczos3 (alpha premultiplied while resizing).
//! * Output: JPEG (quality [`JPEG_QUALITY`], jpeg-encoder) for JPEG sources, PNG (alpha kept)
//!   otherwise, an animated GIF for an animated GIF or WebP asked `animated` (at most
//!   [`MAX_ANIMATED_FRAMES`] frames). The encoders are given pixels only: no EXIF, GPS,
//!   XMP or ICC block is ever written. PNGs use the fast deflate: on a 4000×3000 PNG
//!   source the 800×600 thumbnail took 2.3× less CPU than at the default level, for about
//!   20 % more bytes.
//! * Several sizes of one source share its decode ([`thumbnails`]): once for a still that
//!   is not a JPEG, once per IDCT scale for a JPEG; each size still gets the bytes it would
//!   get alone.
//! * Deterministic: no randomness, no clocks, no threads whose order matters (the split
//!   decoder's pixels do not depend on its threads); the same input gives the same bytes
//!   (federation thumbnails must be byte-identical).

use std::io::{BufRead, Cursor, Read, Seek};

use fast_image_resize as fr;
use image::codecs::gif::{GifDecoder, GifEncoder, Repeat};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::codecs::webp::WebPDecoder;
use image::metadata::Orientation;
use image::{
    AnimationDecoder, DynamicImage, ExtendedColorType, Frame, ImageBuffer, ImageDecoder,
    ImageEncoder, ImageReader, RgbaImage,
};

use crate::error::{Error, Result};
use crate::geometry::{self, Method, Plan};
use crate::probe::{self, swaps_sides, undecodable, Format, Limits};
use crate::split_jpeg::{self, Outcome};

/// JPEG quality of JPEG thumbnails (libjpeg scale, 1–100).
pub const JPEG_QUALITY: u8 = 85;

/// Most frames an animated thumbnail keeps; later frames are dropped (the animation ends
/// early rather than the thumbnail costing as much as the source).
pub const MAX_ANIMATED_FRAMES: usize = 50;

/// Most source pixels decoded over all frames of an animated thumbnail (frames beyond
/// it are dropped, but at least one is kept): bounds the time of a big animation.
pub const MAX_ANIMATED_SOURCE_PIXELS: u64 = 200_000_000;

/// Threads one JPEG decode splits its Huffman decoding over ([`split_jpeg`]): the pool
/// thread it runs on and one scoped thread it waits for, so a pool of N workers runs at
/// most 2N threads. The output never depends on it.
const JPEG_DECODE_THREADS: usize = split_jpeg::MAX_THREADS;

/// NeuQuant speed for animated GIF frames (1 best … 30 fastest); 10 is the gif crate's
/// usual trade-off.
const GIF_QUANTIZE_SPEED: i32 = 10;

/// What is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Asked width in pixels, ≥ 1.
    pub width: u32,
    /// Asked height in pixels, ≥ 1.
    pub height: u32,
    pub method: Method,
    /// Whether an animated source may give an animated thumbnail.
    pub animated: bool,
}

/// An encoded thumbnail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    /// `image/jpeg`, `image/png` or `image/gif`.
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
    /// True when the thumbnail has more than one frame.
    pub animated: bool,
}

/// Makes the thumbnail of `bytes` asked by `request`. Blocking and CPU-bound (tens of
/// milliseconds for a large photo): callers run it on a bounded blocking pool, never on
/// an async worker thread.
///
/// Errors: those of [`fn@crate::probe`], [`Error::InvalidRequest`] for a zero size,
/// [`Error::Undecodable`] when the pixels do not decode.
pub fn thumbnail(bytes: &[u8], request: &Request, limits: &Limits) -> Result<Thumbnail> {
    let mut made = thumbnails(bytes, std::slice::from_ref(request), limits)?;
    made.pop()
        .ok_or_else(|| Error::Encode("no thumbnail came out".into()))
}

/// Makes the thumbnails of `bytes` asked by `requests` (in their order), decoding the
/// source as few times as the output allows: once for a PNG, GIF or WebP still, once per
/// IDCT scale for a JPEG (see [`shared_decodes`]), once per animated request. Each
/// thumbnail is byte-identical to what [`thumbnail`] makes for its request alone: a
/// thumbnail must not depend on which other sizes were made with it.
///
/// Errors: as [`thumbnail`]; one failure fails all (they share the source).
pub fn thumbnails(bytes: &[u8], requests: &[Request], limits: &Limits) -> Result<Vec<Thumbnail>> {
    let mut out: Vec<Option<Thumbnail>> = vec![None; requests.len()];
    thumbnails_each(
        bytes,
        requests,
        limits,
        |_| false,
        |i, made| out[i] = Some(made),
    )?;
    out.into_iter()
        .map(|t| t.ok_or_else(|| Error::Encode("a requested thumbnail was not made".into())))
        .collect()
}

/// As [`thumbnails`], handing each thumbnail to `each` (with its index in `requests`) as
/// soon as it is made, so a caller can store and serve the first sizes while the others
/// are still being made. Before each thumbnail it asks `waited_for(i)` of the requests
/// left: one that someone waits for now is made next (a JPEG decode whose sizes someone
/// waits for comes first too); otherwise they come in their order in `requests`. The order
/// never changes the bytes.
pub fn thumbnails_each(
    bytes: &[u8],
    requests: &[Request],
    limits: &Limits,
    waited_for: impl Fn(usize) -> bool,
    mut each: impl FnMut(usize, Thumbnail),
) -> Result<()> {
    check_requests(requests)?;
    let info = probe::probe(bytes, limits)?;
    let still: Vec<usize> = (0..requests.len())
        .filter(|&i| !(requests[i].animated && matches!(info.format, Format::Gif | Format::WebP)))
        .collect();
    for (i, request) in requests.iter().enumerate() {
        if !still.contains(&i) {
            each(i, render_animated(bytes, info.format, request, limits)?);
        }
    }
    if !still.is_empty() {
        match info.format {
            Format::Jpeg => {
                let source = JpegSource::read(bytes, limits)?;
                let groups = source.groups(requests, &still);
                render_jpeg_groups(
                    &source,
                    bytes,
                    limits,
                    requests,
                    groups,
                    &waited_for,
                    &mut each,
                )?;
            }
            Format::Png | Format::Gif | Format::WebP => {
                let pixels = Pixels::from_dynamic(decode_still(bytes, info.format, limits)?);
                render_stills(&pixels, requests, still, &waited_for, &mut each)?;
            }
        }
    }
    Ok(())
}

/// Renders `indices` of `requests` from the decoded pixels of a still that is not a JPEG
/// (a PNG out), one someone waits for first.
pub(crate) fn render_stills(
    pixels: &Pixels,
    requests: &[Request],
    mut indices: Vec<usize>,
    waited_for: &impl Fn(usize) -> bool,
    each: &mut impl FnMut(usize, Thumbnail),
) -> Result<()> {
    while let Some(i) = take_next(&mut indices, |&i| waited_for(i)) {
        let plan = plan_for(pixels, &requests[i]);
        each(i, encode_png(&resize(pixels, &plan, FULL_SIZE)?)?);
    }
    Ok(())
}

/// Refuses a request for a zero width or height.
pub(crate) fn check_requests(requests: &[Request]) -> Result<()> {
    if requests.iter().any(|r| r.width == 0 || r.height == 0) {
        return Err(Error::InvalidRequest("width and height must be at least 1"));
    }
    Ok(())
}

/// Decodes a JPEG once per group of `groups` (a group someone waits for first, else in
/// their order) and renders each group's requests from that decode.
pub(crate) fn render_jpeg_groups(
    source: &JpegSource,
    bytes: &[u8],
    limits: &Limits,
    requests: &[Request],
    mut groups: Vec<Vec<usize>>,
    waited_for: &impl Fn(usize) -> bool,
    each: &mut impl FnMut(usize, Thumbnail),
) -> Result<()> {
    while let Some(group) = take_next(&mut groups, |g| g.iter().any(|&i| waited_for(i))) {
        let pixels = source.decode(bytes, limits, source.eighths(&requests[group[0]]))?;
        render_jpeg_group(source, &pixels, requests, group, waited_for, each)?;
    }
    Ok(())
}

/// Renders the requests of one group from its decode, one someone waits for first.
pub(crate) fn render_jpeg_group(
    source: &JpegSource,
    pixels: &Pixels,
    requests: &[Request],
    mut group: Vec<usize>,
    waited_for: &impl Fn(usize) -> bool,
    each: &mut impl FnMut(usize, Thumbnail),
) -> Result<()> {
    while let Some(i) = take_next(&mut group, |&i| waited_for(i)) {
        each(i, source.render(pixels, &requests[i])?);
    }
    Ok(())
}

/// Removes and returns the first item of `left` that is `urgent`, else the first item.
pub(crate) fn take_next<T>(left: &mut Vec<T>, urgent: impl Fn(&T) -> bool) -> Option<T> {
    if left.is_empty() {
        return None;
    }
    let at = left.iter().position(urgent).unwrap_or(0);
    Some(left.remove(at))
}

/// Which of `requests` share one decode of `bytes`, as groups of indices into `requests`:
/// the group whose decode is largest (the slowest) first. A PNG, GIF or WebP still is one
/// group; a JPEG gives one group per IDCT scale; an animated request is a group of its own.
/// Reads only the header. Callers that spread the groups over workers get the same bytes
/// as one [`thumbnails`] call.
pub fn shared_decodes(
    bytes: &[u8],
    requests: &[Request],
    limits: &Limits,
) -> Result<Vec<Vec<usize>>> {
    let info = probe::probe(bytes, limits)?;
    let mut groups = Vec::new();
    let mut still = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        if r.animated && matches!(info.format, Format::Gif | Format::WebP) {
            groups.push(vec![i]);
        } else {
            still.push(i);
        }
    }
    if still.is_empty() {
        return Ok(groups);
    }
    match info.format {
        Format::Jpeg => {
            let source = JpegSource::read(bytes, limits)?;
            let mut jpeg_groups = source.groups(requests, &still);
            jpeg_groups.reverse();
            groups.splice(0..0, jpeg_groups);
        }
        _ => groups.insert(0, still),
    }
    Ok(groups)
}

/// A JPEG's header: what every decode of it needs.
pub(crate) struct JpegSource {
    /// `None` for CMYK and 12/16-bit JPEGs, decoded at full size by the image crate.
    layout: Option<Layout>,
    orientation: Orientation,
    /// Stored (unoriented) size.
    stored: (u16, u16),
    /// Size after orientation, in which plans are made.
    full: (u32, u32),
}

impl JpegSource {
    fn read(bytes: &[u8], limits: &Limits) -> Result<JpegSource> {
        let mut decoder = jpeg_decoder(bytes, limits);
        decoder.read_info().map_err(undecodable)?;
        JpegSource::from_header(&decoder)
    }

    /// The source as described by a decoder that has read the header.
    pub(crate) fn from_header<R: Read>(decoder: &jpeg_decoder::Decoder<R>) -> Result<JpegSource> {
        let info = decoder.info().ok_or_else(|| undecodable("no JPEG frame"))?;
        let layout = match info.pixel_format {
            jpeg_decoder::PixelFormat::L8 => Some(Layout::L8),
            jpeg_decoder::PixelFormat::RGB24 => Some(Layout::Rgb8),
            _ => None,
        };
        let orientation = decoder
            .exif_data()
            .and_then(Orientation::from_exif_chunk)
            .unwrap_or(Orientation::NoTransforms);
        let (stored_w, stored_h) = (u32::from(info.width), u32::from(info.height));
        let full = if swaps_sides(orientation) {
            (stored_h, stored_w)
        } else {
            (stored_w, stored_h)
        };
        Ok(JpegSource {
            layout,
            orientation,
            stored: (info.width, info.height),
            full,
        })
    }

    /// Whether jpeg-decoder decodes this source (with IDCT scaling); otherwise (CMYK,
    /// 12/16-bit) the image crate decodes it at full size, from all of its bytes.
    pub(crate) fn scalable(&self) -> bool {
        self.layout.is_some()
    }

    fn plan(&self, request: &Request) -> Plan {
        geometry::plan(
            self.full.0,
            self.full.1,
            request.width,
            request.height,
            request.method,
        )
    }

    /// The IDCT scale a request is decoded at (8: full size, always for the image crate's
    /// full-size path).
    pub(crate) fn eighths(&self, request: &Request) -> u32 {
        match self.layout {
            Some(_) => idct_eighths(&self.plan(request)),
            None => 8,
        }
    }

    /// `indices` of `requests` grouped by IDCT scale, smallest scale first, each group in
    /// the order of `indices`.
    pub(crate) fn groups(&self, requests: &[Request], indices: &[usize]) -> Vec<Vec<usize>> {
        let mut groups: Vec<(u32, Vec<usize>)> = Vec::new();
        for &i in indices {
            let eighths = self.eighths(&requests[i]);
            match groups.iter_mut().find(|(e, _)| *e == eighths) {
                Some((_, group)) => group.push(i),
                None => groups.push((eighths, vec![i])),
            }
        }
        groups.sort_by_key(|(e, _)| *e);
        groups.into_iter().map(|(_, g)| g).collect()
    }

    /// Decodes at `eighths` of full size in the IDCT and applies the orientation.
    fn decode(&self, bytes: &[u8], limits: &Limits, eighths: u32) -> Result<Pixels> {
        if self.layout.is_none() {
            let image = decode_still(bytes, Format::Jpeg, limits)?;
            return Ok(Pixels::from_dynamic(DynamicImage::ImageRgb8(
                image.to_rgb8(),
            )));
        }
        match split_jpeg::decode_slice(bytes, eighths, limits, JPEG_DECODE_THREADS)? {
            Outcome::Decoded(image) => {
                if let Some(pixels) = self.oriented(image) {
                    return Ok(pixels);
                }
            }
            Outcome::Unsupported(_) => {}
        }
        let mut decoder = jpeg_decoder(bytes, limits);
        decoder.read_info().map_err(undecodable)?;
        self.decode_from(decoder, eighths)
    }

    /// Decodes with the split decoder from `source`, which yields this source's bytes from
    /// the first one as they arrive (see [`split_jpeg::decode_reader`]); `Ok(None)` when
    /// that decoder does not take this JPEG (the caller decodes with jpeg-decoder from the
    /// bytes read so far, which it must have kept).
    pub(crate) fn decode_split_from<R: Read>(
        &self,
        source: R,
        eighths: u32,
        limits: &Limits,
    ) -> Result<Option<Pixels>> {
        if self.layout.is_none() {
            return Ok(None);
        }
        match split_jpeg::decode_reader(source, eighths, limits, JPEG_DECODE_THREADS)? {
            Outcome::Decoded(image) => Ok(self.oriented(image)),
            Outcome::Unsupported(_) => Ok(None),
        }
    }

    /// Whether the split decoder surely decodes this source at `eighths` into the layout
    /// jpeg-decoder would give, judged from `header` (the first bytes, through the scan
    /// header): then nothing else will need the bytes.
    pub(crate) fn split_decodes(&self, header: &[u8], eighths: u32, limits: &Limits) -> bool {
        self.layout.is_some() && split_jpeg::takes(header, eighths, limits)
    }

    /// The split decoder's pixels, oriented, when they are the layout jpeg-decoder gives
    /// this source (gray or RGB, as its header said); `None` otherwise.
    fn oriented(&self, image: split_jpeg::Image) -> Option<Pixels> {
        let (w, h) = (image.width, image.height);
        let mut image = match (self.layout?, image.components) {
            (Layout::L8, 1) => DynamicImage::ImageLuma8(ImageBuffer::from_raw(w, h, image.pixels)?),
            (Layout::Rgb8, 3) => {
                DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, image.pixels)?)
            }
            _ => return None,
        };
        image.apply_orientation(self.orientation);
        Some(Pixels::from_dynamic(image))
    }

    /// Decodes with `decoder`, which has read this source's header (and must be
    /// [`JpegSource::scalable`]), at `eighths` of full size, and applies the orientation.
    pub(crate) fn decode_from<R: Read>(
        &self,
        mut decoder: jpeg_decoder::Decoder<R>,
        eighths: u32,
    ) -> Result<Pixels> {
        let Some(layout) = self.layout else {
            return Err(undecodable("not a JPEG jpeg-decoder scales"));
        };
        if eighths < 8 {
            let scaled = |side: u16| ((u32::from(side) * eighths - 1) / 8 + 1) as u16;
            decoder
                .scale(scaled(self.stored.0), scaled(self.stored.1))
                .map_err(undecodable)?;
        }
        let data = decoder.decode().map_err(undecodable)?;
        let info = decoder.info().ok_or_else(|| undecodable("no JPEG frame"))?;
        let (w, h) = (u32::from(info.width), u32::from(info.height));
        let image = match layout {
            Layout::L8 => ImageBuffer::from_raw(w, h, data).map(DynamicImage::ImageLuma8),
            _ => ImageBuffer::from_raw(w, h, data).map(DynamicImage::ImageRgb8),
        };
        let mut image = image.ok_or_else(|| undecodable("short JPEG pixel buffer"))?;
        image.apply_orientation(self.orientation);
        Ok(Pixels::from_dynamic(image))
    }

    /// Resizes decoded pixels for `request` and encodes a JPEG.
    pub(crate) fn render(&self, pixels: &Pixels, request: &Request) -> Result<Thumbnail> {
        if self.layout.is_none() {
            let plan = plan_for(pixels, request);
            return encode_jpeg(&resize(pixels, &plan, FULL_SIZE)?);
        }
        let plan = self.plan(request);
        // The plan is in full-size pixels; the decoded image may be 1/2 or 1/4 of
        // that (each side rounded up, so the two factors can differ slightly).
        let factor = (
            f64::from(pixels.width) / f64::from(self.full.0),
            f64::from(pixels.height) / f64::from(self.full.1),
        );
        encode_jpeg(&resize(pixels, &plan, factor)?)
    }
}

/// A jpeg-decoder whose buffers are bounded by `limits`.
pub(crate) fn jpeg_decoder<R: Read>(source: R, limits: &Limits) -> jpeg_decoder::Decoder<R> {
    let mut decoder = jpeg_decoder::Decoder::new(source);
    decoder.set_max_decoding_buffer_size(
        usize::try_from(limits.max_pixels.saturating_mul(4)).unwrap_or(usize::MAX),
    );
    decoder
}

/// The allocation limit handed to the decoders: RGBA at 16 bits per channel of the
/// largest allowed image.
fn image_limits(limits: &Limits) -> image::Limits {
    let mut l = image::Limits::default();
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8));
    l
}

/// Decodes the first (or only) frame with the `image` crate and applies the EXIF
/// orientation.
fn decode_still(bytes: &[u8], format: Format, limits: &Limits) -> Result<DynamicImage> {
    decode_still_from(Cursor::new(bytes), format, limits)
}

/// [`decode_still`] from a reader: the same decoder and settings, so the same pixels.
pub(crate) fn decode_still_from<R: BufRead + Seek>(
    source: R,
    format: Format,
    limits: &Limits,
) -> Result<DynamicImage> {
    let mut reader = ImageReader::with_format(source, format.image_format());
    reader.limits(image_limits(limits));
    let mut decoder = reader.into_decoder().map_err(undecodable)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(undecodable)?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// The IDCT scale, in eighths (8 = full size, 2 = 1/4), for a plan: the smallest one
/// whose crop rectangle still has at least the output's pixels in each direction, so the
/// final resize never enlarges. Scaling inside the IDCT averages each 8×8 block down (it
/// filters, it does not drop pixels), so it needs no headroom above the output (Pillow's
/// `draft`, which Synapse relies on, picks its JPEG scale by the same rule); a rule of
/// twice the output cost the 800×600 of a 12 MP photo a 1/2 decode where 1/4 serves.
/// Never 1/8: the Huffman decoding, which every scale pays in full, is nearly all of the
/// time (the bench's 12 MP JPEG: 100 ms of decoder-thread CPU at 1/8, 97 ms at 1/4), so
/// 1/8 saves nothing and would split an upload's small and large sizes over two decodes.
fn idct_eighths(plan: &Plan) -> u32 {
    for eighths in [2u32, 4] {
        let w = u64::from(plan.crop.width) * u64::from(eighths) / 8;
        let h = u64::from(plan.crop.height) * u64::from(eighths) / 8;
        if w >= u64::from(plan.width) && h >= u64::from(plan.height) {
            return eighths;
        }
    }
    8
}

/// Animated GIF or WebP asked `animated`: every frame (up to the bounds) resized, an
/// animated GIF out; a source with a single frame gives a still PNG.
fn render_animated(
    bytes: &[u8],
    format: Format,
    request: &Request,
    limits: &Limits,
) -> Result<Thumbnail> {
    let (frames, canvas) = match format {
        Format::Gif => {
            let mut d = GifDecoder::new(Cursor::new(bytes)).map_err(undecodable)?;
            d.set_limits(image_limits(limits)).map_err(undecodable)?;
            let canvas = d.dimensions();
            (d.into_frames(), canvas)
        }
        _ => {
            let mut d = WebPDecoder::new(Cursor::new(bytes)).map_err(undecodable)?;
            if !d.has_animation() {
                drop(d);
                let pixels = Pixels::from_dynamic(decode_still(bytes, format, limits)?);
                let plan = plan_for(&pixels, request);
                return encode_png(&resize(&pixels, &plan, FULL_SIZE)?);
            }
            d.set_limits(image_limits(limits)).map_err(undecodable)?;
            let canvas = d.dimensions();
            (d.into_frames(), canvas)
        }
    };
    let canvas_pixels = u64::from(canvas.0) * u64::from(canvas.1);
    let budget = (MAX_ANIMATED_SOURCE_PIXELS / canvas_pixels.max(1)).max(1);
    let max_frames = MAX_ANIMATED_FRAMES.min(usize::try_from(budget).unwrap_or(usize::MAX));
    let plan = geometry::plan(
        canvas.0,
        canvas.1,
        request.width,
        request.height,
        request.method,
    );

    let mut out: Vec<(Pixels, image::Delay)> = Vec::new();
    for frame in frames.take(max_frames) {
        let frame = frame.map_err(undecodable)?;
        let delay = frame.delay();
        let buffer = frame.into_buffer();
        if buffer.dimensions() != canvas {
            return Err(undecodable("animation frame is not the canvas size"));
        }
        let pixels = Pixels::from_dynamic(DynamicImage::ImageRgba8(buffer));
        out.push((resize(&pixels, &plan, FULL_SIZE)?, delay));
    }
    match out.len() {
        0 => Err(undecodable("animation without frames")),
        1 => encode_png(&out.swap_remove(0).0),
        _ => encode_gif(out),
    }
}

/// The plan for decoded (already oriented) pixels.
fn plan_for(pixels: &Pixels, request: &Request) -> Plan {
    geometry::plan(
        pixels.width,
        pixels.height,
        request.width,
        request.height,
        request.method,
    )
}

/// 8-bit pixel layouts we resize and encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    L8,
    La8,
    Rgb8,
    Rgba8,
}

impl Layout {
    fn pixel_type(self) -> fr::PixelType {
        match self {
            Layout::L8 => fr::PixelType::U8,
            Layout::La8 => fr::PixelType::U8x2,
            Layout::Rgb8 => fr::PixelType::U8x3,
            Layout::Rgba8 => fr::PixelType::U8x4,
        }
    }

    fn color_type(self) -> ExtendedColorType {
        match self {
            Layout::L8 => ExtendedColorType::L8,
            Layout::La8 => ExtendedColorType::La8,
            Layout::Rgb8 => ExtendedColorType::Rgb8,
            Layout::Rgba8 => ExtendedColorType::Rgba8,
        }
    }
}

/// A decoded, oriented image as plain 8-bit rows.
pub(crate) struct Pixels {
    width: u32,
    height: u32,
    layout: Layout,
    data: Vec<u8>,
}

impl Pixels {
    /// Keeps 8-bit gray/RGB with or without alpha as is; anything else (16-bit, float)
    /// becomes RGB8 or RGBA8, keeping alpha when there is one.
    pub(crate) fn from_dynamic(image: DynamicImage) -> Pixels {
        let (width, height) = (image.width(), image.height());
        let (layout, data) = match image {
            DynamicImage::ImageLuma8(b) => (Layout::L8, b.into_raw()),
            DynamicImage::ImageLumaA8(b) => (Layout::La8, b.into_raw()),
            DynamicImage::ImageRgb8(b) => (Layout::Rgb8, b.into_raw()),
            DynamicImage::ImageRgba8(b) => (Layout::Rgba8, b.into_raw()),
            other if other.color().has_alpha() => (Layout::Rgba8, other.to_rgba8().into_raw()),
            other => (Layout::Rgb8, other.to_rgb8().into_raw()),
        };
        Pixels {
            width,
            height,
            layout,
            data,
        }
    }
}

/// No scaled decode: the plan's pixels are the decoded pixels.
const FULL_SIZE: (f64, f64) = (1.0, 1.0);

/// Cuts `plan.crop` (in full-size pixels; `factor` is the decoded image's width and
/// height relative to full size) and resizes it to the plan's output with Lanczos3.
fn resize(pixels: &Pixels, plan: &Plan, factor: (f64, f64)) -> Result<Pixels> {
    let pixel_type = pixels.layout.pixel_type();
    let src = fr::images::ImageRef::new(pixels.width, pixels.height, &pixels.data, pixel_type)
        .map_err(undecodable)?;
    let mut dst = fr::images::Image::new(plan.width, plan.height, pixel_type);
    let c = plan.crop;
    // Clamp against rounding of the scaled-down decode (ceil of the IDCT sizes).
    let (fx, fy) = factor;
    let left = (f64::from(c.x) * fx).min(f64::from(pixels.width));
    let top = (f64::from(c.y) * fy).min(f64::from(pixels.height));
    let width = (f64::from(c.width) * fx).min(f64::from(pixels.width) - left);
    let height = (f64::from(c.height) * fy).min(f64::from(pixels.height) - top);
    let options = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3))
        .crop(left, top, width, height);
    fr::Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(undecodable)?;
    Ok(Pixels {
        width: plan.width,
        height: plan.height,
        layout: pixels.layout,
        data: dst.into_vec(),
    })
}

/// JPEG out: jpeg-encoder (integer DCT, scalar: the same bytes on every CPU), chroma at
/// full resolution (4:4:4, as the image crate's encoder wrote them: 4:2:0 blurred the
/// colours of small thumbnails of detailed sources, a mean error of 13.5 against 8 at
/// 96×96). An 800×600 thumbnail took 5.2 ms to encode where the image crate's encoder took
/// 8.6 ms, for 5 % more bytes.
fn encode_jpeg(p: &Pixels) -> Result<Thumbnail> {
    let side = |n: u32| {
        u16::try_from(n).map_err(|_| Error::Encode(format!("{n} pixels is too wide for JPEG")))
    };
    let (width, height) = (side(p.width)?, side(p.height)?);
    // JPEG sources decode to gray or RGB; alpha (never expected here) is dropped.
    let gray_of_gray_alpha: Vec<u8>;
    let (data, color) = match p.layout {
        Layout::L8 => (&p.data[..], jpeg_encoder::ColorType::Luma),
        Layout::Rgb8 => (&p.data[..], jpeg_encoder::ColorType::Rgb),
        Layout::Rgba8 => (&p.data[..], jpeg_encoder::ColorType::Rgba),
        Layout::La8 => {
            gray_of_gray_alpha = p.data.chunks_exact(2).map(|px| px[0]).collect();
            (&gray_of_gray_alpha[..], jpeg_encoder::ColorType::Luma)
        }
    };
    let mut bytes = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, JPEG_QUALITY);
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::F_1_1);
    encoder
        .encode(data, width, height, color)
        .map_err(|e| Error::Encode(e.to_string()))?;
    Ok(still(bytes, "image/jpeg", p))
}

fn encode_png(p: &Pixels) -> Result<Thumbnail> {
    let mut bytes = Vec::new();
    PngEncoder::new_with_quality(&mut bytes, CompressionType::Fast, FilterType::Adaptive)
        .write_image(&p.data, p.width, p.height, p.layout.color_type())
        .map_err(|e| Error::Encode(e.to_string()))?;
    Ok(still(bytes, "image/png", p))
}

fn still(bytes: Vec<u8>, content_type: &'static str, p: &Pixels) -> Thumbnail {
    Thumbnail {
        bytes,
        content_type,
        width: p.width,
        height: p.height,
        animated: false,
    }
}

/// Frames are RGBA8 of the same size.
fn encode_gif(frames: Vec<(Pixels, image::Delay)>) -> Result<Thumbnail> {
    let (width, height) = (frames[0].0.width, frames[0].0.height);
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut bytes, GIF_QUANTIZE_SPEED);
        encoder
            .set_repeat(Repeat::Infinite)
            .map_err(|e| Error::Encode(e.to_string()))?;
        for (p, delay) in frames {
            let buffer = RgbaImage::from_raw(p.width, p.height, p.data)
                .ok_or_else(|| Error::Encode("frame buffer size".into()))?;
            encoder
                .encode_frame(Frame::from_parts(buffer, 0, 0, delay))
                .map_err(|e| Error::Encode(e.to_string()))?;
        }
    }
    Ok(Thumbnail {
        bytes,
        content_type: "image/gif",
        width,
        height,
        animated: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Rect;

    const LIMITS: Limits = Limits {
        max_source_bytes: 64 << 20,
        max_pixels: 40_000_000,
    };

    /// A 640×480 RGB JPEG, progressive or baseline.
    fn jpeg(progressive: bool) -> Vec<u8> {
        let img = image::RgbImage::from_fn(640, 480, |x, y| {
            image::Rgb([
                (x * 7 % 253) as u8,
                (y * 3 % 251) as u8,
                ((x ^ y) % 256) as u8,
            ])
        });
        let mut bytes = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, 90);
        encoder.set_progressive(progressive);
        encoder
            .encode(img.as_raw(), 640, 480, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        bytes
    }

    #[test]
    fn baseline_jpegs_are_decoded_by_the_split_decoder_others_by_jpeg_decoder() {
        for eighths in [2, 4] {
            let baseline = jpeg(false);
            let source = JpegSource::read(&baseline, &LIMITS).unwrap();
            let ours = source.decode(&baseline, &LIMITS, eighths).unwrap();
            let Outcome::Decoded(split) =
                split_jpeg::decode_slice(&baseline, eighths, &LIMITS, 1).unwrap()
            else {
                panic!("a baseline JPEG is the split decoder's");
            };
            assert_eq!((ours.width, ours.height), (split.width, split.height));
            assert!(ours.data == split.pixels, "the split decoder's pixels");

            let progressive = jpeg(true);
            let source = JpegSource::read(&progressive, &LIMITS).unwrap();
            let ours = source.decode(&progressive, &LIMITS, eighths).unwrap();
            let mut decoder = jpeg_decoder(&progressive[..], &LIMITS);
            decoder.read_info().unwrap();
            let theirs = source.decode_from(decoder, eighths).unwrap();
            assert!(ours.data == theirs.data, "jpeg-decoder's pixels");
        }
    }

    /// fast_image_resize picks SSE4.1, AVX2 or NEON at run time. Federation thumbnails
    /// must be byte-identical across machines, so every instruction set this CPU has
    /// must give the same pixels as the plain one.
    #[test]
    fn resize_is_identical_on_every_instruction_set() {
        let (w, h) = (301u32, 203u32);
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for layout in [Layout::L8, Layout::La8, Layout::Rgb8, Layout::Rgba8] {
            let channels = layout.pixel_type().size();
            let data = (0..w as usize * h as usize * channels)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 32) as u8
                })
                .collect();
            let pixels = Pixels {
                width: w,
                height: h,
                layout,
                data,
            };
            let plan = Plan {
                crop: Rect {
                    x: 7,
                    y: 3,
                    width: 250,
                    height: 190,
                },
                width: 97,
                height: 61,
            };
            let run = |ext: fr::CpuExtensions| {
                let pixel_type = layout.pixel_type();
                let src = fr::images::ImageRef::new(w, h, &pixels.data, pixel_type).unwrap();
                let mut dst = fr::images::Image::new(plan.width, plan.height, pixel_type);
                let mut resizer = fr::Resizer::new();
                // SAFETY: only extensions the CPU reports are used.
                unsafe { resizer.set_cpu_extensions(ext) };
                let options = fr::ResizeOptions::new()
                    .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3))
                    .crop(7.0, 3.0, 250.0, 190.0);
                resizer.resize(&src, &mut dst, &options).unwrap();
                dst.into_vec()
            };
            let plain = run(fr::CpuExtensions::None);
            assert_eq!(resize(&pixels, &plan, FULL_SIZE).unwrap().data, plain);
            #[cfg(target_arch = "x86_64")]
            let extensions = [fr::CpuExtensions::Sse4_1, fr::CpuExtensions::Avx2];
            #[cfg(target_arch = "aarch64")]
            let extensions = [fr::CpuExtensions::Neon];
            #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
            let extensions: [fr::CpuExtensions; 0] = [];
            for ext in extensions {
                if ext.is_supported() {
                    assert_eq!(run(ext), plain, "{layout:?} with {ext:?}");
                }
            }
        }
    }

    #[test]
    fn idct_scale_keeps_at_least_the_output() {
        let plan = |cw, ch, w, h| Plan {
            crop: Rect {
                x: 0,
                y: 0,
                width: cw,
                height: ch,
            },
            width: w,
            height: h,
        };
        assert_eq!(idct_eighths(&plan(4000, 3000, 800, 600)), 2);
        assert_eq!(idct_eighths(&plan(4000, 3000, 1000, 750)), 2);
        assert_eq!(idct_eighths(&plan(4000, 3000, 1001, 750)), 4);
        assert_eq!(idct_eighths(&plan(3000, 3000, 96, 96)), 2);
        assert_eq!(idct_eighths(&plan(4000, 3000, 320, 240)), 2);
        assert_eq!(idct_eighths(&plan(4000, 3000, 640, 480)), 2);
        assert_eq!(idct_eighths(&plan(600, 300, 300, 150)), 4);
        assert_eq!(idct_eighths(&plan(600, 300, 301, 150)), 8);
        assert_eq!(idct_eighths(&plan(100, 100, 100, 100)), 8);
    }
}
