//! Streaming parser for the federation media response
//! (`GET /_matrix/federation/v1/media/download|thumbnail/…`): `multipart/mixed` with
//! exactly two parts, a JSON object and then either the media bytes or a part with only a
//! `Location` header (a redirect).
//!
//! The media bytes are handed on as they arrive: the parser holds back at most one
//! delimiter's length (`\r\n--` + boundary, ≤ 74 bytes) to recognise the closing delimiter,
//! so a 1 GiB file costs no more memory than a small one. Everything before the media (the
//! preamble, part headers, the JSON part) is bounded by the constants below.
//!
//! Wire shape, as Synapse sends it (peers/FEDERATION.md) and ruma writes it:
//!
//! ```text
//! \r\n--B\r\n                                   preamble "" + delimiter (the CRLF before
//! Content-Type: application/json\r\n             "--B" belongs to the delimiter; a body may
//! \r\n                                           also start with "--B" directly)
//! {}\r\n--B\r\n                                  JSON part, delimiter
//! Content-Type: application/octet-stream\r\n     media part headers (or `Location: …`)
//! Content-Disposition: attachment; filename=x\r\n
//! \r\n
//! <bytes>\r\n--B--\r\n                           media, close delimiter, epilogue (ignored)
//! ```
//!
//! A `\r\n--B` counts as a delimiter only when followed by `--`, or by optional spaces/tabs
//! and CRLF (RFC 2046); anything else is media data. The stream ends with an error, never
//! silently, if the body stops before the close delimiter or a third part begins.

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use memchr::memmem;
use serde_json::Value;

use crate::error::MultipartError;
use crate::http_syntax::{is_token_char, quoted_string};

/// Largest JSON part (today always `{}`); more is a broken or hostile peer.
pub const MAX_JSON_PART_BYTES: usize = 64 * 1024;

/// Header bytes of both parts together, including their blank lines. Real ones are under
/// 300 bytes (a Content-Type and a Content-Disposition with a file name).
pub const MAX_PART_HEADERS_BYTES: usize = 16 * 1024;

/// Bytes allowed before the first delimiter. Synapse and ruma send none (just the CRLF
/// that belongs to the delimiter); RFC 2046 allows a preamble, so some room.
pub const MAX_PREAMBLE_BYTES: usize = 1024;

/// Spaces and tabs allowed between a delimiter and its CRLF (RFC 2046 transport padding).
pub const MAX_TRANSPORT_PADDING: usize = 64;

/// Longest boundary RFC 2046 allows.
pub const MAX_BOUNDARY_LEN: usize = 70;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Entry point: see [`MultipartMedia::parse`].
pub struct MultipartMedia;

/// A parsed federation media response.
pub enum MediaResponse<S> {
    /// The media itself; `body` yields its bytes as they arrive.
    Bytes {
        json: Value,
        content_type: Option<String>,
        content_disposition: Option<String>,
        body: MediaBody<S>,
    },
    /// The media is at `location` (to be fetched without X-Matrix auth).
    Redirect { json: Value, location: String },
}

impl<S> fmt::Debug for MediaResponse<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaResponse::Bytes {
                json,
                content_type,
                content_disposition,
                body: _,
            } => f
                .debug_struct("Bytes")
                .field("json", json)
                .field("content_type", content_type)
                .field("content_disposition", content_disposition)
                .finish_non_exhaustive(),
            MediaResponse::Redirect { json, location } => f
                .debug_struct("Redirect")
                .field("json", json)
                .field("location", location)
                .finish(),
        }
    }
}

impl MultipartMedia {
    /// Reads the response up to the start of the media bytes (or to the end, for a
    /// redirect). `content_type` is the response's `Content-Type` header; `body` its byte
    /// stream (reqwest's `bytes_stream()`, for one).
    pub async fn parse<S, E>(
        content_type: &str,
        body: S,
    ) -> Result<MediaResponse<S>, MultipartError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: Into<BoxError>,
    {
        let boundary = boundary_from_content_type(content_type)?;
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        let mut reader = Reader {
            stream: Box::pin(body),
            // A CRLF of our own, so a body that starts with "--B" (no preamble) matches
            // the delimiter pattern "\r\n--B" like every later delimiter does.
            buf: BytesMut::from(&b"\r\n"[..]),
            delimiter,
        };
        let mut header_budget = MAX_PART_HEADERS_BYTES;

        reader.skip_preamble().await?;
        let headers = reader.read_headers(&mut header_budget).await?;
        if !headers.get("content-type")?.is_some_and(is_json) {
            return Err(MultipartError::FirstPartNotJson);
        }
        let json = reader.read_json().await?;

        let headers = reader.read_headers(&mut header_budget).await?;
        if let Some(location) = headers.get("location")? {
            if location.is_empty() {
                return Err(MultipartError::MalformedHeaders("empty Location"));
            }
            reader.expect_close().await?;
            return Ok(MediaResponse::Redirect {
                json,
                location: location.to_owned(),
            });
        }
        Ok(MediaResponse::Bytes {
            json,
            content_type: headers.get("content-type")?.map(str::to_owned),
            content_disposition: headers.get("content-disposition")?.map(str::to_owned),
            body: MediaBody {
                reader,
                done: false,
            },
        })
    }
}

