//! Prometheus metrics of the HTTP layer and the `/metrics` endpoint.
//!
//! Every crate registers its metrics in the prometheus default registry; this module adds the
//! request-level ones and renders the whole registry as text. Label values are bounded: the
//! route label is the matched route pattern, never the raw path.

use std::sync::LazyLock;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, Responder};
use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge, Encoder, HistogramVec,
    IntCounterVec, IntGauge, TextEncoder,
};
use tracing::Instrument;

static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "media_repo_http_requests_total",
        "HTTP requests answered, by method, route pattern and status code",
        &["method", "route", "status"]
    )
    .expect("metric registered once")
});

static HTTP_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
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

/// Counts and times each request inside a tracing span named after its route.
pub async fn track_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let span =
        tracing::info_span!("request", %method, route = %route, status = tracing::field::Empty);
    let response = next.call(req).instrument(span.clone()).await?;
    let status = response.status().as_u16();
    span.record("status", status);
    HTTP_REQUESTS
        .with_label_values(&[&method, &route, &status.to_string()])
        .inc();
    HTTP_DURATION
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    Ok(response)
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
