//! `POST /v1/triage` and `GET /v1/triage/{id}`.
//!
//! Roles: a portal key submits for the patient in its `X-Patient-Token` and reads only that
//! patient's results (another patient's result is a 404, so its existence is not disclosed);
//! a clinician key reads any result; an admin key does both.
//!
//! A portal key gets the allow-listed view of [`super::portal_view`] (the answer held until
//! a clinician decides a case that needs it); clinician and admin keys get the stored outcome.

use crate::api_error::ApiError;
use crate::auth::{new_request_id, Role};
use crate::flow::{self, Accepted, Submitted};
use crate::routes::portal_view::{self, Decided};
use crate::state::AppState;
use crate::store::RequestRow;
use crate::validate;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use careflow_core::PatientId;
use serde_json::{json, Value};
use std::time::Instant;

pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The body, or why it could not be read (413 past the limit).
pub(crate) fn body_bytes(
    st: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: st.settings.body_limit_bytes,
            }
        } else {
            ApiError::BadRequest {
                code: "unreadable_body",
                message: format!("the request body could not be read: {r}"),
                field: None,
            }
        }
    })?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json {
        return Err(ApiError::UnsupportedMediaType);
    }
    Ok(body)
}

pub async fn post(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let principal = st.authenticate(&headers).await?;
    if principal.role == Role::Clinician {
        return Err(ApiError::Forbidden(
            "a clinician key reads results; submitting is for the portal".into(),
        ));
    }
    let patient = st.patient(&headers, principal.role == Role::Portal)?;
    let body = body_bytes(&st, &headers, body)?;
    let req = validate::triage_body(&body)?;
    if let Some(w) = &req.workflow {
        if *w != st.info.workflow {
            return Err(ApiError::bad_field(
                "invalid_field",
                "workflow",
                format!(
                    "workflow: this server runs `{}`, not `{w}`",
                    st.info.workflow
                ),
            ));
        }
    }
    let idempotency_key = validate::idempotency_key(headers.get("idempotency-key"))?;
    let message_sha256 = flow::sha256_hex(req.message.as_str());
    // A retry is found by its `accepted` row's insert, not by a read before it (one
    // database round trip less per keyed request): see `flow::submit`.
    let request_id = new_request_id()?;
    tracing::Span::current().record("request_id", request_id.as_str());
    let principal_role = principal.role;
    let accepted = Accepted {
        request_id: request_id.clone(),
        key_id: principal.key_id,
        role: principal.role.as_str(),
        patient,
        message: req.message,
        message_sha256: message_sha256.clone(),
        idempotency_key,
        received,
    };
    // In a task of its own: if this handler is dropped (client gone), the request still
    // reaches a stored ending.
    let submitted = tokio::spawn(flow::submit(st.clone(), accepted))
        .await
        .map_err(|e| ApiError::Internal(format!("the submission task failed: {e}")))??;
    match submitted {
        Submitted::Done(outcome, _) if principal_role == Role::Portal => {
            let v = portal_view::view(
                &request_id,
                None,
                Some(&Decided::from_outcome(&outcome)),
                None,
            );
            Ok(json_response(StatusCode::OK, v.to_string(), &request_id))
        }
        Submitted::Done(outcome, json) => {
            // Formatted around the stored JSON rather than rebuilt.
            let body = format!(
                "{{\"request_id\":{},\"status\":\"done\",\"disposition\":\"{}\",\"decided_by\":{},\"outcome\":{}}}",
                Value::from(request_id.as_str()),
                outcome.disposition.label(),
                Value::from(outcome.route.decided_by.as_str()),
                json
            );
            Ok(json_response(StatusCode::OK, body, &request_id))
        }
        Submitted::Duplicate(row) => {
            replay(&st, *row, &message_sha256, principal_role, patient).await
        }
    }
}

fn json_response(status: StatusCode, body: String, request_id: &str) -> Response {
    let mut r = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r.headers_mut().insert("x-request-id", v);
    }
    r
}

