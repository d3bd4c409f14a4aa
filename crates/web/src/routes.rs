//! The route table: every path the media repo answers, on which listener, and Matrix
//! errors for the rest.
//!
//! Two listeners, two tables. The public one serves the media API, the admin API
//! (`admin/`, Matrix admins only), `/healthz` and `/readyz`; the operators' one (`metrics.bind`) is the only home of the operator
//! endpoints (`/metrics`, `/_media_repo/v1/cache`), which the public listener answers like
//! any unknown path. Every read is listed in [`get_routes`] and registered from there for
//! both GET and HEAD, so no GET route can exist without its HEAD.

use actix_web::http::Method;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpRequest, HttpResponse, Responder, Route};

use crate::error::MatrixError;
use crate::media::{self, download, upload};
use crate::route_metrics::{TrackRoute, UNMATCHED};
use crate::{health, metrics};

/// Which listener a route lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// `server.bind`: what clients (through the reverse proxy) reach.
    Public,
    /// `metrics.bind`: operators only.
    Operators,
}

/// What a GET route serves. Each answers HEAD too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    Healthz,
    Readyz,
    MediaConfig,
    AuthenticatedDownload,
    LegacyDownload,
    AuthenticatedThumbnail,
    LegacyThumbnail,
    /// `/_matrix/federation/v1/media/download/{media_id}`: X-Matrix signed.
    FederationDownload,
    /// `/_matrix/federation/v1/media/thumbnail/{media_id}`: X-Matrix signed.
    FederationThumbnail,
    /// `/_synapse/admin/v1/users/{user_id}/media`: admins only.
    AdminUserMedia,
    Metrics,
    CacheStatus,
}

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

/// The only place a GET route is made: always together with its HEAD.
fn get_and_head<F, Args>(handler: F) -> [Route; 2]
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: Responder + 'static,
{
    [web::get().to(handler.clone()), web::head().to(handler)]
}

pub(crate) fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(wrong_method))
}

/// Registers the public listener's resource at `path`, with the routes `routes` adds, its
/// requests counted and traced under the route `path` (`route_metrics.rs`).
pub(crate) fn serve(
    cfg: &mut web::ServiceConfig,
    path: &str,
    routes: impl FnOnce(actix_web::Resource) -> actix_web::Resource,
) {
    cfg.service(routes(resource(path)).wrap(TrackRoute::new(path)));
}

/// Every GET (and HEAD) route of `listener`, as path pattern and what it serves. The
/// configure functions below register exactly these; tests walk this list.
pub fn get_routes(listener: Listener) -> Vec<(String, Read)> {
    match listener {
        Listener::Public => {
            let mut routes = vec![
                ("/healthz".to_owned(), Read::Healthz),
                ("/readyz".to_owned(), Read::Readyz),
            ];
            let client = "/_matrix/client/v1/media";
            routes.push((format!("{client}/config"), Read::MediaConfig));
            routes.extend(
                download_paths(client)
                    .into_iter()
                    .map(|path| (path, Read::AuthenticatedDownload)),
            );
            routes.push((
                format!("{client}/thumbnail/{{server}}/{{media_id}}"),
                Read::AuthenticatedThumbnail,
            ));
            routes.push((
                "/_matrix/federation/v1/media/download/{media_id}".to_owned(),
                Read::FederationDownload,
            ));
            routes.push((
                "/_matrix/federation/v1/media/thumbnail/{media_id}".to_owned(),
                Read::FederationThumbnail,
            ));
            for version in ["v3", "r0"] {
                let legacy = format!("/_matrix/media/{version}");
                routes.push((format!("{legacy}/config"), Read::MediaConfig));
                routes.push((
                    format!("{legacy}/thumbnail/{{server}}/{{media_id}}"),
                    Read::LegacyThumbnail,
                ));
                routes.extend(
                    download_paths(&legacy)
                        .into_iter()
                        .map(|path| (path, Read::LegacyDownload)),
                );
            }
            routes.extend(crate::admin::get_routes());
            routes
        }
        Listener::Operators => vec![
            ("/metrics".to_owned(), Read::Metrics),
            ("/_media_repo/v1/cache".to_owned(), Read::CacheStatus),
        ],
    }
}

/// The download paths under `prefix`; the optional `{file_name}` is a field of the path.
fn download_paths(prefix: &str) -> [String; 2] {
    [
        format!("{prefix}/download/{{server}}/{{media_id}}"),
        format!("{prefix}/download/{{server}}/{{media_id}}/{{file_name}}"),
    ]
}

/// The routes serving `read` at `resource`'s path, for GET and HEAD.
fn read_routes(resource: actix_web::Resource, read: Read) -> actix_web::Resource {
    let [get, head] = match read {
        Read::Healthz => get_and_head(health::healthz),
        Read::Readyz => get_and_head(health::readyz),
        Read::MediaConfig => get_and_head(media::media_config),
        Read::AuthenticatedDownload => get_and_head(download::authenticated),
        Read::LegacyDownload => get_and_head(download::legacy),
        Read::FederationDownload => get_and_head(crate::federation::media_download),
        Read::AuthenticatedThumbnail => get_and_head(media::thumbnail::authenticated),
        Read::LegacyThumbnail => get_and_head(media::thumbnail::legacy),
        Read::FederationThumbnail => get_and_head(crate::federation::media_thumbnail),
        Read::AdminUserMedia => get_and_head(crate::admin::synapse::user_media),
        Read::Metrics => get_and_head(metrics::render),
        Read::CacheStatus => get_and_head(health::cache_status),
    };
    crate::admin::add_writes(read, resource.route(get).route(head))
}

