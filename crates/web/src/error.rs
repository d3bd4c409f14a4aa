//! Matrix JSON errors: the one place where failures become HTTP responses.
//!
//! Every error a client can see is `{"errcode": "...", "error": "..."}` with the status the
//! spec gives for that code. Internal failures are logged with their cause and answered with
//! a generic `M_UNKNOWN` so nothing about the machine leaks to the client.

use std::borrow::Cow;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// An error as the Matrix client-server API describes it.
#[derive(Debug, Clone)]
pub struct MatrixError {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub message: Cow<'static, str>,
    /// Seconds a client should wait before retrying (429 / 503).
    pub retry_after_secs: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    errcode: &'a str,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

impl MatrixError {
    pub fn new(
        status: StatusCode,
        errcode: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        MatrixError {
            status,
            errcode,
            message: message.into(),
            retry_after_secs: None,
        }
    }
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
    }
    pub fn unrecognized() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
            "Unrecognized request",
        )
    }
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "M_UNRECOGNIZED",
            "Method not allowed on this endpoint",
        )
    }
    pub fn missing_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "Missing access token",
        )
    }
    pub fn unknown_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "Unknown or expired access token",
        )
    }
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", message)
    }
    pub fn too_large(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", message)
    }
    pub fn bad_param(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", message)
    }
    pub fn bad_json(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", message)
    }
    pub fn limit_exceeded(message: impl Into<Cow<'static, str>>, retry_after_secs: u64) -> Self {
        let mut err = Self::new(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", message);
        err.retry_after_secs = Some(retry_after_secs);
        err
    }
    pub fn not_yet_uploaded() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "M_NOT_YET_UPLOADED",
            "The media has not been uploaded yet",
        )
    }
    pub fn cannot_overwrite() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "M_CANNOT_OVERWRITE_MEDIA",
            "Media already uploaded",
        )
    }
    pub fn range_not_satisfiable(size: u64) -> Self {
        Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "M_UNKNOWN",
            format!("Requested range not satisfiable (size {size})"),
        )
    }
    /// The homeserver that should vouch for the user could not be asked.
    pub fn homeserver_unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        let mut err = Self::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", message);
        err.retry_after_secs = Some(5);
        err
    }
    pub fn overloaded() -> Self {
        let mut err = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "M_UNKNOWN",
            "Server busy, try again",
        );
        err.retry_after_secs = Some(1);
        err
    }
    /// An internal failure: the cause is logged here, the client only learns that it happened.
    pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "Internal server error",
        )
    }
}

impl std::fmt::Display for MatrixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.errcode,
            self.message
        )
    }
}

impl ResponseError for MatrixError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let body = Body {
            errcode: self.errcode,
            error: &self.message,
            retry_after_ms: self.retry_after_secs.map(|s| s * 1000),
        };
        let mut response = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after_secs {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        response.json(body)
    }
}

pub type MatrixResult<T> = Result<T, MatrixError>;