/// The boundary parameter of a `multipart/mixed` content type, quoted or not, checked
/// against RFC 2046 (1–70 characters of `bchars`, not ending in a space).
pub fn boundary_from_content_type(content_type: &str) -> Result<String, MultipartError> {
    let (media_type, params) = content_type.split_once(';').unwrap_or((content_type, ""));
    if !media_type
        .trim_matches([' ', '\t'])
        .eq_ignore_ascii_case("multipart/mixed")
    {
        let shown: String = content_type.chars().take(100).collect();
        return Err(MultipartError::NotMultipart(shown));
    }
    let mut boundary = None;
    let mut rest = params;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            break;
        }
        let name_end = rest.find(['=', ';']).unwrap_or(rest.len());
        let name = rest[..name_end].trim_end_matches([' ', '\t']);
        rest = &rest[name_end..];
        let Some(after) = rest.strip_prefix('=') else {
            continue; // A parameter without a value: nothing to read.
        };
        let after = after.trim_start_matches([' ', '\t']);
        let value;
        (value, rest) = match after.strip_prefix('"') {
            Some(quoted) => quoted_string(quoted).ok_or(MultipartError::BadBoundary)?,
            None => {
                let end = after.find(';').unwrap_or(after.len());
                let token = after[..end].trim_end_matches([' ', '\t']);
                (token.to_owned(), &after[end..])
            }
        };
        if name.eq_ignore_ascii_case("boundary") && boundary.replace(value).is_some() {
            return Err(MultipartError::BadBoundary); // Two boundaries: which one?
        }
    }
    let boundary = boundary.ok_or(MultipartError::MissingBoundary)?;
    if boundary.is_empty()
        || boundary.len() > MAX_BOUNDARY_LEN
        || boundary.ends_with(' ')
        || !boundary.bytes().all(is_bchar)
    {
        return Err(MultipartError::BadBoundary);
    }
    Ok(boundary)
}

/// RFC 2046 `bchars`.
fn is_bchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b)
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("");
    essence
        .trim_matches([' ', '\t'])
        .eq_ignore_ascii_case("application/json")
}

/// The media bytes of a [`MediaResponse::Bytes`], as they arrive. Ends after the close
/// delimiter; ends with an error if the body stops early, fails, or has a third part.
pub struct MediaBody<S> {
    reader: Reader<S>,
    done: bool,
}

impl<S> fmt::Debug for MediaBody<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaBody")
            .field("buffered", &self.reader.buf.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<S, E> Stream for MediaBody<S>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<BoxError>,
{
    type Item = Result<Bytes, MultipartError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // MediaBody is Unpin: the inner stream is already boxed and pinned.
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.reader.body_step() {
                BodyStep::Data(bytes) => return Poll::Ready(Some(Ok(bytes))),
                BodyStep::End => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                BodyStep::Fail(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                BodyStep::NeedMore => {}
            }
            match ready!(this.reader.stream.as_mut().poll_next(cx)) {
                Some(Ok(chunk)) => this.reader.buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(MultipartError::Body(e.into()))));
                }
                None => {
                    this.done = true;
                    return Poll::Ready(Some(Err(MultipartError::Truncated)));
                }
            }
        }
    }
}

enum BodyStep {
    Data(Bytes),
    NeedMore,
    End,
    Fail(MultipartError),
}

/// The response body and the bytes read from it but not yet consumed.
struct Reader<S> {
    stream: Pin<Box<S>>,
    buf: BytesMut,
    /// `\r\n--` + boundary.
    delimiter: Vec<u8>,
}

impl<S, E> Reader<S>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<BoxError>,
{
    /// Appends the next chunk; an early end of the body is `Truncated`.
    async fn fill(&mut self) -> Result<(), MultipartError> {
        match self.stream.next().await {
            Some(Ok(chunk)) => {
                self.buf.extend_from_slice(&chunk);
                Ok(())
            }
            Some(Err(e)) => Err(MultipartError::Body(e.into())),
            None => Err(MultipartError::Truncated),
        }
    }

    /// Drops everything up to the first delimiter, leaving the CRLF that ends its line.
    async fn skip_preamble(&mut self) -> Result<(), MultipartError> {
        // Our own CRLF is not the peer's preamble.
        let max = MAX_PREAMBLE_BYTES + 2;
        let mut from = 0;
        loop {
            match scan(&self.buf, &self.delimiter, from) {
                Scan::Part { at, crlf } if at <= max => {
                    self.buf.advance(crlf);
                    return Ok(());
                }
                Scan::Part { .. } => from = max + 1,
                Scan::Close { .. } => return Err(MultipartError::MissingJsonPart),
                Scan::NotFound { safe } => from = safe,
                Scan::NeedMore { at } => from = at,
            }
            if from > max {
                return Err(MultipartError::PreambleTooLarge {
                    max: MAX_PREAMBLE_BYTES,
                });
            }
            self.fill().await?;
        }
    }

