//! The router and [`run`]: serve on a listener until `shutdown`, then drain.
//!
//! Drain: stop accepting connections and new work (503 + Retry-After), let queued and
//! running requests finish within the grace period, then cancel what is left — each
//! cancelled request stores `error: shutdown` itself — and return.

use crate::api_error::ErrorCode;
use crate::routes;
use crate::state::AppState;
use crate::GatewayError;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::serve::ListenerExt;
use axum::Router;
use std::future::{Future, IntoFuture};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tracing::Instrument;

pub fn router(state: AppState) -> Router {
    let console = if state.settings.console.enabled {
        routes::console::router()
    } else {
        Router::new()
    };
    Router::new()
        .route("/v1/triage", post(routes::triage::post))
        .route("/v1/triage/{id}", get(routes::triage::get))
        .route("/v1/models", get(routes::openai::models))
        .route("/v1/chat/completions", post(routes::openai::chat))
        .route(
            "/v1/keys",
            get(routes::keys::list).post(routes::keys::create),
        )
        .route("/v1/keys/{id}", delete(routes::keys::revoke))
        .route("/v1/review/queue", get(routes::review::queue))
        .route(
            "/v1/review/{id}",
            get(routes::review::case).post(routes::review::decide),
        )
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .route("/openapi.json", get(routes::ops::openapi))
        .merge(console)
        // `route_layer`: runs after routing, so the matched pattern labels the metric.
        .route_layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(state.settings.body_limit_bytes))
        .with_state(state)
}

/// One span and one latency observation per request, and the error count by code.
async fn observe(
    State(st): State<AppState>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let route = matched
        .as_ref()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let method = req.method().clone();
    let span = tracing::info_span!(
        "http",
        method = %method,
        route = %route,
        request_id = tracing::field::Empty,
        key_id = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let started = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    span.record("status", status.as_u16());
    st.metrics
        .http_duration
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
        .observe(started.elapsed().as_secs_f64());
    if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
        st.metrics.errors.with_label_values(&[code]).inc();
    }
    response
}

/// Serves until `shutdown` completes, then drains (see the module docs). Tests bind
/// `127.0.0.1:0` and pass the listener.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let signal = tokio_util::sync::CancellationToken::new();
    let fired = signal.clone();
    tokio::spawn(async move {
        shutdown.await;
        fired.cancel();
    });
    let queue = state.queue.clone();
    let closing = {
        let (signal, queue) = (signal.clone(), queue.clone());
        async move {
            signal.cancelled().await;
            tracing::info!("shutting down: draining in-flight requests");
            queue.close();
        }
    };
    let grace = state.settings.shutdown_grace;
    let listener = listener.tap_io(|tcp| {
        // Small request/response pairs: do not let Nagle hold them back.
        let _ = tcp.set_nodelay(true);
    });
    let serve = axum::serve(listener, router(state)).with_graceful_shutdown(closing);
    let mut serve = std::pin::pin!(serve.into_future());
    tokio::select! {
        r = &mut serve => {
            return r.map_err(|cause| GatewayError::Io { context: "serving".into(), cause });
        }
        _ = signal.cancelled() => {}
    }
    let until = tokio::time::Instant::now() + grace;
    let served = tokio::time::timeout_at(until, &mut serve).await;
    let idle = tokio::time::timeout_at(until, queue.idle()).await;
    if served.is_err() || idle.is_err() {
        tracing::warn!("grace period over: cancelling unfinished requests");
        queue.abort();
        // Cancelled requests store their endings and answer their handlers at once.
        let _ = tokio::time::timeout(Duration::from_secs(5), queue.idle()).await;
        if served.is_err() {
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut serve).await;
        }
    }
    match served {
        Ok(r) => r.map_err(|cause| GatewayError::Io {
            context: "serving".into(),
            cause,
        }),
        Err(_) => Ok(()),
    }
}
