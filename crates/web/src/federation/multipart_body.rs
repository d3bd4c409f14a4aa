//! The body of a federation media answer: `multipart/mixed` with exactly two parts, the
//! JSON metadata (`{}`) and the media bytes with their own Content-Type and
//! Content-Disposition. The bytes stream through; only the two small frames around them
//! are built here, so the total length is known before the first byte is sent.

use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt};
use rand::distributions::Alphanumeric;
use rand::Rng;

/// Random characters of a boundary: 32 alphanumerics never occur by chance in the media's
/// bytes with any probability worth a thought, and are well inside RFC 2046's 70.
const BOUNDARY_LEN: usize = 32;

/// The frames of one answer.
pub struct MultipartFrames {
    pub boundary: String,
    head: Bytes,
    tail: Bytes,
}

impl MultipartFrames {
    /// Frames for media of `content_type`, served with `content_disposition`.
    pub fn new(content_type: &str, content_disposition: &str) -> MultipartFrames {
        let boundary: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(BOUNDARY_LEN)
            .map(char::from)
            .collect();
        let head = format!(
            "\r\n--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n\
             Content-Type: {content_type}\r\nContent-Disposition: {content_disposition}\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        MultipartFrames {
            boundary,
            head: Bytes::from(head),
            tail: Bytes::from(tail),
        }
    }

    /// The response's own Content-Type.
    pub fn content_type(&self) -> String {
        format!("multipart/mixed; boundary={}", self.boundary)
    }

    /// Length of the whole body for media of `media_len` bytes.
    pub fn total_len(&self, media_len: u64) -> u64 {
        self.head.len() as u64 + media_len + self.tail.len() as u64
    }

    /// The whole body: head frame, the media stream, tail frame.
    pub fn wrap<E>(
        self,
        media: impl Stream<Item = Result<Bytes, E>>,
    ) -> impl Stream<Item = Result<Bytes, E>> {
        stream::once(async move { Ok(self.head) })
            .chain(media)
            .chain(stream::once(async move { Ok(self.tail) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_around_the_bytes() {
        let frames = MultipartFrames::new("image/png", "inline; filename=a.png");
        let boundary = frames.boundary.clone();
        assert_eq!(
            frames.content_type(),
            format!("multipart/mixed; boundary={boundary}")
        );
        let total = frames.total_len(5);
        let parts: Vec<Bytes> = frames
            .wrap(stream::iter([
                Ok::<_, std::io::Error>(Bytes::from_static(b"he")),
                Ok(Bytes::from_static(b"llo")),
            ]))
            .map(|r| r.unwrap())
            .collect()
            .await;
        let body: Vec<u8> = parts.concat();
        assert_eq!(body.len() as u64, total);
        let expected = format!(
            "\r\n--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n\
             Content-Type: image/png\r\nContent-Disposition: inline; filename=a.png\r\n\r\nhello\r\n--{boundary}--\r\n"
        );
        assert_eq!(String::from_utf8(body).unwrap(), expected);
    }
}