/// The answer to a retry that carries an Idempotency-Key already used by this key.
async fn replay(
    st: &AppState,
    row: RequestRow,
    message_sha256: &str,
    role: Role,
    patient: Option<PatientId>,
) -> Result<Response, ApiError> {
    // One portal key serves many patients: a key reused under another patient's token is
    // answered like a key reused for another message, and discloses nothing.
    let other_patient = role == Role::Portal && row.patient_id != patient.map(|p| p.0);
    if row.message_sha256 != message_sha256 || other_patient {
        return Err(ApiError::Unprocessable {
            code: "idempotency_key_reused",
            message: "Idempotency-Key: already used for a different message".into(),
            field: Some("Idempotency-Key".into()),
        });
    }
    match row.status.as_str() {
        "accepted" => Err(ApiError::InProgress {
            retry_after: st.queue.retry_after(),
        }),
        "error" => Err(stored_error(st, &row)),
        _ => {
            let v = if role == Role::Portal {
                portal(st, &row).await?
            } else {
                record(&row)
            };
            let mut r = json_response(StatusCode::OK, v.to_string(), &row.request_id);
            r.headers_mut()
                .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
            Ok(r)
        }
    }
}

/// A stored error, answered again as it was the first time.
fn stored_error(st: &AppState, row: &RequestRow) -> ApiError {
    let message = row.error.clone().unwrap_or_default();
    match row.error_kind.as_deref() {
        Some("deadline") => {
            ApiError::DeadlineExceeded(st.settings.request_deadline.as_millis() as u64)
        }
        Some("shutdown") => ApiError::ShuttingDown,
        Some("unknown_patient") => ApiError::Unprocessable {
            code: "unknown_patient",
            message,
            field: None,
        },
        Some("invalid") => ApiError::BadRequest {
            code: "invalid_field",
            message,
            field: None,
        },
        _ => ApiError::Internal(message),
    }
}

/// A stored request as the API shows it.
fn record(row: &RequestRow) -> Value {
    let outcome: Value = row
        .outcome
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or(Value::Null);
    json!({
        "request_id": row.request_id,
        "status": row.status,
        "created_at_ms": row.created_at_ms,
        "finished_at_ms": row.finished_at_ms,
        "disposition": outcome.get("disposition"),
        "decided_by": outcome.get("route").and_then(|r| r.get("decided_by")),
        "outcome": outcome,
        "error": row.error_kind.as_ref().map(|k| json!({"code": k, "message": row.error})),
    })
}

pub async fn get(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = st.authenticate(&headers).await?;
    let not_found = || ApiError::NotFound(format!("no triage request `{id}`"));
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(not_found());
    }
    // A portal key must name its patient before anything about the request is read.
    let patient = match principal.role {
        Role::Portal => st.patient(&headers, true)?,
        Role::Clinician | Role::Admin => None,
    };
    let row = st.store.request(&id).await?.ok_or_else(not_found)?;
    if principal.role == Role::Portal && row.patient_id != patient.map(|p| p.0) {
        return Err(not_found());
    }
    let status = if row.status == "accepted" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let v = if principal.role == Role::Portal {
        portal(&st, &row).await?
    } else {
        record(&row)
    };
    Ok(json_response(status, v.to_string(), &row.request_id))
}

/// A stored request as a portal key sees it.
async fn portal(st: &AppState, row: &RequestRow) -> Result<Value, ApiError> {
    let outcome: Option<Value> = match (row.status.as_str(), row.outcome.as_deref()) {
        ("done", Some(o)) => serde_json::from_str(o).ok(),
        _ => None,
    };
    let review = match &outcome {
        Some(_) => st.store.review(&row.request_id).await?,
        None => None,
    };
    let decided = outcome.as_ref().map(Decided::from_json);
    Ok(portal_view::view(
        &row.request_id,
        Some(row),
        decided.as_ref(),
        review.as_ref(),
    ))
}
