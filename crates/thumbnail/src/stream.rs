//! Thumbnails of a source read as it arrives (an upload still on its way in).
//!
//! A photo's thumbnails cost one decode, and the decode is nearly all of it: Huffman
//! decoding of every coefficient, ~100 ms for the bench's 12 MP JPEG here, ~60 ms of
//! inflating for its 4000×3000 PNG, against ~30 ms for the upload itself. Decoding from
//! the stream overlaps the two instead of running them one after the other. A JPEG's first
//! decode (its smallest IDCT scale, or one someone waits for) and a PNG's one decode read
//! the bytes as they come; a JPEG's other scales, and GIF and WebP sources, are made from
//! all of the bytes once they are in. Where one decode serves every size, the bytes are
//! counted against the limit but not kept.
//!
//! Same bytes out as [`crate::thumbnails_each`] on the same input: the same decoder with
//! the same settings reads the same bytes; only when they are read changes. A baseline
//! JPEG's first decode is the split decoder's (`split_jpeg::decode_reader`): one thread
//! decodes as the bytes arrive, and what is left when they are all in is split between two. The header is
//! checked by [`crate::probe`] before any pixel is decoded, as on the other path.

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

use crate::error::{Error, Result};
use crate::probe::{self, undecodable, Format, Limits};
use crate::render::{
    check_requests, decode_still_from, jpeg_decoder, render_jpeg_group, render_jpeg_groups,
    render_stills, take_next, thumbnails_each, JpegSource, Pixels, Request, Thumbnail,
};

/// Bytes read ahead of a decoder at once (the JPEG decoder parses marker by marker, in
/// small reads, and its entropy-coded data a byte at a time).
const READ_AHEAD_BYTES: usize = 64 * 1024;

/// Bytes read before the format is sniffed (enough for [`crate::sniff`]'s SVG check).
const SNIFF_BYTES: usize = 4096;

/// When [`thumbnails_each_streaming`] decoded its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// As it arrived: a JPEG's first decode or a PNG's one decode read the bytes as they
    /// came (a JPEG's other scales, if any, were decoded after the end).
    AsItArrived,
    /// After its end, from all of its bytes: GIF, WebP, a header that did not fit in the
    /// first bytes, a JPEG jpeg-decoder cannot scale, or nothing asked.
    AfterItsEnd,
}

/// As [`crate::thumbnails_each`], reading the source from `source` as it arrives instead of
/// from a slice: a JPEG's first decode runs while the rest is still coming. `source` must
/// end (`Ok(0)`) after the last byte; an error from it fails the whole call. Says when the
/// source was decoded (so a caller can tell a stream decode that quietly stopped working).
///
/// A caller that receives an error must discard the thumbnails already handed to `each`:
/// a source found too large only at its end, say, had its first decode made before.
pub fn thumbnails_each_streaming(
    source: impl Read,
    requests: &[Request],
    limits: &Limits,
    waited_for: impl Fn(usize) -> bool,
    mut each: impl FnMut(usize, Thumbnail),
) -> Result<Decoded> {
    check_requests(requests)?;
    let mut recorder = Recorder::new(source, limits.max_source_bytes);
    recorder.read_at_least(SNIFF_BYTES)?;
    let format = probe::sniff(&recorder.bytes());
    match format {
        _ if requests.is_empty() => all_of_it(recorder, requests, limits, &waited_for, &mut each),
        Ok(Format::Jpeg) => jpeg(recorder, requests, limits, &waited_for, &mut each),
        Ok(Format::Png) => png(recorder, requests, limits, &waited_for, &mut each),
        _ => all_of_it(recorder, requests, limits, &waited_for, &mut each),
    }
}

