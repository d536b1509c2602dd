//! `POST /v1/triage` and `GET /v1/triage/{id}`.
//!
//! Roles: a portal key submits for the patient in its `X-Patient-Token` and reads only that
//! patient's results (another patient's result is a 404, so its existence is not disclosed);
//! a clinician key reads any result; an admin key does both.
//!
//! Release: a case the workflow did not settle alone (`decided_by` `human_review` or
//! `frontier`) goes to the clinicians' review queue, and the answer written for the patient
//! is held from the portal until a clinician has confirmed or overridden it: the portal sees
//! `"release": "held_for_review"` and no `patient_reply` until then, and after an override
//! the clinician's disposition with its answer. Clinician and admin keys see everything.

use crate::api_error::ApiError;
use crate::auth::{random_hex, Role};
use crate::flow::{self, Accepted, Submitted};
use crate::state::AppState;
use crate::store::{RequestRow, ReviewRecord};
use crate::validate;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use careflow_core::Disposition;
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
    if let Some(k) = &idempotency_key {
        if let Some(row) = st
            .store
            .request_by_idempotency_key(&principal.key_id, k)
            .await?
        {
            return replay(&st, row, &message_sha256, principal.role).await;
        }
    }
    let request_id = random_hex(16)?;
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
        Submitted::Done(outcome, json) => {
            // Formatted around the stored JSON rather than rebuilt: this is the hot path.
            let (release_fields, json) = if principal_role != Role::Portal {
                (String::new(), json)
            } else if needs_review(Some(&outcome.route.decided_by)) {
                let mut v: Value = serde_json::from_str(&json)
                    .map_err(|e| ApiError::Internal(format!("re-reading the outcome: {e}")))?;
                v["patient_reply"] = Value::Null;
                (
                    ",\"release\":\"held_for_review\",\"patient_reply\":null,\"review\":null"
                        .to_string(),
                    v.to_string(),
                )
            } else {
                (
                    format!(
                        ",\"release\":\"released\",\"patient_reply\":{},\"review\":null",
                        Value::from(outcome.patient_reply.as_str())
                    ),
                    json,
                )
            };
            let body = format!(
                "{{\"request_id\":{},\"status\":\"done\",\"disposition\":\"{}\",\"decided_by\":{}{release_fields},\"outcome\":{}}}",
                Value::from(request_id.as_str()),
                outcome.disposition.label(),
                Value::from(outcome.route.decided_by.as_str()),
                json
            );
            Ok(json_response(StatusCode::OK, body, &request_id))
        }
        Submitted::Duplicate(row) => replay(&st, *row, &message_sha256, principal_role).await,
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
) -> Result<Response, ApiError> {
    if row.message_sha256 != message_sha256 {
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
            let mut v = record(&row);
            if role == Role::Portal {
                release(&mut v, st.store.review(&row.request_id).await?.as_ref());
            }
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
    let mut v = record(&row);
    if principal.role == Role::Portal && row.status == "done" {
        release(&mut v, st.store.review(&row.request_id).await?.as_ref());
    }
    Ok(json_response(status, v.to_string(), &row.request_id))
}

/// Whether a decision waits for a clinician before the patient sees it.
pub fn needs_review(decided_by: Option<&str>) -> bool {
    matches!(decided_by, Some("human_review" | "frontier"))
}

/// The portal's view of a done request (see the module docs): `patient_reply` and `release`
/// at the top; the answer held while a review is due and missing, the clinician's
/// disposition and answer after an override.
fn release(v: &mut Value, review: Option<&ReviewRecord>) {
    let decided_by = v
        .pointer("/outcome/route/decided_by")
        .and_then(Value::as_str)
        .map(str::to_string);
    let drafted = v
        .pointer("/outcome/patient_reply")
        .and_then(Value::as_str)
        .map(str::to_string);
    let (state, reply) = match (needs_review(decided_by.as_deref()), review) {
        (false, _) => ("released", drafted),
        (true, None) => ("held_for_review", None),
        (true, Some(r)) if r.action == "override" => {
            let reply = r.disposition.parse::<Disposition>().ok().map(|d| {
                format!(
                    "A clinician reviewed your message.\n\n{}\n\n{}",
                    d.patient_phrase(),
                    careflow_workflow::prompts::SAFETY_NET
                )
            });
            v["disposition"] = Value::from(r.disposition.as_str());
            ("released", reply)
        }
        (true, Some(_)) => ("released", drafted),
    };
    if reply.is_none() {
        if let Some(o) = v.get_mut("outcome").and_then(Value::as_object_mut) {
            o.insert("patient_reply".into(), Value::Null);
        }
    }
    v["release"] = Value::from(state);
    v["patient_reply"] = reply.map_or(Value::Null, Value::from);
    v["review"] = match review {
        Some(r) => json!({"action": r.action, "disposition": r.disposition, "at_ms": r.at_ms}),
        None => Value::Null,
    };
}
