//! Matrix JSON errors: the one place where failures become HTTP responses.
//!
//! Every error a client can see is `{"errcode": "...", "error": "..."}` with the status the
//! spec gives for that code. Internal failures are logged with their cause and answered with
//! a generic `M_UNKNOWN` so nothing about the machine leaks to the client.

use std::borrow::Cow;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

/// The errcode of media created but not uploaded yet (504), also read from other servers.
pub const NOT_YET_UPLOADED: &str = "M_NOT_YET_UPLOADED";

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
    pub fn not_json(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", message)
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
            NOT_YET_UPLOADED,
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

// Extractor errors. actix's own answers to a query string, path segment or JSON body its
// extractors refuse are plain text (paths even a 404), and not Matrix JSON; these handlers
// make them ours. Registered as app data on the listeners (`server.rs`). `web::Payload`
// (the upload body) has no extractor error: its stream errors reach the upload handler.
// Requests actix-http cannot even parse (a bad `Content-Length`, a header line without a
// colon) never reach the app: actix-http answers them 400 with an empty body itself, and
// nothing here can change that.

/// `web::Query` refused the query string: 400 `M_INVALID_PARAM`.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|err: QueryPayloadError, _req: &HttpRequest| invalid_query(err).into())
}

/// The answer to a query string `web::Query` refused, as an extractor or through
/// `query::read`.
pub fn invalid_query(err: QueryPayloadError) -> MatrixError {
    MatrixError::bad_param(format!("Invalid query string: {err}"))
}

/// `web::Path` could not read a path segment (e.g. not UTF-8 once percent-decoded):
/// 400 `M_INVALID_PARAM`.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err: PathError, _req: &HttpRequest| {
        MatrixError::bad_param(format!("Invalid path parameter: {err}")).into()
    })
}

/// `web::Json` refused the body: 413 `M_TOO_LARGE`, 400 `M_NOT_JSON` or 400 `M_BAD_JSON`.
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().error_handler(|err: JsonPayloadError, _req: &HttpRequest| {
        match &err {
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                MatrixError::too_large(err.to_string())
            }
            JsonPayloadError::ContentType => {
                MatrixError::not_json("Content-Type must be application/json")
            }
            JsonPayloadError::Deserialize(_) | JsonPayloadError::Serialize(_) => {
                MatrixError::bad_json(format!("Invalid JSON: {err}"))
            }
            _ => MatrixError::bad_json(format!("Could not read the JSON body: {err}")),
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    //! The extractor configs in an actix test service: what actix answers in plain text by
    //! default must come out as Matrix JSON.

    use actix_web::test::{call_service, init_service, read_body_json, TestRequest};
    use actix_web::{web, App, HttpResponse};
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Query {
        #[allow(dead_code)]
        n: u32,
    }

    async fn query(_: web::Query<Query>) -> HttpResponse {
        HttpResponse::Ok().finish()
    }

    async fn path(_: web::Path<u32>) -> HttpResponse {
        HttpResponse::Ok().finish()
    }

    async fn json(_: web::Json<Query>) -> HttpResponse {
        HttpResponse::Ok().finish()
    }

    #[actix_web::test]
    async fn extractor_errors_are_matrix_json() {
        let app = init_service(
            App::new()
                .app_data(query_config())
                .app_data(path_config())
                .app_data(json_config().limit(64))
                .route("/query", web::get().to(query))
                .route("/path/{n}", web::get().to(path))
                .route("/json", web::post().to(json)),
        )
        .await;
        let cases = [
            (
                TestRequest::get().uri("/query?n=abc").to_request(),
                400,
                "M_INVALID_PARAM",
            ),
            (
                TestRequest::get().uri("/path/abc").to_request(),
                400,
                "M_INVALID_PARAM",
            ),
            (
                TestRequest::post()
                    .uri("/json")
                    .insert_header(("content-type", "application/json"))
                    .set_payload("{\"n\": ")
                    .to_request(),
                400,
                "M_BAD_JSON",
            ),
            (
                TestRequest::post()
                    .uri("/json")
                    .insert_header(("content-type", "text/plain"))
                    .set_payload("{\"n\": 1}")
                    .to_request(),
                400,
                "M_NOT_JSON",
            ),
            (
                TestRequest::post()
                    .uri("/json")
                    .insert_header(("content-type", "application/json"))
                    .set_payload(format!("{{\"n\": 1, \"pad\": \"{}\"}}", "x".repeat(100)))
                    .to_request(),
                413,
                "M_TOO_LARGE",
            ),
        ];
        for (req, status, errcode) in cases {
            let uri = req.uri().to_string();
            let response = call_service(&app, req).await;
            assert_eq!(response.status().as_u16(), status, "{uri}");
            let body: serde_json::Value = read_body_json(response).await;
            assert_eq!(body["errcode"], errcode, "{uri}: {body}");
            assert!(
                body["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{uri}: {body}"
            );
        }
    }
}
