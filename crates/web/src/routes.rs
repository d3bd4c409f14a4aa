//! The route table: every path the media repo answers, and Matrix errors for the rest.

use actix_web::http::Method;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpRequest, HttpResponse, Responder, Route};

use crate::error::MatrixError;
use crate::media::{self, download, upload};
use crate::{health, metrics};

/// Unknown paths: 404 `M_UNRECOGNIZED` (CORS preflights get their 200).
async fn unknown_path(req: HttpRequest) -> HttpResponse {
    if req.method() == Method::OPTIONS {
        return HttpResponse::Ok().finish();
    }
    actix_web::ResponseError::error_response(&MatrixError::unrecognized())
}

/// Known path, wrong method: 405 `M_UNRECOGNIZED` (CORS preflights get their 200).
async fn wrong_method(req: HttpRequest) -> HttpResponse {
    if req.method() == Method::OPTIONS {
        return HttpResponse::Ok().finish();
    }
    actix_web::ResponseError::error_response(&MatrixError::method_not_allowed())
}

fn get_and_head<F, Args>(handler: F) -> [Route; 2]
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: Responder + 'static,
{
    [web::get().to(handler.clone()), web::head().to(handler)]
}

fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(wrong_method))
}

fn download_routes(cfg: &mut web::ServiceConfig, prefix: &str, authenticated: bool) {
    for path in ["{server}/{media_id}", "{server}/{media_id}/{file_name}"] {
        let [get, head] = if authenticated {
            get_and_head(download::authenticated)
        } else {
            get_and_head(download::legacy)
        };
        cfg.service(
            resource(&format!("{prefix}/download/{path}"))
                .route(get)
                .route(head),
        );
    }
}

/// The whole application: media API, health, and (when it has no listener of its own) metrics.
pub fn configure(cfg: &mut web::ServiceConfig, serve_metrics_here: bool) {
    cfg.service(
        resource("/healthz")
            .route(web::get().to(health::healthz))
            .route(web::head().to(health::healthz)),
    );
    if serve_metrics_here {
        admin_routes(cfg);
    }
    let client = "/_matrix/client/v1/media";
    cfg.service(resource(&format!("{client}/config")).route(web::get().to(media::media_config)));
    download_routes(cfg, client, true);
    for version in ["v3", "r0"] {
        let legacy = format!("/_matrix/media/{version}");
        cfg.service(
            resource(&format!("{legacy}/config")).route(web::get().to(media::media_config)),
        );
        cfg.service(resource(&format!("{legacy}/upload")).route(web::post().to(upload::upload)));
        cfg.service(
            resource(&format!("{legacy}/upload/{{server}}/{{media_id}}"))
                .route(web::put().to(upload::upload_to)),
        );
        download_routes(cfg, &legacy, false);
    }
    cfg.service(resource("/_matrix/media/v1/create").route(web::post().to(upload::create)));
    cfg.default_service(web::to(unknown_path));
}

/// Operator endpoints: metrics and cache status.
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/metrics").route(web::get().to(metrics::render)));
    cfg.service(resource("/_media_repo/v1/cache").route(web::get().to(health::cache_status)));
}

/// Headers on every response (CORS, CSP, CORP), and request metrics + tracing spans.
pub fn default_headers() -> DefaultHeaders {
    crate::headers::security_headers()
        .into_iter()
        .fold(DefaultHeaders::new(), |headers, header| headers.add(header))
}