/// A PNG: one decode serves every size (an APNG is thumbnailed as a still), so it is
/// decoded as it arrives and its bytes are not kept, once its header passed the checks.
fn png<R: Read>(
    mut recorder: Recorder<R>,
    requests: &[Request],
    limits: &Limits,
    waited_for: &impl Fn(usize) -> bool,
    each: &mut impl FnMut(usize, Thumbnail),
) -> Result<Decoded> {
    // The header as the other path checks it (pixel limits, orientation), from the bytes
    // sniffed; a header that does not fit in them goes the other way.
    if probe::probe(&recorder.bytes(), limits).is_err() {
        return all_of_it(recorder, requests, limits, waited_for, each);
    }
    let source = ForwardOnly {
        inner: recorder.reader_from_the_start(),
        position: 0,
    };
    recorder.stop_keeping();
    let pixels = decode_still_from(source, Format::Png, limits)
        .map_err(|err| recorder.limit_error().unwrap_or(err))?;
    render_stills(
        &Pixels::from_dynamic(pixels),
        requests,
        (0..requests.len()).collect(),
        waited_for,
        each,
    )?;
    // To its end: the limit and the source's own end are checked there.
    recorder.read_to_end()?;
    Ok(Decoded::AsItArrived)
}

/// A JPEG: its first decode (the smallest scale, or one someone waits for) is made as the
/// bytes arrive; the others from all of them.
fn jpeg<R: Read>(
    mut recorder: Recorder<R>,
    requests: &[Request],
    limits: &Limits,
    waited_for: &impl Fn(usize) -> bool,
    each: &mut impl FnMut(usize, Thumbnail),
) -> Result<Decoded> {
    let mut decoder = jpeg_decoder(recorder.reader_from_the_start(), limits);
    let header = decoder.read_info().ok().and_then(|()| {
        // The header as the other path checks it: formats, pixel limits, orientation. A
        // header that fails here (even only for being cut short) goes the other way,
        // which reads all of it and answers for it.
        probe::probe(&recorder.bytes(), limits).ok()?;
        JpegSource::from_header(&decoder)
            .ok()
            .filter(JpegSource::scalable)
    });
    let Some(jpeg) = header else {
        drop(decoder);
        return all_of_it(recorder, requests, limits, waited_for, each);
    };
    let indices: Vec<usize> = (0..requests.len()).collect();
    let mut groups = jpeg.groups(requests, &indices);
    let Some(first) = take_next(&mut groups, |g| g.iter().any(|&i| waited_for(i))) else {
        return all_of_it(recorder, requests, limits, waited_for, each);
    };
    let eighths = jpeg.eighths(&requests[first[0]]);
    // jpeg-decoder read the header: the bytes so far tell whether the split decoder
    // takes this JPEG. If so it decodes from the first byte, and when one decode serves
    // every size the bytes need not be kept (the reader holds those read so far).
    let split = jpeg.split_decodes(&recorder.bytes(), eighths, limits);
    let pixels = if split {
        drop(decoder);
        let source = recorder.reader_from_the_start();
        if groups.is_empty() {
            recorder.stop_keeping();
        }
        jpeg.decode_split_from(source, eighths, limits)
            .map_err(|err| recorder.limit_error().unwrap_or(err))?
            .ok_or_else(|| undecodable("the JPEG's pixels are not the layout its header says"))?
    } else {
        if groups.is_empty() {
            // One decode serves every size (a photo's usual case): no need to keep its
            // bytes.
            recorder.stop_keeping();
        }
        jpeg.decode_from(decoder, eighths)
            // The decoder reports a read past the limit as its own I/O error.
            .map_err(|err| recorder.limit_error().unwrap_or(err))?
    };
    render_jpeg_group(&jpeg, &pixels, requests, first, waited_for, each)?;
    drop(pixels);
    // To its end either way: the limit and the source's own end are checked there.
    let bytes = recorder.read_to_end()?;
    render_jpeg_groups(&jpeg, &bytes, limits, requests, groups, waited_for, each)?;
    Ok(Decoded::AsItArrived)
}

/// Reads the rest of the source and makes every thumbnail from all of its bytes.
fn all_of_it<R: Read>(
    recorder: Recorder<R>,
    requests: &[Request],
    limits: &Limits,
    waited_for: &impl Fn(usize) -> bool,
    each: &mut impl FnMut(usize, Thumbnail),
) -> Result<Decoded> {
    let bytes = recorder.read_to_end()?;
    thumbnails_each(&bytes, requests, limits, waited_for, each)?;
    Ok(Decoded::AfterItsEnd)
}

