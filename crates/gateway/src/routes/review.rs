//! `/v1/review`: the clinicians' queue and their decisions, for clinician and admin keys only
//! (a portal key is refused, whatever patient token it carries). The review console (issue 9)
//! is built on these.
//!
//! - `GET /v1/review/queue`: cases sent to human review or decided by the frontier tier, not
//!   yet reviewed; most urgent first, then oldest.
//! - `GET /v1/review/{id}`: one case: the stored outcome and its decision, if any.
//! - `POST /v1/review/{id}`: `{"action": "confirm"}` or
//!   `{"action": "override", "disposition": LEVEL, "reason": TEXT}`; one decision per case
//!   (a second gets 409 with the decision that stands); stored append-only with the key.

use crate::api_error::ApiError;
use crate::auth::{Principal, Role};
use crate::routes::triage::body_bytes;
use crate::state::AppState;
use crate::store::{ReviewAction, ReviewRefused};
use crate::validate;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use careflow_core::Disposition;
use serde_json::{json, Value};

const MAX_REASON_CHARS: usize = 2_000;

async fn clinician(st: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let p = st.authenticate(headers).await?;
    match p.role {
        Role::Clinician | Role::Admin => Ok(p),
        Role::Portal => Err(ApiError::Forbidden(
            "reviewing cases needs a clinician or admin key".into(),
        )),
    }
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::NotFound(format!("no triage request `{id}`")));
    }
    Ok(())
}

pub async fn queue(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    clinician(&st, &headers).await?;
    let items = st.store.review_queue(500).await?;
    Ok(Json(json!({ "data": items })).into_response())
}

pub async fn case(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    clinician(&st, &headers).await?;
    checked_id(&id)?;
    let row = st
        .store
        .request(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no triage request `{id}`")))?;
    let outcome: Value = row
        .outcome
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or(Value::Null);
    let review = st.store.review(&id).await?;
    let message = st.store.message(&id).await?;
    Ok(Json(json!({
        "request_id": row.request_id,
        "message": message,
        "status": row.status,
        "patient_id": row.patient_id,
        "created_at_ms": row.created_at_ms,
        "outcome": outcome,
        "review": review,
    }))
    .into_response())
}

pub async fn decide(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let who = clinician(&st, &headers).await?;
    checked_id(&id)?;
    let body = body_bytes(&st, &headers, body)?;
    let map = validate::json_object(&body)?;
    if let Some(k) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "action" | "disposition" | "reason"))
    {
        return Err(ApiError::bad_field(
            "unknown_field",
            k,
            format!("{k}: unknown field"),
        ));
    }
    let action = map
        .get("action")
        .and_then(Value::as_str)
        .and_then(ReviewAction::parse)
        .ok_or_else(|| {
            ApiError::bad_field(
                "invalid_field",
                "action",
                "action: required, `confirm` or `override`",
            )
        })?;
    let reason = match map.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.chars().count() > MAX_REASON_CHARS
                || s.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
            {
                return Err(ApiError::bad_field(
                    "invalid_field",
                    "reason",
                    format!("reason: at most {MAX_REASON_CHARS} characters, no control characters"),
                ));
            }
            (!s.is_empty()).then(|| s.to_string())
        }
        Some(_) => {
            return Err(ApiError::bad_field(
                "invalid_field",
                "reason",
                "reason: must be a string",
            ))
        }
    };
    let disposition = match (action, map.get("disposition")) {
        (ReviewAction::Confirm, None | Some(Value::Null)) => None,
        (ReviewAction::Confirm, Some(_)) => {
            return Err(ApiError::bad_field(
                "invalid_field",
                "disposition",
                "disposition: a confirmation keeps the workflow's; use `override` to change it",
            ))
        }
        (ReviewAction::Override, d) => {
            let levels: Vec<&str> = Disposition::ALL.iter().map(|d| d.label()).collect();
            let parsed = d
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<Disposition>().ok())
                .ok_or_else(|| {
                    ApiError::bad_field(
                        "invalid_field",
                        "disposition",
                        format!(
                            "disposition: required for an override, one of {}",
                            levels.join(", ")
                        ),
                    )
                })?;
            if reason.is_none() {
                return Err(ApiError::bad_field(
                    "invalid_field",
                    "reason",
                    "reason: required for an override",
                ));
            }
            Some(parsed)
        }
    };
    match st
        .store
        .add_review(&id, &who.key_id, action, disposition, reason.as_deref())
        .await
    {
        Ok(record) => {
            st.metrics
                .reviews
                .with_label_values(&[action.label()])
                .inc();
            tracing::info!(request_id = %id, action = action.label(), disposition = %record.disposition, "case reviewed");
            Ok((StatusCode::CREATED, Json(json!({ "review": record }))).into_response())
        }
        Err(ReviewRefused::NotFound) => {
            Err(ApiError::NotFound(format!("no triage request `{id}`")))
        }
        Err(ReviewRefused::NotDone(why)) => Err(ApiError::Unprocessable {
            code: "not_reviewable",
            message: why,
            field: None,
        }),
        Err(ReviewRefused::AlreadyReviewed(standing)) => Err(ApiError::Conflict {
            code: "already_reviewed",
            message: format!(
                "this case was already reviewed ({} to {} by key {}): one decision per case",
                standing.action, standing.disposition, standing.reviewer_key_id
            ),
        }),
        Err(ReviewRefused::Store(e)) => Err(e.into()),
    }
}
