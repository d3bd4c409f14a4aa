//! Request counts, durations and the `request` tracing span, attached to each route of the
//! public listener (and to its default service as `unmatched`).
//!
//! Why per route and not one middleware around the whole app: an app-wide middleware runs
//! before routing, so it had to match the path against the route table a second time
//! (regexes, and a `String` for the pattern) to learn the route label, and it looked the
//! label's counters up by their label values on every request. Here each route's tracker
//! knows its pattern from the start and resolves each of its series once (the first time it
//! counts something, so no series appears before it has counted). The metric names, labels
//! and span fields are the ones `metrics.rs` documents.

use std::cell::OnceCell;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse, Transform};
use actix_web::Error;
use prometheus::{Histogram, IntCounter};
use tracing::Instrument;

use crate::metrics::{
    method_index, status_class_index, HTTP_DURATION, HTTP_REQUESTS, METHOD_LABELS,
    STATUS_CLASS_LABELS,
};

/// The route label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

/// One route's label and its series, each resolved on first use. Per worker (an `Rc`: the
/// route table is built once per worker thread), so no lock guards the cells.
struct Tracker {
    route: Box<str>,
    /// `media_repo_http_requests_total{method, route, status}` by method and status class.
    requests: [[OnceCell<IntCounter>; STATUS_CLASS_LABELS.len()]; METHOD_LABELS.len()],
    /// `media_repo_http_request_duration_seconds{route}`.
    duration: OnceCell<Histogram>,
}

impl Tracker {
    fn count(&self, method: usize, status: actix_web::http::StatusCode, started: Instant) {
        let class = status_class_index(status);
        self.requests[method][class]
            .get_or_init(|| {
                HTTP_REQUESTS.with_label_values(&[
                    METHOD_LABELS[method],
                    &self.route,
                    STATUS_CLASS_LABELS[class],
                ])
            })
            .inc();
        self.duration
            .get_or_init(|| HTTP_DURATION.with_label_values(&[&self.route]))
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Tracks the requests of one route: wrap its resource with it (`Resource::wrap`).
#[derive(Clone)]
pub struct TrackRoute(Rc<Tracker>);

impl TrackRoute {
    /// A tracker for the route `pattern` (from the route table: a closed set).
    pub fn new(pattern: &str) -> TrackRoute {
        TrackRoute(Rc::new(Tracker {
            route: pattern.into(),
            requests: Default::default(),
            duration: OnceCell::new(),
        }))
    }

    /// Wraps a service factory that is not a resource (the app's default service).
    pub fn around<F>(self, inner: F) -> Tracked<F> {
        Tracked {
            tracker: self,
            inner,
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for TrackRoute
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = TrackRouteService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(TrackRouteService {
            service: Rc::new(service),
            tracker: Rc::clone(&self.0),
        }))
    }
}

/// A service with its route's tracker (see [`TrackRoute`]).
pub struct TrackRouteService<S> {
    service: Rc<S>,
    tracker: Rc<Tracker>,
}

impl<S, B> Service<ServiceRequest> for TrackRouteService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<ServiceResponse<B>, Error>>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let method = method_index(req.method());
        let tracker = Rc::clone(&self.tracker);
        // The span gives the log lines written while the handler runs their context. It
        // has no `status` field: the status is known only once the handler is done, when
        // no line can be written inside the span any more (the body is streamed outside
        // it, and span-close events are not logged), so recording it (a second
        // formatting of the span's fields) was never seen.
        let span = tracing::info_span!(
            "request",
            method = METHOD_LABELS[method],
            route = %tracker.route
        );
        let response = self.service.call(req).instrument(span);
        Box::pin(async move {
            let response = response.await?;
            tracker.count(method, response.status(), started);
            Ok(response)
        })
    }
}

/// A service factory whose services are tracked (see [`TrackRoute::around`]).
pub struct Tracked<F> {
    tracker: TrackRoute,
    inner: F,
}

impl<F, B> ServiceFactory<ServiceRequest> for Tracked<F>
where
    F: ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<B>,
        Error = Error,
        InitError = (),
    >,
    F::Service: 'static,
    F::Future: 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Config = ();
    type Service = TrackRouteService<F::Service>;
    type InitError = ();
    type Future = Pin<Box<dyn Future<Output = Result<Self::Service, ()>>>>;

    fn new_service(&self, _: ()) -> Self::Future {
        let tracker = Rc::clone(&self.tracker.0);
        let service = self.inner.new_service(());
        Box::pin(async move {
            Ok(TrackRouteService {
                service: Rc::new(service.await?),
                tracker,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    //! Through the real route table (handlers that need `AppState` are not reached).

    use actix_web::http::{Method, StatusCode};
    use actix_web::test::{call_service, init_service, TestRequest};
    use actix_web::App;

    use super::*;

    fn requests(method: &str, route: &str, status: &str) -> u64 {
        HTTP_REQUESTS
            .with_label_values(&[method, route, status])
            .get()
    }

    #[actix_web::test]
    async fn requests_are_counted_under_their_route_pattern_or_unmatched() {
        // PATCH: no other test of this binary sends it, so the deltas are ours alone.
        let create = "/_matrix/media/v1/create";
        let before_route = requests("PATCH", create, "4xx");
        let before_unmatched = requests("PATCH", UNMATCHED, "4xx");
        let app = init_service(App::new().configure(crate::routes::configure)).await;
        for (path, expected) in [
            (create, StatusCode::METHOD_NOT_ALLOWED),
            ("/no/such/path", StatusCode::NOT_FOUND),
            ("/no/such/path/either", StatusCode::NOT_FOUND),
        ] {
            let req = TestRequest::default()
                .method(Method::PATCH)
                .uri(path)
                .to_request();
            assert_eq!(call_service(&app, req).await.status(), expected, "{path}");
        }
        assert_eq!(requests("PATCH", create, "4xx") - before_route, 1);
        assert_eq!(requests("PATCH", UNMATCHED, "4xx") - before_unmatched, 2);
        let observed = HTTP_DURATION
            .with_label_values(&[create])
            .get_sample_count();
        assert!(observed >= 1, "the route's duration is observed");
    }
}