/// A read-ahead buffer in front of a decoder. The JPEG decoder reads its entropy-coded
/// data one byte at a time: a one-byte read here is an index and an increment, where
/// `BufReader`'s goes through a length-generic copy (measured: the stream's decode took
/// ~25 % longer than the same decode from a slice with `BufReader` in front).
struct ReadAhead<R> {
    source: R,
    buf: Box<[u8]>,
    pos: usize,
    filled: usize,
}

impl<R: Read> ReadAhead<R> {
    fn new(source: R) -> ReadAhead<R> {
        ReadAhead {
            source,
            buf: vec![0; READ_AHEAD_BYTES].into_boxed_slice(),
            pos: 0,
            filled: 0,
        }
    }

    /// Refills the buffer when it is empty; false at the source's end.
    fn fill(&mut self) -> io::Result<bool> {
        if self.pos == self.filled {
            self.filled = self.source.read(&mut self.buf)?;
            self.pos = 0;
        }
        Ok(self.filled > 0)
    }
}

impl<R: Read> Read for ReadAhead<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || !self.fill()? {
            return Ok(0);
        }
        let n = out.len().min(self.filled - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }

    #[inline]
    fn read_exact(&mut self, out: &mut [u8]) -> io::Result<()> {
        if let [byte] = out {
            if self.pos < self.filled {
                *byte = self.buf[self.pos];
                self.pos += 1;
                return Ok(());
            }
        }
        let mut out = out;
        while !out.is_empty() {
            match self.read(out)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => out = &mut out[n..],
            }
        }
        Ok(())
    }
}

/// A source read from its start to its end, for decoders that ask for `Seek` without
/// seeking (image's and png's PNG decoders): any seek but asking the position fails, and
/// the decode with it.
struct ForwardOnly<R> {
    inner: ReadAhead<R>,
    position: u64,
}

impl<R: Read> Read for ForwardOnly<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.position += n as u64;
        Ok(n)
    }
}

impl<R: Read> io::BufRead for ForwardOnly<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill()?;
        Ok(&self.inner.buf[self.inner.pos..self.inner.filled])
    }

    fn consume(&mut self, amount: usize) {
        let amount = amount.min(self.inner.filled - self.inner.pos);
        self.inner.pos += amount;
        self.position += amount as u64;
    }
}

impl<R> io::Seek for ForwardOnly<R> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        match to {
            io::SeekFrom::Current(0) => Ok(self.position),
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the source is read as it arrives and cannot seek",
            )),
        }
    }
}

/// Keeps every byte read from a source (the other decodes need all of them), up to a limit.
struct Recorder<R> {
    shared: Rc<RefCell<Recorded<R>>>,
}

struct Recorded<R> {
    source: R,
    bytes: Vec<u8>,
    /// Bytes read in all (kept or not), held to `limit`.
    read: u64,
    limit: u64,
    /// False once nothing more needs the bytes: they are counted, not kept.
    keep: bool,
}

impl<R: Read> Recorder<R> {
    fn new(source: R, limit: u64) -> Recorder<R> {
        Recorder {
            shared: Rc::new(RefCell::new(Recorded {
                source,
                bytes: Vec::new(),
                read: 0,
                limit,
                keep: true,
            })),
        }
    }

    /// A reader of the source that records what it reads (for a decoder to own while the
    /// bytes so far stay readable here).
    fn reader(&self) -> RecordingReader<R> {
        RecordingReader {
            shared: self.shared.clone(),
        }
    }

    /// A reader for a decoder: from the first byte (what was read so far again, then the
    /// rest of the source as it comes), with a read-ahead.
    fn reader_from_the_start(
        &self,
    ) -> ReadAhead<io::Chain<io::Cursor<Vec<u8>>, RecordingReader<R>>> {
        let so_far = io::Cursor::new(self.bytes().to_vec());
        ReadAhead::new(so_far.chain(self.reader()))
    }

