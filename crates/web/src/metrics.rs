//! Prometheus metrics of the HTTP layer and the `/metrics` endpoint.
//!
//! Every crate registers its metrics in the prometheus default registry; this module adds the
//! request-level ones (counted per route by `route_metrics.rs`) and renders the whole
//! registry as text. Every label value comes from a
//! closed set, never from what a client sent: the method is one of a few names or `other`,
//! the route is the matched route pattern or `unmatched` (never the raw path), the status
//! is its class (`2xx`). A client inventing methods or paths therefore cannot grow
//! `/metrics` (series are never freed) nor the log's span fields.

use std::sync::LazyLock;

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpResponse, Responder};
use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge, Encoder, HistogramVec,
    IntCounterVec, IntGauge, TextEncoder,
};

pub(crate) static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "media_repo_http_requests_total",
        "HTTP requests answered, by method (GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH or other), route pattern and status class (2xx...)",
        &["method", "route", "status"]
    )
    .expect("metric registered once")
});

pub(crate) static HTTP_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "media_repo_http_request_duration_seconds",
        "Time until the response head was ready, by route pattern",
        &["route"],
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .expect("metric registered once")
});

/// Config reloads, by result (`applied`, `unchanged`, `rejected`).
pub static CONFIG_RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "media_repo_config_reloads_total",
        "Configuration reloads (SIGHUP), by result",
        &["result"]
    )
    .expect("metric registered once")
});

/// Increases by one each time a new configuration is applied; 1 after start.
pub static CONFIG_GENERATION: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "media_repo_config_generation",
        "Number of configurations applied since start (1 = the one read at start)"
    )
    .expect("metric registered once")
});

/// The method labels, in the order [`method_index`] numbers them; `other` last.
pub const METHOD_LABELS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "other",
];

/// The status labels, in the order [`status_class_index`] numbers them; `other` last.
pub const STATUS_CLASS_LABELS: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// The method as an index into [`METHOD_LABELS`]: the methods the media API knows,
/// anything else `other` (HTTP allows any token as a method, so the raw value is unbounded).
pub fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::OPTIONS => 5,
        Method::PATCH => 6,
        _ => 7,
    }
}

/// The method as a label (see [`method_index`]).
pub fn method_label(method: &Method) -> &'static str {
    METHOD_LABELS[method_index(method)]
}

/// The status as an index into [`STATUS_CLASS_LABELS`]: its class. Handlers only produce a
/// few codes, but a class keeps the series count fixed whatever a future handler (or actix)
/// answers.
pub fn status_class_index(status: StatusCode) -> usize {
    match status.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        // Codes 600-999 are syntactically valid but have no class.
        _ => 5,
    }
}

/// The status as a label: its class (`1xx`..`5xx`, see [`status_class_index`]).
pub fn status_class(status: StatusCode) -> &'static str {
    STATUS_CLASS_LABELS[status_class_index(status)]
}

/// Makes sure metrics that should be visible from the first scrape exist.
pub fn init() {
    LazyLock::force(&HTTP_REQUESTS);
    LazyLock::force(&HTTP_DURATION);
    LazyLock::force(&CONFIG_RELOADS);
    CONFIG_GENERATION.set(1);
}

/// `GET /metrics`: the default registry in Prometheus text format.
pub async fn render() -> impl Responder {
    let families = prometheus::gather();
    let mut text = Vec::new();
    match TextEncoder::new().encode(&families, &mut text) {
        Ok(()) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        Err(err) => {
            tracing::error!(%err, "encoding metrics failed");
            HttpResponse::InternalServerError().finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_map_to_a_closed_set() {
        for (method, label) in [
            (Method::GET, "GET"),
            (Method::HEAD, "HEAD"),
            (Method::POST, "POST"),
            (Method::PUT, "PUT"),
            (Method::DELETE, "DELETE"),
            (Method::OPTIONS, "OPTIONS"),
            (Method::PATCH, "PATCH"),
            (Method::TRACE, "other"),
            (Method::CONNECT, "other"),
        ] {
            assert_eq!(method_label(&method), label, "{method}");
        }
        for invented in ["FOO123", "get", "PROPFIND", "X"] {
            let method = Method::from_bytes(invented.as_bytes()).expect("a valid token");
            assert_eq!(method_label(&method), "other", "{invented}");
        }
    }

    #[test]
    fn statuses_map_to_their_class() {
        for (code, class) in [
            (100, "1xx"),
            (200, "2xx"),
            (206, "2xx"),
            (304, "3xx"),
            (404, "4xx"),
            (499, "4xx"),
            (500, "5xx"),
            (503, "5xx"),
            (599, "5xx"),
            (999, "other"),
        ] {
            let status = StatusCode::from_u16(code).expect("a valid code");
            assert_eq!(status_class(status), class, "{code}");
        }
    }
}
