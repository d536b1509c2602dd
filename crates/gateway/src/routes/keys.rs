//! `/v1/keys`: API keys, for admin keys only. The secret is in the creation response and
//! nowhere else.

use crate::api_error::ApiError;
use crate::auth::Role;
use crate::routes::triage::body_bytes;
use crate::state::AppState;
use crate::validate;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

async fn admin(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let p = st.authenticate(headers).await?;
    if p.role != Role::Admin {
        return Err(ApiError::Forbidden(
            "managing keys needs an admin key".into(),
        ));
    }
    Ok(())
}

pub async fn list(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    admin(&st, &headers).await?;
    let keys = st.keys.list().await?;
    Ok(Json(json!({"data": keys})).into_response())
}

pub async fn create(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    admin(&st, &headers).await?;
    let body = body_bytes(&st, &headers, body)?;
    let map = validate::json_object(&body)?;
    if let Some(k) = map.keys().find(|k| !matches!(k.as_str(), "name" | "role")) {
        return Err(ApiError::bad_field(
            "unknown_field",
            k,
            format!("{k}: unknown field"),
        ));
    }
    let name = match map.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 100 => s.trim().to_string(),
        _ => {
            return Err(ApiError::bad_field(
                "invalid_field",
                "name",
                "name: required, a string of 1 to 100 characters",
            ))
        }
    };
    let role = map
        .get("role")
        .and_then(Value::as_str)
        .and_then(Role::parse)
        .ok_or_else(|| {
            ApiError::bad_field(
                "invalid_field",
                "role",
                "role: one of portal, clinician, admin",
            )
        })?;
    let (record, secret) = st.keys.create(&name, role).await?;
    tracing::info!(key_id = %record.id, role = role.as_str(), "API key created");
    Ok((
        StatusCode::CREATED,
        Json(json!({"key": record, "secret": secret})),
    )
        .into_response())
}

pub async fn revoke(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&st, &headers).await?;
    if !st.keys.revoke(&id).await? {
        return Err(ApiError::NotFound(format!("no active key `{id}`")));
    }
    tracing::info!(key_id = %id, "API key revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}