    /// Reads a part's headers. The buffer starts at the CRLF ending the delimiter line, so
    /// the headers end at the first `\r\n\r\n` (at offset 0 when there are none).
    async fn read_headers(&mut self, budget: &mut usize) -> Result<PartHeaders, MultipartError> {
        let too_large = MultipartError::HeadersTooLarge {
            max: MAX_PART_HEADERS_BYTES,
        };
        let mut from = 0;
        loop {
            if let Some(end) = memmem::find(&self.buf[from..], b"\r\n\r\n") {
                let end = from + end;
                let used = end + 4;
                if used > *budget {
                    return Err(too_large);
                }
                let headers = PartHeaders::parse(self.buf.get(2..end).unwrap_or_default())?;
                self.buf.advance(used);
                *budget -= used;
                return Ok(headers);
            }
            if self.buf.len() > *budget {
                return Err(too_large);
            }
            // Resume where a terminator could still start.
            from = self.buf.len().saturating_sub(3);
            self.fill().await?;
        }
    }

    /// Reads the JSON part's body and the delimiter after it.
    async fn read_json(&mut self) -> Result<Value, MultipartError> {
        let too_large = MultipartError::JsonTooLarge {
            max: MAX_JSON_PART_BYTES,
        };
        let mut from = 0;
        loop {
            match scan(&self.buf, &self.delimiter, from) {
                Scan::Part { at, crlf } => {
                    if at > MAX_JSON_PART_BYTES {
                        return Err(too_large);
                    }
                    let json: Value = serde_json::from_slice(&self.buf[..at])
                        .map_err(MultipartError::InvalidJson)?;
                    if !json.is_object() {
                        return Err(MultipartError::JsonNotObject);
                    }
                    self.buf.advance(crlf);
                    return Ok(json);
                }
                Scan::Close { .. } => return Err(MultipartError::MissingMediaPart),
                Scan::NotFound { safe } => from = safe,
                Scan::NeedMore { at } => from = at,
            }
            if from > MAX_JSON_PART_BYTES {
                return Err(too_large);
            }
            self.fill().await?;
        }
    }

    /// After a redirect part's headers: nothing but the close delimiter.
    async fn expect_close(&mut self) -> Result<(), MultipartError> {
        loop {
            match scan(&self.buf, &self.delimiter, 0) {
                Scan::Close { at: 0 } => return Ok(()),
                Scan::Part { at: 0, .. } => return Err(MultipartError::ExtraPart),
                Scan::NeedMore { at: 0 } | Scan::NotFound { safe: 0 } => {}
                _ => return Err(MultipartError::RedirectWithBody),
            }
            self.fill().await?;
        }
    }

    /// One step of the media part: hand on what cannot be part of a delimiter, stop at the
    /// close delimiter.
    fn body_step(&mut self) -> BodyStep {
        let (data_len, then) = match scan(&self.buf, &self.delimiter, 0) {
            Scan::NotFound { safe } => (safe, BodyStep::NeedMore),
            Scan::NeedMore { at } => (at, BodyStep::NeedMore),
            Scan::Part { at, .. } => (at, BodyStep::Fail(MultipartError::ExtraPart)),
            Scan::Close { at } => (at, BodyStep::End),
        };
        if data_len > 0 {
            BodyStep::Data(self.buf.split_to(data_len).freeze())
        } else {
            then
        }
    }
}

/// Where the next delimiter is, as far as `buf` tells.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// No delimiter starts before `safe` (later bytes may begin one).
    NotFound { safe: usize },
    /// `\r\n--B` at `at`, but the bytes after it have not arrived yet.
    NeedMore { at: usize },
    /// A delimiter at `at`; the CRLF ending its line is at `crlf`.
    Part { at: usize, crlf: usize },
    /// A close delimiter (`\r\n--B--`) at `at`.
    Close { at: usize },
}

/// Finds the first delimiter in `buf` at or after `from`.
fn scan(buf: &[u8], delimiter: &[u8], from: usize) -> Scan {
    let mut from = from.min(buf.len());
    loop {
        let Some(found) = memmem::find(&buf[from..], delimiter) else {
            let safe = buf.len().saturating_sub(delimiter.len() - 1).max(from);
            return Scan::NotFound { safe };
        };
        let at = from + found;
        let after = &buf[at + delimiter.len()..];
        match after {
            [] | [b'-'] => return Scan::NeedMore { at },
            [b'-', b'-', ..] => return Scan::Close { at },
            _ => {}
        }
        let padding = after
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
        if padding <= MAX_TRANSPORT_PADDING {
            match &after[padding..] {
                [] | [b'\r'] => return Scan::NeedMore { at },
                [b'\r', b'\n', ..] => {
                    return Scan::Part {
                        at,
                        crlf: at + delimiter.len() + padding,
                    }
                }
                _ => {}
            }
        }
        // "\r\n--B" followed by something else: data that looks like a delimiter.
        from = at + 1;
    }
}

