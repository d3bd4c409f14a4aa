//! The Matrix content-repository endpoints: upload, async upload, download, config.

pub mod access;
pub mod body;
pub mod download;
pub mod early_thumbnails;
pub mod quarantine;
pub mod remote;
pub mod remote_metrics;
pub mod remote_shared;
pub mod row_headers;
pub mod slots;
pub mod thumbnail;
pub mod upload;
pub mod upload_phases;

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::error::{MatrixError, MatrixResult};
use crate::state::AppState;

/// A validated `server/media_id` pair from a request path.
#[derive(Debug, Clone)]
pub struct MediaRef {
    pub origin: String,
    pub media_id: String,
}

impl MediaRef {
    /// Allow-lists both parts before they go anywhere near storage.
    pub fn parse(origin: &str, media_id: &str) -> MatrixResult<MediaRef> {
        if !mr_storage::is_valid_server_name(origin) {
            return Err(MatrixError::bad_param("Invalid server name in media path"));
        }
        if !mr_storage::is_valid_media_id(media_id) {
            return Err(MatrixError::bad_param("Invalid media ID"));
        }
        Ok(MediaRef {
            origin: origin.to_ascii_lowercase(),
            media_id: media_id.to_owned(),
        })
    }

    /// [`MediaRef::parse`] of parts the caller owns already (a request path's), reusing
    /// their buffers.
    pub fn from_owned(mut origin: String, media_id: String) -> MatrixResult<MediaRef> {
        if !mr_storage::is_valid_server_name(&origin) {
            return Err(MatrixError::bad_param("Invalid server name in media path"));
        }
        if !mr_storage::is_valid_media_id(&media_id) {
            return Err(MatrixError::bad_param("Invalid media ID"));
        }
        origin.make_ascii_lowercase();
        Ok(MediaRef { origin, media_id })
    }

    pub fn mxc(&self) -> String {
        format!("mxc://{}/{}", self.origin, self.media_id)
    }
}

/// A media path's part after `…/download` or `…/thumbnail`,
/// `/{server}/{media_id}[/{file_name}]`, when it needs no decoding: two or three non-empty
/// segments and no `%`. Such a path means the same bytes raw as decoded, so it can be
/// served without the route table's regexes (routes.rs registers the handlers'
/// `*_plain` variants for it); any other goes through the table.
pub fn plain_tail(tail: &str) -> Option<(&str, &str, Option<&str>)> {
    // One pass over the bytes: this runs twice per request (the route's guard, then the
    // handler), on the path the route table's regex would otherwise read.
    let bytes = tail.as_bytes();
    // Where each segment starts (just after its `/`); a fourth means too many segments.
    let mut starts = [0usize; 3];
    let mut segments = 0;
    for (at, byte) in bytes.iter().enumerate() {
        match byte {
            b'%' => return None,
            b'/' if segments == starts.len() => return None,
            b'/' => {
                starts[segments] = at + 1;
                segments += 1;
            }
            _ => {}
        }
    }
    // Segment `i` runs from its start to the byte before the next `/` (or the end).
    let segment = |i: usize| {
        let end = if i + 1 < segments {
            starts[i + 1] - 1
        } else {
            bytes.len()
        };
        tail.get(starts[i]..end).filter(|s| !s.is_empty())
    };
    if bytes.first() != Some(&b'/') || segments < 2 {
        return None;
    }
    let file_name = if segments == 3 {
        Some(segment(2)?)
    } else {
        None
    };
    Some((segment(0)?, segment(1)?, file_name))
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// `GET /_matrix/client/v1/media/config` and the legacy `/_matrix/media/{v3,r0}/config`.
pub async fn media_config(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    state.auth.authenticate(&req).await?;
    let config = state.config();
    Ok(HttpResponse::Ok().json(json!({ "m.upload.size": config.uploads.max_bytes })))
}

#[cfg(test)]
mod tests {
    use super::plain_tail;

    #[test]
    fn plain_tails_are_split_into_their_segments() {
        assert_eq!(
            plain_tail("/example.org/abcDEF123"),
            Some(("example.org", "abcDEF123", None))
        );
        assert_eq!(
            plain_tail("/example.org:8448/abc/cat+dog.png"),
            Some(("example.org:8448", "abc", Some("cat+dog.png")))
        );
        assert_eq!(
            plain_tail("/[::1]:8448/a_b-c"),
            Some(("[::1]:8448", "a_b-c", None))
        );
    }

    #[test]
    fn tails_the_route_table_must_decide_are_refused() {
        for tail in [
            "",
            "/",
            "/example.org",
            "example.org/abc",
            "//abc",
            "/example.org/",
            "/example.org//name",
            "/example.org/abc/",
            "/example.org/abc/name/more",
            "/example.org/abc/name/",
            "/example.org/a%62c",
            "/example%2Eorg/abc",
            "/example.org/abc/na%20me",
        ] {
            assert_eq!(plain_tail(tail), None, "{tail:?}");
        }
    }
}
