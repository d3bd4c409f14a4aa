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
    /// `/_synapse/admin/v1/media/{server}/{media_id}`: admins only.
    AdminMediaInfo,
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

/// The end of a media route's pattern that [`register_plain_reads`] serves before the table.
const PLAIN: &str = "/{server}/{media_id}";
/// The same with the download's optional file name.
const PLAIN_NAMED: &str = "/{server}/{media_id}/{file_name}";

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
        Read::AdminMediaInfo => get_and_head(crate::admin::synapse::media_info),
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

/// Downloads and thumbnails whose path needs no decoding ([`media::plain_tail`]), served
/// before the route table is walked: a scope's static prefix is a string comparison, where
/// the table's `{server}/{media_id}` patterns are regexes whose captures cost more than the
/// rest of the routing (callgrind). One scope per such route of the table, with that
/// route's label and handler, so the request is counted, traced and answered as the table
/// would; any other path or method fails the guard and goes on to the table.
fn register_plain_reads(cfg: &mut web::ServiceConfig) {
    for (pattern, read) in get_routes(Listener::Public) {
        let (prefix, named) = if let Some(prefix) = pattern.strip_suffix(PLAIN_NAMED) {
            (prefix.to_owned(), true)
        } else if let Some(prefix) = pattern.strip_suffix(PLAIN) {
            (prefix.to_owned(), false)
        } else {
            continue;
        };
        let handler = match read {
            Read::AuthenticatedDownload => web::to(download::authenticated_plain),
            Read::LegacyDownload => web::to(download::legacy_plain),
            Read::AuthenticatedThumbnail => web::to(media::thumbnail::authenticated_plain),
            Read::LegacyThumbnail => web::to(media::thumbnail::legacy_plain),
            _ => continue,
        };
        let scope = web::scope(&prefix)
            .guard(actix_web::guard::fn_guard(move |ctx| {
                let head = ctx.head();
                // The raw path, so the whole of it is checked for escapes.
                let tail = head.uri.path().strip_prefix(prefix.as_str());
                (head.method == Method::GET || head.method == Method::HEAD)
                    && tail
                        .and_then(media::plain_tail)
                        .is_some_and(|(_, _, name)| name.is_some() == named)
            }))
            .wrap(TrackRoute::new(&pattern))
            .default_service(handler);
        cfg.service(scope);
    }
}

/// The public listener: media API, health and readiness. No operator endpoint.
pub fn configure(cfg: &mut web::ServiceConfig) {
    register_plain_reads(cfg);
    // The admin POST routes first: the admin read `media/{server}/{media_id}` would also
    // match `media/protect/{media_id}` and answer its POST with 405.
    crate::admin::configure(cfg);
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

    /// What the route table's download patterns capture from `path`, or None for no match.
    async fn captured_by_the_table(path: &str) -> Option<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Fields {
            server: String,
            media_id: String,
            file_name: Option<String>,
        }
        async fn echo(path: web::Path<Fields>) -> HttpResponse {
            let Fields {
                server,
                media_id,
                file_name,
            } = path.into_inner();
            let fields: Vec<String> = [Some(server), Some(media_id), file_name]
                .into_iter()
                .flatten()
                .collect();
            HttpResponse::Ok().body(fields.join("\n"))
        }
        let mut app = App::new();
        for pattern in download_paths("/_matrix/client/v1/media") {
            app = app.route(&pattern, web::to(echo));
        }
        let app = init_service(app).await;
        let response = call_service(&app, TestRequest::get().uri(path).to_request()).await;
        if response.status() != StatusCode::OK {
            return None;
        }
        let body = actix_web::test::read_body(response).await;
        let text = String::from_utf8(body.to_vec()).ok()?;
        Some(text.split('\n').map(str::to_owned).collect())
    }

    #[actix_web::test]
    async fn a_plain_download_path_means_what_the_route_table_reads_in_it() {
        let prefix = "/_matrix/client/v1/media/download";
        for tail in [
            "/example.org/abcDEF123",
            "/example.org:8448/abc/name.png",
            "/example.org/abc/cat+dog.png",
            "/example.org/abc/",
            "/example.org//name",
            "/example.org/abc/name/more",
            "/example.org/a%62c",
            "/example.org/abc/na%20me",
            "/example.org/abc/a%2Fb",
        ] {
            let table = captured_by_the_table(&format!("{prefix}{tail}")).await;
            match media::plain_tail(tail) {
                Some((server, media_id, name)) => {
                    let plain: Vec<String> = [Some(server), Some(media_id), name]
                        .into_iter()
                        .flatten()
                        .map(str::to_owned)
                        .collect();
                    assert_eq!(Some(plain), table, "{tail}");
                }
                // Not plain: left to the table, whatever it makes of it.
                None => assert!(tail.contains('%') || table.is_none(), "{tail}: {table:?}"),
            }
        }
    }

    #[actix_web::test]
    async fn plain_reads_are_served_before_the_table_and_the_rest_fall_through() {
        let app = init_service(App::new().configure(register_plain_reads)).await;
        for (method, path, served) in [
            (
                Method::GET,
                "/_matrix/client/v1/media/download/example.org/abc",
                true,
            ),
            (
                Method::HEAD,
                "/_matrix/media/v3/download/example.org/abc/n.png",
                true,
            ),
            (
                Method::GET,
                "/_matrix/media/r0/download/example.org/abc",
                true,
            ),
            (
                Method::GET,
                "/_matrix/client/v1/media/download/example.org/a%62c",
                false,
            ),
            (
                Method::GET,
                "/_matrix/client/v1/media/download/example.org/abc/",
                false,
            ),
            (
                Method::POST,
                "/_matrix/client/v1/media/download/example.org/abc",
                false,
            ),
            (
                Method::GET,
                "/_matrix/client/v1/media/thumbnail/example.org/abc",
                true,
            ),
            (
                Method::HEAD,
                "/_matrix/media/r0/thumbnail/example.org/abc",
                true,
            ),
            (
                Method::GET,
                "/_matrix/media/v3/thumbnail/example.org/abc/n.png",
                false,
            ),
            (
                Method::GET,
                "/_matrix/federation/v1/media/download/abc",
                false,
            ),
            (Method::GET, "/_matrix/client/v1/media/config", false),
        ] {
            let req = TestRequest::default()
                .method(method.clone())
                .uri(path)
                .to_request();
            // Served: its handler ran and failed for want of the app state (500). Not
            // served: nothing else is registered here (404).
            let status = call_service(&app, req).await.status();
            let expected = if served {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::NOT_FOUND
            };
            assert_eq!(status, expected, "{method} {path}");
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
