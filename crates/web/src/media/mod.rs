//! The Matrix content-repository endpoints: upload, async upload, download, config.

pub mod access;
pub mod body;
pub mod download;
pub mod early_thumbnails;
pub mod quarantine;
pub mod remote;
pub mod remote_shared;
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