/// The reads of `listener`; only the public listener's requests are counted and traced
/// (the operators' one serves the scrapes of those counts).
fn register_reads(cfg: &mut web::ServiceConfig, listener: Listener) {
    for (path, read) in get_routes(listener) {
        match listener {
            Listener::Public => serve(cfg, &path, |resource| read_routes(resource, read)),
            Listener::Operators => {
                cfg.service(read_routes(resource(&path), read));
            }
        }
    }
}

/// The public listener: media API, health and readiness. No operator endpoint.
pub fn configure(cfg: &mut web::ServiceConfig) {
    register_reads(cfg, Listener::Public);
    for version in ["v3", "r0"] {
        let legacy = format!("/_matrix/media/{version}");
        serve(cfg, &format!("{legacy}/upload"), |resource| {
            resource.route(web::post().to(upload::upload))
        });
        serve(
            cfg,
            &format!("{legacy}/upload/{{server}}/{{media_id}}"),
            |resource| resource.route(web::put().to(upload::upload_to)),
        );
    }
    serve(cfg, "/_matrix/media/v1/create", |resource| {
        resource.route(web::post().to(upload::create))
    });
    crate::admin::configure(cfg);
    cfg.default_service(TrackRoute::new(UNMATCHED).around(web::to(unknown_path)));
}

/// The operators' listener: metrics and cache status.
pub fn configure_operators(cfg: &mut web::ServiceConfig) {
    register_reads(cfg, Listener::Operators);
    cfg.default_service(web::to(unknown_path));
}

/// Headers on every response (CORS, CSP, CORP).
pub fn default_headers() -> DefaultHeaders {
    crate::headers::security_headers()
        .into_iter()
        .fold(DefaultHeaders::new(), |headers, header| headers.add(header))
}

#[cfg(test)]
mod tests {
    //! The real configure functions in an actix test service, without `AppState`:
    //! handlers that need it answer 500, which is enough to tell a routed method from a
    //! 405 or a 404.

    use actix_web::http::StatusCode;
    use actix_web::test::{call_service, init_service, TestRequest};
    use actix_web::App;

    use super::*;

    /// A concrete path for a pattern: every `{segment}` filled in.
    fn concrete(pattern: &str) -> String {
        pattern
            .replace("{server}", "example.org")
            .replace("{media_id}", "abcDEF123")
            .replace("{file_name}", "name.png")
    }

    async fn status_of(listener: Listener, method: Method, path: &str) -> StatusCode {
        let app = match listener {
            Listener::Public => init_service(App::new().configure(configure)).await,
            Listener::Operators => init_service(App::new().configure(configure_operators)).await,
        };
        let req = TestRequest::default().method(method).uri(path).to_request();
        call_service(&app, req).await.status()
    }

    #[actix_web::test]
    async fn every_get_route_answers_head() {
        for listener in [Listener::Public, Listener::Operators] {
            let routes = get_routes(listener);
            assert!(!routes.is_empty());
            for (pattern, read) in routes {
                let path = concrete(&pattern);
                for method in [Method::GET, Method::HEAD] {
                    let status = status_of(listener, method.clone(), &path).await;
                    assert!(
                        status != StatusCode::METHOD_NOT_ALLOWED && status != StatusCode::NOT_FOUND,
                        "{method} {path} ({read:?} on {listener:?}) answered {status}"
                    );
                }
            }
        }
    }

    #[actix_web::test]
    async fn the_table_holds_every_read_the_issue_names() {
        let public: Vec<String> = get_routes(Listener::Public)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        for path in [
            "/healthz",
            "/readyz",
            "/_matrix/client/v1/media/config",
            "/_matrix/media/v3/config",
            "/_matrix/media/r0/config",
            "/_matrix/client/v1/media/download/{server}/{media_id}",
            "/_matrix/media/r0/download/{server}/{media_id}/{file_name}",
        ] {
            assert!(public.contains(&path.to_owned()), "{path} missing");
        }
    }

    #[test]
    fn no_get_route_is_registered_outside_the_table() {
        // A GET route made anywhere but in `get_and_head` would have no HEAD
        // and escape the walk above; this file is where routes are made.
        let source = include_str!("routes.rs");
        let made = ["web::", "get()"].concat();
        assert_eq!(
            source.matches(&made).count(),
            1,
            "`{made}` must only appear in get_and_head"
        );
    }

    #[actix_web::test]
    async fn operator_endpoints_are_unknown_on_the_public_listener() {
        for (pattern, _) in get_routes(Listener::Operators) {
            for method in [Method::GET, Method::HEAD] {
                assert_eq!(
                    status_of(Listener::Public, method, &pattern).await,
                    StatusCode::NOT_FOUND,
                    "{pattern}"
                );
            }
        }
        // And the media API is unknown on the operators' listener.
        assert_eq!(
            status_of(Listener::Operators, Method::GET, "/_matrix/media/v3/config").await,
            StatusCode::NOT_FOUND
        );
    }
}