    /// Everything read so far.
    fn bytes(&self) -> std::cell::Ref<'_, [u8]> {
        std::cell::Ref::map(self.shared.borrow(), |r| r.bytes.as_slice())
    }

    /// From now on bytes read are only counted (against the limit), not kept; what was
    /// kept is dropped.
    fn stop_keeping(&mut self) {
        let mut shared = self.shared.borrow_mut();
        shared.keep = false;
        shared.bytes = Vec::new();
    }

    /// The error to answer with when a read went past the limit.
    fn limit_error(&self) -> Option<Error> {
        let shared = self.shared.borrow();
        (shared.read > shared.limit).then(|| Error::TooLarge(TOO_LARGE.into()))
    }

    /// Reads until `want` bytes are in or the source ends.
    fn read_at_least(&mut self, want: usize) -> Result<()> {
        let mut reader = self.reader();
        let mut buf = vec![0; want];
        while self.shared.borrow().bytes.len() < want {
            if reader.read(&mut buf).map_err(source_error)? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Reads the rest of the source; all of its bytes (none after
    /// [`Recorder::stop_keeping`]).
    fn read_to_end(self) -> Result<Vec<u8>> {
        io::copy(&mut self.reader(), &mut io::sink()).map_err(source_error)?;
        let bytes = std::mem::take(&mut self.shared.borrow_mut().bytes);
        Ok(bytes)
    }
}

/// Reads from the shared source, appending what it reads to the record.
struct RecordingReader<R> {
    shared: Rc<RefCell<Recorded<R>>>,
}

impl<R: Read> Read for RecordingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut shared = self.shared.borrow_mut();
        let n = shared.source.read(buf)?;
        shared.read += n as u64;
        if shared.read > shared.limit {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, TOO_LARGE));
        }
        if shared.keep {
            shared.bytes.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

const TOO_LARGE: &str = "the source is larger than the thumbnail limit";

/// The error of a failed read: over the limit, or the source's own.
fn source_error(err: io::Error) -> Error {
    if err.kind() == io::ErrorKind::FileTooLarge {
        Error::TooLarge(TOO_LARGE.into())
    } else {
        undecodable(format!("reading the source failed: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Method;
    use image::{ImageEncoder as _, RgbImage};

    const LIMITS: Limits = Limits {
        max_source_bytes: 64 * 1024 * 1024,
        max_pixels: 100_000_000,
    };

    /// Hands out its bytes a few at a time, like a network body.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    fn photo(width: u32, height: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([
                (x * 7 % 251) as u8,
                (y * 13 % 241) as u8,
                ((x ^ y) % 256) as u8,
            ])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .write_image(img.as_raw(), width, height, image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(img.as_raw(), width, height, image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    fn gif(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbaImage::from_fn(width, height, |x, y| {
            image::Rgba([x as u8, y as u8, 9, 255])
        });
        let mut out = Vec::new();
        image::codecs::gif::GifEncoder::new(&mut out)
            .encode(img.as_raw(), width, height, image::ExtendedColorType::Rgba8)
            .unwrap();
        out
    }

    fn sizes() -> Vec<Request> {
        [
            (32, 32, Method::Crop),
            (96, 96, Method::Crop),
            (320, 240, Method::Scale),
            (800, 600, Method::Scale),
            (1600, 1200, Method::Scale),
        ]
        .into_iter()
        .map(|(width, height, method)| Request {
            width,
            height,
            method,
            animated: false,
        })
        .collect()
    }

    fn streamed(
        bytes: &[u8],
        step: usize,
        waited: Option<usize>,
    ) -> Result<Vec<(usize, Thumbnail)>> {
        let mut out = Vec::new();
        thumbnails_each_streaming(
            Trickle { bytes, step },
            &sizes(),
            &LIMITS,
            |i| Some(i) == waited,
            |i, t| out.push((i, t)),
        )?;
        Ok(out)
    }

    fn sorted(mut made: Vec<(usize, Thumbnail)>) -> Vec<Thumbnail> {
        made.sort_by_key(|(i, _)| *i);
        made.into_iter().map(|(_, t)| t).collect()
    }

    #[test]
    fn streamed_thumbnails_are_the_bytes_of_the_other_path() {
        // 1200×900: 1/4, 1/2 and full-size decodes (three groups); 1600×1200 is not
        // enlarged. And a PNG, made from all of its bytes.
        for bytes in [photo(1200, 900), png(700, 500)] {
            let whole = crate::thumbnails(&bytes, &sizes(), &LIMITS).unwrap();
            for step in [1 << 20, 4096, 777] {
                assert_eq!(sorted(streamed(&bytes, step, None).unwrap()), whole);
            }
        }
    }

    #[test]
    fn one_decode_for_every_size_gives_the_same_bytes_without_keeping_the_source() {
        // 1600×1200 with sizes up to 400×300: every size from the 1/4 decode.
        let small: Vec<Request> = sizes().into_iter().filter(|r| r.width <= 320).collect();
        let bytes = photo(1600, 1200);
        let whole = crate::thumbnails(&bytes, &small, &LIMITS).unwrap();
        let mut made = Vec::new();
        thumbnails_each_streaming(
            Trickle {
                bytes: &bytes,
                step: 4096,
            },
            &small,
            &LIMITS,
            |_| false,
            |i, t| made.push((i, t)),
        )
        .unwrap();
        assert_eq!(sorted(made), whole);
        // The limit still holds for the bytes no longer kept.
        let tight = Limits {
            max_source_bytes: bytes.len() as u64 - 1,
            ..LIMITS
        };
        let source = Trickle {
            bytes: &bytes,
            step: 4096,
        };
        let got = thumbnails_each_streaming(source, &small, &tight, |_| false, |_, _| {});
        assert!(matches!(got, Err(Error::TooLarge(_))), "{got:?}");
    }

    /// Hands out its bytes a few at a time, then fails instead of ending.
    struct NoEnd<'a>(Trickle<'a>);

    impl Read for NoEnd<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.read(buf)? {
                0 => Err(io::Error::other("the end was asked for")),
                n => Ok(n),
            }
        }
    }

    /// Every size made from `source` before its end is read (where `NoEnd` fails).
    fn made_before_the_end(bytes: &[u8], step: usize, sizes: &[Request]) -> Vec<Thumbnail> {
        let mut made = Vec::new();
        let source = NoEnd(Trickle { bytes, step });
        let got = thumbnails_each_streaming(
            source,
            sizes,
            &LIMITS,
            |_| false,
            |i, t| {
                made.push((i, t));
            },
        );
        assert!(got.is_err(), "the source's failure is the call's");
        sorted(made)
    }

    #[test]
    fn jpegs_and_pngs_are_decoded_before_their_source_ends() {
        // A JPEG's first decode (here all of its sizes) and a PNG's one decode are made
        // from the bytes as they come, before the source's end is read, and are the bytes
        // of the other path. A GIF still is made from all of its bytes: none before.
        let small: Vec<Request> = sizes().into_iter().filter(|r| r.width <= 320).collect();
        for bytes in [photo(1600, 1200), png(900, 700)] {
            let whole = crate::thumbnails(&bytes, &small, &LIMITS).unwrap();
            for step in [1 << 20, 4096, 777] {
                assert_eq!(
                    made_before_the_end(&bytes, step, &small),
                    whole,
                    "step {step}"
                );
            }
        }
        assert!(made_before_the_end(&gif(300, 200), 4096, &small).is_empty());
    }

    /// `png` with a `tEXt` chunk of `text_bytes` after its header, so its first image data
    /// starts that far in.
    fn png_with_text(width: u32, height: u32, text_bytes: usize) -> Vec<u8> {
        let plain = png(width, height);
        let mut chunk = b"tEXt".to_vec();
        chunk.extend(b"Comment\0");
        chunk.resize(4 + text_bytes, b'x');
        let mut crc = !0u32;
        for byte in &chunk {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        // Signature (8) and IHDR (4 length + 4 type + 13 data + 4 CRC) come first.
        let after_header = 8 + 25;
        let mut out = plain[..after_header].to_vec();
        out.extend((chunk.len() as u32 - 4).to_be_bytes());
        out.extend(&chunk);
        out.extend((!crc).to_be_bytes());
        out.extend(&plain[after_header..]);
        out
    }

    #[test]
    fn a_png_whose_header_ends_past_the_sniffed_bytes_is_made_after_its_end() {
        // 8 KiB of text before the image data: the header is not checked from the sniffed
        // bytes, so the PNG is made from all of its bytes, the same as the other path.
        let bytes = png_with_text(300, 200, 8192);
        let whole = crate::thumbnails(&bytes, &sizes(), &LIMITS).unwrap();
        assert_eq!(sorted(streamed(&bytes, 4096, None).unwrap()), whole);
        assert!(made_before_the_end(&bytes, 4096, &sizes()).is_empty());
    }

    #[test]
    fn the_forward_only_reader_tells_its_position_and_refuses_to_seek() {
        use io::{BufRead as _, Seek as _};
        let mut reader = ForwardOnly {
            inner: ReadAhead::new(&b"0123456789"[..]),
            position: 0,
        };
        let mut three = [0; 3];
        reader.read_exact(&mut three).unwrap();
        assert_eq!(&three, b"012");
        reader.fill_buf().unwrap();
        reader.consume(2);
        assert_eq!(reader.stream_position().unwrap(), 5);
        assert!(reader.seek(io::SeekFrom::Start(0)).is_err());
        assert!(reader.seek(io::SeekFrom::Current(1)).is_err());
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"56789");
    }

    #[test]
    fn a_progressive_jpeg_streams_to_the_same_bytes() {
        // Every scan is read before any pixel comes out; from the stream or not, the same.
        let img = RgbImage::from_fn(1200, 900, |x, y| {
            image::Rgb([
                (x * 5 % 251) as u8,
                (y * 11 % 241) as u8,
                ((x + y) % 256) as u8,
            ])
        });
        let mut bytes = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, 90);
        encoder.set_progressive(true);
        encoder
            .encode(img.as_raw(), 1200, 900, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        let whole = crate::thumbnails(&bytes, &sizes(), &LIMITS).unwrap();
        for step in [1 << 20, 4096, 777] {
            assert_eq!(
                sorted(streamed(&bytes, step, None).unwrap()),
                whole,
                "step {step}"
            );
        }
    }

    #[test]
    fn it_says_when_it_decoded() {
        let when = |bytes: &[u8]| {
            let source = Trickle { bytes, step: 4096 };
            thumbnails_each_streaming(source, &sizes(), &LIMITS, |_| false, |_, _| {}).unwrap()
        };
        assert_eq!(when(&photo(1200, 900)), Decoded::AsItArrived);
        assert_eq!(when(&png(900, 700)), Decoded::AsItArrived);
        assert_eq!(when(&gif(300, 200)), Decoded::AfterItsEnd);
        assert_eq!(when(&png_with_text(300, 200, 8192)), Decoded::AfterItsEnd);
    }

    #[test]
    fn a_waited_for_size_comes_first() {
        let made = streamed(&photo(1200, 900), 4096, Some(3)).unwrap();
        assert_eq!(made[0].0, 3);
        assert_eq!(made.len(), sizes().len());
    }

    #[test]
    fn the_limits_hold() {
        for bytes in [photo(640, 480), png(640, 480)] {
            let few_bytes = Limits {
                max_source_bytes: bytes.len() as u64 - 1,
                ..LIMITS
            };
            let few_pixels = Limits {
                max_pixels: 640 * 480 - 1,
                ..LIMITS
            };
            for limits in [few_bytes, few_pixels] {
                let source = Trickle {
                    bytes: &bytes,
                    step: 4096,
                };
                let got =
                    thumbnails_each_streaming(source, &sizes(), &limits, |_| false, |_, _| {});
                assert!(matches!(got, Err(Error::TooLarge(_))), "{got:?}");
            }
        }
    }

    #[test]
    fn a_cut_or_failing_source_is_an_error() {
        // Cut short: whatever the other path makes of it (jpeg-decoder fills in), never a
        // different answer.
        for bytes in [photo(640, 480), png(640, 480)] {
            let cut = &bytes[..bytes.len() / 2];
            match crate::thumbnails(cut, &sizes(), &LIMITS) {
                Ok(whole) => assert_eq!(sorted(streamed(cut, 4096, None).unwrap()), whole),
                Err(_) => assert!(streamed(cut, 4096, None).is_err()),
            }
        }
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("client went away"))
            }
        }
        let got = thumbnails_each_streaming(Failing, &sizes(), &LIMITS, |_| false, |_, _| {});
        assert!(matches!(got, Err(Error::Undecodable(_))), "{got:?}");
        assert!(matches!(
            streamed(b"just some text", 3, None),
            Err(Error::NotAnImage)
        ));
    }
}
