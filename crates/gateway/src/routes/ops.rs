//! Operations: `/healthz` (the process answers), `/readyz` (it takes work: not draining, the
//! database answers), `/metrics` (Prometheus) and `/openapi.json`. No credentials: they carry
//! no patient data, and probes and scrapers should not hold keys.

use crate::api_error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

pub async fn readyz(State(st): State<AppState>) -> Result<Response, ApiError> {
    if st.queue.is_closed() {
        return Err(ApiError::ShuttingDown);
    }
    st.store
        .ping()
        .await
        .map_err(|e| ApiError::NotReady(format!("the database does not answer: {}", e.kind())))?;
    Ok(Json(json!({
        "status": "ready",
        "queue_depth": st.queue.depth(),
        "workflow": st.info.workflow,
        "model": st.info.model,
    }))
    .into_response())
}

pub async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    st.metrics.queue_depth.set(st.queue.depth() as i64);
    let text = st.metrics.render()?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

pub async fn openapi() -> Response {
    Json(crate::openapi::document()).into_response()
}
