//! The query strings the endpoints read, each as a serde struct that actix-web's
//! `web::Query` (serde_urlencoded: percent-decoding, `+` as space) fills.
//!
//! Every field is the parameter's raw text, `None` when absent: a typed field would make a
//! bad value the extractor's generic error, while each handler answers the exact Matrix
//! error Synapse gives for that parameter (`M_MISSING_PARAM` / `M_INVALID_PARAM` and its
//! message). Unknown parameters are ignored; a parameter an endpoint reads given twice is
//! refused with 400 `M_INVALID_PARAM`, as `web::Query` refuses it. All the structs live
//! here, so the whole query surface of the API is one page.

use actix_web::{web, HttpRequest};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{invalid_query, MatrixResult};

/// Reads the request's query string into `T`. Called where the handler needs the values
/// (after authentication, as before), not as an extractor, so the order in which a request's
/// faults are reported does not depend on the query string.
pub fn read<T: DeserializeOwned>(req: &HttpRequest) -> MatrixResult<T> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(invalid_query)
}

/// Every authenticated endpoint: the token when there is no `Authorization` header.
#[derive(Debug, Default, Deserialize)]
pub struct AccessTokenQuery {
    pub access_token: Option<String>,
}

/// Downloads (`media/download.rs`).
#[derive(Debug, Default, Deserialize)]
pub struct DownloadQuery {
    /// Milliseconds to wait for a created-but-not-uploaded media.
    pub timeout_ms: Option<String>,
    /// `false`: a legacy download must not fetch remote media.
    pub allow_remote: Option<String>,
}

/// Thumbnails, ours and over federation (`media/thumbnail.rs`).
#[derive(Debug, Default, Deserialize)]
pub struct ThumbnailQuery {
    pub width: Option<String>,
    pub height: Option<String>,
    /// `crop` | `scale`.
    pub method: Option<String>,
    /// `true` | `false`.
    pub animated: Option<String>,
}

/// Uploads (`media/upload.rs`).
#[derive(Debug, Default, Deserialize)]
pub struct UploadQuery {
    pub filename: Option<String>,
}

/// The admin API's pages of a user's media (`admin/synapse.rs`, `admin/purge.rs`).
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub from: Option<String>,
    pub limit: Option<String>,
    pub order_by: Option<String>,
    /// `f` | `b`.
    pub dir: Option<String>,
}

/// The admin API's purges of remote media (`admin/purge.rs`).
#[derive(Debug, Default, Deserialize)]
pub struct BeforeTsQuery {
    /// Milliseconds since the epoch.
    pub before_ts: Option<String>,
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn values_are_percent_decoded_and_unknown_parameters_ignored() {
        let req = TestRequest::get()
            .uri("/x?filename=a%20b+c%2Fd.png&access_token=t&other=1")
            .to_http_request();
        let upload: UploadQuery = read(&req).expect("a valid query");
        assert_eq!(upload.filename.as_deref(), Some("a b c/d.png"));
        let token: AccessTokenQuery = read(&req).expect("a valid query");
        assert_eq!(token.access_token.as_deref(), Some("t"));
    }

    #[test]
    fn absent_and_empty_parameters_are_told_apart() {
        let req = TestRequest::get()
            .uri("/x?width=&method=crop")
            .to_http_request();
        let asked: ThumbnailQuery = read(&req).expect("a valid query");
        assert_eq!(asked.width.as_deref(), Some(""));
        assert_eq!(asked.height, None);
        assert_eq!(asked.method.as_deref(), Some("crop"));
        let none: ThumbnailQuery =
            read(&TestRequest::get().uri("/x").to_http_request()).expect("an empty query");
        assert_eq!(none.width, None);
    }

    #[test]
    fn a_parameter_given_twice_is_invalid() {
        let req = TestRequest::get()
            .uri("/x?limit=1&limit=2")
            .to_http_request();
        let err = read::<PageQuery>(&req).expect_err("a repeated parameter");
        assert_eq!(err.status.as_u16(), 400);
        assert_eq!(err.errcode, "M_INVALID_PARAM");
        // Repeats of a parameter the endpoint does not read do not matter.
        let other: BeforeTsQuery = read(&req).expect("limit is not read here");
        assert_eq!(other.before_ts, None);
    }
}