/// Header fields of one part, names lower-cased.
struct PartHeaders {
    fields: Vec<(String, String)>,
}

impl PartHeaders {
    fn parse(block: &[u8]) -> Result<PartHeaders, MultipartError> {
        let text = std::str::from_utf8(block)
            .map_err(|_| MultipartError::MalformedHeaders("not UTF-8"))?;
        let mut fields: Vec<(String, String)> = Vec::new();
        if text.is_empty() {
            return Ok(PartHeaders { fields });
        }
        for line in text.split("\r\n") {
            if line.chars().any(|c| c.is_control() && c != '\t') {
                return Err(MultipartError::MalformedHeaders("control character"));
            }
            if line.starts_with([' ', '\t']) {
                // Obsolete line folding: the line continues the previous value.
                let (_, value) = fields
                    .last_mut()
                    .ok_or(MultipartError::MalformedHeaders("continuation line first"))?;
                value.push(' ');
                value.push_str(line.trim_matches([' ', '\t']));
                continue;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or(MultipartError::MalformedHeaders("line without ':'"))?;
            if name.is_empty() || !name.bytes().all(is_token_char) {
                return Err(MultipartError::MalformedHeaders("bad header name"));
            }
            fields.push((
                name.to_ascii_lowercase(),
                value.trim_matches([' ', '\t']).to_owned(),
            ));
        }
        Ok(PartHeaders { fields })
    }

    /// The value of `name` (lower case); a header given twice is an error, since the two
    /// could disagree.
    fn get(&self, name: &str) -> Result<Option<&str>, MultipartError> {
        let mut found = self.fields.iter().filter(|(n, _)| n == name);
        let first = found.next().map(|(_, v)| v.as_str());
        if found.next().is_some() {
            return Err(MultipartError::MalformedHeaders("repeated header"));
        }
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use rand::{Rng, SeedableRng};

    /// Synapse uses a random hex boundary of this shape.
    const B: &str = "1a2b3c4d5e6f40718293a4b5c6d7e8f9";

    fn content_type() -> String {
        format!("multipart/mixed; boundary={B}")
    }

    /// The exact shape Synapse 1.163 sent on loopback (peers/FEDERATION.md).
    fn synapse_wire(media: &[u8]) -> Vec<u8> {
        let mut wire = format!(
            "\r\n--{B}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{B}\r\n\
             Content-Type: application/octet-stream\r\n\
             Content-Disposition: attachment; filename=test.bin\r\n\r\n"
        )
        .into_bytes();
        wire.extend_from_slice(media);
        wire.extend_from_slice(format!("\r\n--{B}--\r\n").as_bytes());
        wire
    }

    type Chunks = stream::Iter<std::vec::IntoIter<Result<Bytes, std::io::Error>>>;

    fn chunked(wire: &[u8], cuts: &[usize]) -> Chunks {
        let mut chunks = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain([wire.len()].iter()) {
            chunks.push(Ok(Bytes::copy_from_slice(&wire[start..cut])));
            start = cut;
        }
        stream::iter(chunks)
    }

    fn one_byte_at_a_time(wire: &[u8]) -> Chunks {
        chunked(wire, &(1..wire.len()).collect::<Vec<_>>())
    }

    /// Media bytes, or the first error from parsing or from the body stream.
    async fn media_of(content_type: &str, body: Chunks) -> Result<Vec<u8>, MultipartError> {
        match MultipartMedia::parse(content_type, body).await? {
            MediaResponse::Bytes { mut body, .. } => {
                let mut out = Vec::new();
                while let Some(chunk) = body.next().await {
                    out.extend_from_slice(&chunk?);
                }
                // A finished body stays finished.
                assert!(body.next().await.is_none());
                Ok(out)
            }
            MediaResponse::Redirect { location, .. } => panic!("unexpected redirect {location}"),
        }
    }

    /// Media that tries hard to look like delimiters without being one.
    fn tricky_media() -> Vec<u8> {
        let mut media = Vec::new();
        media.extend_from_slice(format!("--{B}\r\n").as_bytes()); // no CRLF before it
        for cut in 0..=B.len() {
            media.extend_from_slice(format!("\r\n--{}", &B[..cut]).as_bytes());
            media.extend_from_slice(b"x");
        }
        media.extend_from_slice(format!("\r\n--{B}X\r\n").as_bytes()); // longer boundary
        media.extend_from_slice(format!("\r\n--{B} x\r\n").as_bytes()); // padding, no CRLF
        media.extend_from_slice(format!("\r\n--{B}-x").as_bytes()); // one dash only
        media.extend_from_slice(format!("\r\n--{B}\rx").as_bytes()); // CR without LF
        media.extend_from_slice(b"\r\r\n\r\n--\r\n-");
        media.extend((0..=255u8).cycle().take(3000));
        media.extend_from_slice(b"\r\n--");
        media
    }

    #[tokio::test]
    async fn synapse_wire_shape() {
        let media = b"hello federation\x00\xff".to_vec();
        let wire = synapse_wire(&media);
        let response = MultipartMedia::parse(&content_type(), chunked(&wire, &[]))
            .await
            .unwrap();
        let MediaResponse::Bytes {
            json,
            content_type,
            content_disposition,
            mut body,
        } = response
        else {
            panic!("expected bytes");
        };
        assert_eq!(json, serde_json::json!({}));
        assert_eq!(content_type.as_deref(), Some("application/octet-stream"));
        assert_eq!(
            content_disposition.as_deref(),
            Some("attachment; filename=test.bin")
        );
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(out, media);
    }

    #[tokio::test]
    async fn every_split_gives_the_same_bytes() {
        let media = tricky_media();
        let wire = synapse_wire(&media);
        let ct = content_type();
        assert_eq!(media_of(&ct, chunked(&wire, &[])).await.unwrap(), media);
        assert_eq!(
            media_of(&ct, one_byte_at_a_time(&wire)).await.unwrap(),
            media
        );
        // Every single cut position.
        for cut in 1..wire.len() {
            assert_eq!(
                media_of(&ct, chunked(&wire, &[cut])).await.unwrap(),
                media,
                "cut at {cut}"
            );
        }
        // Random splits, fixed seed so a failure reproduces.
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x006d_6564_6961);
        for _ in 0..300 {
            let mut cuts: Vec<usize> = (0..rng.gen_range(1..40))
                .map(|_| rng.gen_range(1..wire.len()))
                .collect();
            cuts.sort_unstable();
            cuts.dedup();
            assert_eq!(
                media_of(&ct, chunked(&wire, &cuts)).await.unwrap(),
                media,
                "{cuts:?}"
            );
        }
    }

    #[tokio::test]
    async fn empty_media_and_ruma_shape() {
        let ct = content_type();
        assert_eq!(
            media_of(&ct, chunked(&synapse_wire(b""), &[]))
                .await
                .unwrap(),
            b""
        );
        // ruma (conduwuit): lower-case names, no epilogue, extra whitespace in the JSON.
        let wire = format!(
            "\r\n--{B}\r\ncontent-type: application/json\r\n\r\n {{}} \r\n--{B}\r\n\
             content-type: text/plain\r\n\r\nsome plain text\r\n--{B}--"
        );
        assert_eq!(
            media_of(&ct, one_byte_at_a_time(wire.as_bytes()))
                .await
                .unwrap(),
            b"some plain text"
        );
        // RFC 2046 shape: no CRLF before the first delimiter, a preamble, padding after
        // delimiters, a part with no headers at all.
        let wire = format!(
            "preamble text\r\n--{B} \t\r\nContent-Type: application/json; charset=utf-8\r\n\r\n\
             {{\"a\":1}}\r\n--{B}  \r\n\r\nbytes\r\n--{B}--\r\nepilogue"
        );
        assert_eq!(
            media_of(&ct, chunked(wire.as_bytes(), &[])).await.unwrap(),
            b"bytes"
        );
        let wire = format!(
            "--{B}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{B}\r\n\r\nx\r\n--{B}--"
        );
        assert_eq!(
            media_of(&ct, chunked(wire.as_bytes(), &[])).await.unwrap(),
            b"x"
        );
    }

    #[tokio::test]
    async fn every_truncation_is_an_error() {
        let wire = synapse_wire(&tricky_media());
        // The response is complete once "--" of the close delimiter arrived.
        let complete = wire.len() - 2;
        for len in 0..complete {
            let result = media_of(&content_type(), chunked(&wire[..len], &[])).await;
            assert!(
                matches!(result, Err(MultipartError::Truncated)),
                "prefix of {len} bytes gave {result:?}"
            );
        }
        assert!(media_of(&content_type(), chunked(&wire[..complete], &[]))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn truncated_media_still_streams_what_arrived_then_fails() {
        let media = vec![b'm'; 10_000];
        let wire = synapse_wire(&media);
        let cut = wire.len() - 100;
        let response = MultipartMedia::parse(&content_type(), chunked(&wire[..cut], &[1000]))
            .await
            .unwrap();
        let MediaResponse::Bytes { mut body, .. } = response else {
            panic!("expected bytes")
        };
        let mut received = 0;
        let error = loop {
            match body.next().await {
                Some(Ok(chunk)) => received += chunk.len(),
                Some(Err(e)) => break e,
                None => panic!("ended without an error"),
            }
        };
        assert!(matches!(error, MultipartError::Truncated));
        assert!(received > 9_000 && received < media.len(), "{received}");
        assert!(body.next().await.is_none());
    }

    #[tokio::test]
    async fn streams_without_buffering_the_file() {
        // A channel-fed body: the media must come out while the sender still holds the
        // rest, with at most one delimiter length held back.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let body = stream::poll_fn(move |cx| rx.poll_recv(cx));
        let wire = synapse_wire(b"");
        let head = &wire[..wire.len() - format!("\r\n--{B}--\r\n").len()];
        tx.send(Ok(Bytes::copy_from_slice(head))).await.unwrap();
        let response = MultipartMedia::parse(&content_type(), body).await.unwrap();
        let MediaResponse::Bytes { mut body, .. } = response else {
            panic!("expected bytes")
        };
        let delimiter_len = 4 + B.len();
        let chunk = Bytes::from(vec![7u8; 256 * 1024]);
        let mut sent = 0;
        let mut received = 0;
        for _ in 0..8 {
            tx.send(Ok(chunk.clone())).await.unwrap();
            sent += chunk.len();
            while received < sent - (delimiter_len - 1) {
                received += body.next().await.unwrap().unwrap().len();
            }
            assert_eq!(received, sent - (delimiter_len - 1));
        }
        tx.send(Ok(Bytes::from(format!("\r\n--{B}--"))))
            .await
            .unwrap();
        drop(tx);
        while let Some(chunk) = body.next().await {
            received += chunk.unwrap().len();
        }
        assert_eq!(received, sent);
    }

    #[tokio::test]
    async fn redirect_part() {
        let wire = format!(
            "\r\n--{B}\r\nContent-Type: application/json\r\n\r\n{{\"k\":\"v\"}}\r\n--{B}\r\n\
             Location: https://cdn.example/media/abc?sig=1\r\n\r\n\r\n--{B}--\r\n"
        );
        for chunks in [
            chunked(wire.as_bytes(), &[]),
            one_byte_at_a_time(wire.as_bytes()),
        ] {
            let response = MultipartMedia::parse(&content_type(), chunks)
                .await
                .unwrap();
            let MediaResponse::Redirect { json, location } = response else {
                panic!("expected redirect");
            };
            assert_eq!(json, serde_json::json!({"k": "v"}));
            assert_eq!(location, "https://cdn.example/media/abc?sig=1");
        }
        let with_body = wire.replace("\r\n\r\n\r\n--", "\r\n\r\nbody\r\n--");
        assert!(matches!(
            MultipartMedia::parse(&content_type(), chunked(with_body.as_bytes(), &[])).await,
            Err(MultipartError::RedirectWithBody)
        ));
        let empty = wire.replace("https://cdn.example/media/abc?sig=1", "");
        assert!(matches!(
            MultipartMedia::parse(&content_type(), chunked(empty.as_bytes(), &[])).await,
            Err(MultipartError::MalformedHeaders(_))
        ));
        let third = wire.replace(&format!("--{B}--"), &format!("--{B}\r\n\r\nx\r\n--{B}--"));
        assert!(matches!(
            MultipartMedia::parse(&content_type(), chunked(third.as_bytes(), &[])).await,
            Err(MultipartError::ExtraPart)
        ));
    }

    async fn parse_error(wire: &[u8]) -> MultipartError {
        match media_of(&content_type(), chunked(wire, &[])).await {
            Err(e) => e,
            Ok(bytes) => panic!("parsed {} bytes", bytes.len()),
        }
    }

    #[tokio::test]
    async fn missing_or_bad_json_part() {
        let close = format!("\r\n--{B}--\r\n");
        assert!(matches!(
            parse_error(close.as_bytes()).await,
            MultipartError::MissingJsonPart
        ));
        // The media came first.
        let wire = format!(
            "\r\n--{B}\r\nContent-Type: application/octet-stream\r\n\r\n{{}}\r\n--{B}\r\n\r\nx{close}"
        );
        assert!(matches!(
            parse_error(wire.as_bytes()).await,
            MultipartError::FirstPartNotJson
        ));
        let wire = format!("\r\n--{B}\r\n\r\n{{}}\r\n--{B}\r\n\r\nx{close}");
        assert!(matches!(
            parse_error(wire.as_bytes()).await,
            MultipartError::FirstPartNotJson
        ));
        // Only the JSON part.
        let wire = format!("\r\n--{B}\r\nContent-Type: application/json\r\n\r\n{{}}{close}");
        assert!(matches!(
            parse_error(wire.as_bytes()).await,
            MultipartError::MissingMediaPart
        ));
        for (json, expected) in [("[1]", "not object"), ("{", "invalid"), ("", "invalid")] {
            let wire = format!(
                "\r\n--{B}\r\nContent-Type: application/json\r\n\r\n{json}\r\n--{B}\r\n\r\nx{close}"
            );
            let error = parse_error(wire.as_bytes()).await;
            match expected {
                "not object" => assert!(matches!(error, MultipartError::JsonNotObject)),
                _ => assert!(matches!(error, MultipartError::InvalidJson(_)), "{error:?}"),
            }
        }
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_JSON_PART_BYTES));
        let wire = format!(
            "\r\n--{B}\r\nContent-Type: application/json\r\n\r\n{big}\r\n--{B}\r\n\r\nx{close}"
        );
        assert!(matches!(
            parse_error(wire.as_bytes()).await,
            MultipartError::JsonTooLarge { .. }
        ));
        // Also when it arrives slowly and never ends.
        let endless = format!(
            "\r\n--{B}\r\nContent-Type: application/json\r\n\r\n{big}{}",
            "y".repeat(B.len() + 4)
        );
        let chunks = chunked(
            endless.as_bytes(),
            &(1..endless.len()).step_by(1000).collect::<Vec<_>>(),
        );
        assert!(matches!(
            media_of(&content_type(), chunks).await,
            Err(MultipartError::JsonTooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn headers_are_bounded_and_checked() {
        let close = format!("\r\n--{B}--\r\n");
        let huge = format!("X-Pad: {}\r\n", "p".repeat(MAX_PART_HEADERS_BYTES));
        let wire = format!(
            "\r\n--{B}\r\nContent-Type: application/json\r\n{huge}\r\n{{}}\r\n--{B}\r\n\r\nx{close}"
        );
        assert!(matches!(
            parse_error(wire.as_bytes()).await,
            MultipartError::HeadersTooLarge { .. }
        ));
        // Never-ending headers, one byte at a time.
        let endless = format!("\r\n--{B}\r\nContent-Type: application/json\r\n{huge}");
        assert!(matches!(
            media_of(&content_type(), one_byte_at_a_time(endless.as_bytes())).await,
            Err(MultipartError::HeadersTooLarge { .. })
        ));
        // The bound is on both parts together: two halves that each fit do not.
        let half = format!("X-Pad: {}\r\n", "p".repeat(MAX_PART_HEADERS_BYTES / 2));
        let wire = format!(
            "\r\n--{B}\r\nContent-Type: application/json\r\n{half}\r\n{{}}\r\n--{B}\r\n{half}\r\nx{close}"
        );
        assert!(matches!(
            parse_error(wire.as_bytes()).await,
            MultipartError::HeadersTooLarge { .. }
        ));
        for bad in [
            "Content-Type application/json\r\n",
            "Content-Type: application/json\r\nContent-Type: application/json\r\n",
            " folded-first: x\r\nContent-Type: application/json\r\n",
            "Bad Name: x\r\nContent-Type: application/json\r\n",
            "Content-Type: application/json\rX: y\r\n",
        ] {
            let wire = format!("\r\n--{B}\r\n{bad}\r\n{{}}\r\n--{B}\r\n\r\nx{close}");
            let error = parse_error(wire.as_bytes()).await;
            assert!(
                matches!(error, MultipartError::MalformedHeaders(_)),
                "{bad:?} gave {error:?}"
            );
        }
        // Folded (obsolete) header lines are joined.
        let wire = format!(
            "\r\n--{B}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{B}\r\n\
             Content-Disposition: attachment;\r\n filename=a.bin\r\n\r\nx{close}"
        );
        let response = MultipartMedia::parse(&content_type(), chunked(wire.as_bytes(), &[]))
            .await
            .unwrap();
        let MediaResponse::Bytes {
            content_disposition,
            content_type,
            ..
        } = response
        else {
            panic!("expected bytes");
        };
        assert_eq!(
            content_disposition.as_deref(),
            Some("attachment; filename=a.bin")
        );
        assert_eq!(content_type, None);
    }

    #[tokio::test]
    async fn preamble_is_bounded() {
        let wire = format!(
            "{}\r\n--{B}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{B}\r\n\r\nx\r\n--{B}--",
            "p".repeat(MAX_PREAMBLE_BYTES + 1)
        );
        assert!(matches!(
            parse_error(wire.as_bytes()).await,
            MultipartError::PreambleTooLarge { .. }
        ));
        let ok = wire.replacen('p', "", 1);
        assert_eq!(
            media_of(&content_type(), chunked(ok.as_bytes(), &[]))
                .await
                .unwrap(),
            b"x"
        );
    }

    #[tokio::test]
    async fn third_part_after_media_is_an_error_after_the_media() {
        let wire = format!(
            "\r\n--{B}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{B}\r\n\r\nmedia\
             \r\n--{B}\r\nContent-Type: text/plain\r\n\r\nmore\r\n--{B}--\r\n"
        );
        let response = MultipartMedia::parse(&content_type(), chunked(wire.as_bytes(), &[]))
            .await
            .unwrap();
        let MediaResponse::Bytes { mut body, .. } = response else {
            panic!("expected bytes")
        };
        assert_eq!(body.next().await.unwrap().unwrap(), Bytes::from("media"));
        assert!(matches!(
            body.next().await,
            Some(Err(MultipartError::ExtraPart))
        ));
        assert!(body.next().await.is_none());
    }

    #[test]
    fn parsing_and_the_body_are_send_for_a_send_stream() {
        // The web layer spawns these on tokio: a !Send future would not compile there.
        fn assert_send<T: Send>(_: &T) {}
        let parse = MultipartMedia::parse(B, chunked(b"", &[]));
        assert_send(&parse);
        let body: Option<MediaBody<Chunks>> = None;
        assert_send(&body);
    }

    #[tokio::test]
    async fn body_errors_are_passed_on() {
        let wire = synapse_wire(b"abc");
        let split = wire.len() - 5;
        let chunks = vec![
            Ok(Bytes::copy_from_slice(&wire[..split])),
            Err(std::io::Error::other("connection reset")),
        ];
        let response = MultipartMedia::parse(&content_type(), stream::iter(chunks))
            .await
            .unwrap();
        let MediaResponse::Bytes { mut body, .. } = response else {
            panic!("expected bytes")
        };
        let mut error = None;
        while let Some(item) = body.next().await {
            if let Err(e) = item {
                error = Some(e);
            }
        }
        assert!(
            matches!(&error, Some(MultipartError::Body(e)) if e.to_string() == "connection reset"),
            "{error:?}"
        );
        let early = vec![Err(std::io::Error::other("refused"))];
        assert!(matches!(
            MultipartMedia::parse(&content_type(), stream::iter(early)).await,
            Err(MultipartError::Body(_))
        ));
    }

    /// Which error a bad content type must produce.
    type Expect = fn(&MultipartError) -> bool;

    #[test]
    fn boundary_parsing() {
        let ok = [
            ("multipart/mixed; boundary=abc", "abc"),
            ("Multipart/Mixed;boundary=\"abc\"", "abc"),
            ("multipart/mixed; charset=x; BOUNDARY = abc ; x=y", "abc"),
            (
                "multipart/mixed; x=\"a;b\"; boundary=\"with space:=?\"",
                "with space:=?",
            ),
        ];
        for (ct, expected) in ok {
            assert_eq!(boundary_from_content_type(ct).unwrap(), expected, "{ct}");
        }
        let seventy = "b".repeat(70);
        assert_eq!(
            boundary_from_content_type(&format!("multipart/mixed; boundary={seventy}")).unwrap(),
            seventy
        );
        let cases: [(&str, Expect); 9] = [
            ("application/json", |e| {
                matches!(e, MultipartError::NotMultipart(_))
            }),
            ("multipart/form-data; boundary=a", |e| {
                matches!(e, MultipartError::NotMultipart(_))
            }),
            ("multipart/mixed", |e| {
                matches!(e, MultipartError::MissingBoundary)
            }),
            ("multipart/mixed; boundary=", |e| {
                matches!(e, MultipartError::BadBoundary)
            }),
            ("multipart/mixed; boundary=\"ends \"", |e| {
                matches!(e, MultipartError::BadBoundary)
            }),
            ("multipart/mixed; boundary=a\u{e9}", |e| {
                matches!(e, MultipartError::BadBoundary)
            }),
            ("multipart/mixed; boundary=\"open", |e| {
                matches!(e, MultipartError::BadBoundary)
            }),
            // An escaped quote unescapes to '"', which is not a boundary character.
            ("multipart/mixed; boundary=\"q\\\"\"", |e| {
                matches!(e, MultipartError::BadBoundary)
            }),
            ("multipart/mixed; boundary=a; boundary=b", |e| {
                matches!(e, MultipartError::BadBoundary)
            }),
        ];
        for (ct, expected) in cases {
            let error = boundary_from_content_type(ct).unwrap_err();
            assert!(expected(&error), "{ct} gave {error:?}");
        }
        let seventy_one = format!("multipart/mixed; boundary={}", "b".repeat(71));
        assert!(matches!(
            boundary_from_content_type(&seventy_one),
            Err(MultipartError::BadBoundary)
        ));
    }

    #[test]
    fn scan_classifies_delimiters() {
        let d = b"\r\n--B";
        assert_eq!(scan(b"abcdefgh", d, 0), Scan::NotFound { safe: 4 });
        assert_eq!(scan(b"ab", d, 0), Scan::NotFound { safe: 0 });
        assert_eq!(scan(b"x\r\n--B", d, 0), Scan::NeedMore { at: 1 });
        assert_eq!(scan(b"x\r\n--B-", d, 0), Scan::NeedMore { at: 1 });
        assert_eq!(scan(b"x\r\n--B--", d, 0), Scan::Close { at: 1 });
        assert_eq!(scan(b"x\r\n--B \t\r", d, 0), Scan::NeedMore { at: 1 });
        assert_eq!(
            scan(b"x\r\n--B \t\r\n", d, 0),
            Scan::Part { at: 1, crlf: 8 }
        );
        // Not delimiters: scanning goes on past them.
        assert_eq!(scan(b"\r\n--Bx\r\n--B--", d, 0), Scan::Close { at: 6 });
        assert_eq!(scan(b"\r\n--B-x", d, 0), Scan::NotFound { safe: 3 });
        let padded = [
            b"\r\n--B".as_slice(),
            &[b' '; MAX_TRANSPORT_PADDING + 1],
            b"\r\n",
        ]
        .concat();
        assert!(matches!(scan(&padded, d, 0), Scan::NotFound { .. }));
    }
}
