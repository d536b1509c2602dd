//! The clinicians' review console and the operations dashboard, under `/console`:
//! server-rendered pages ([`pages`]), sign-in with a clinician or admin key into a cookie
//! session ([`session`]), and a little JavaScript for the charts (`assets/console.js`).
//!
//! - `GET/POST /console/login`, `POST /console/logout`;
//! - `GET /console`: the review queue; `GET /console/case/{id}`: one case;
//!   `POST /console/case/{id}`: confirm or override (CSRF token required), through the same
//!   [`Store::add_review`](crate::store::Store::add_review) as the JSON API, so the audit is
//!   one table;
//! - `GET /console/audit`: the decisions; `GET /console/dashboard` and
//!   `/console/dashboard.json`: the figures;
//! - `GET /console/assets/{console.js,console.css}`.
//!
//! URLs carry request ids (random hex) only, never patient data. With
//! `gateway.console.enabled = false` these routes are not mounted at all.

pub mod pages;
pub mod session;

use crate::api_error::ApiError;
use crate::auth::Role;
use crate::state::AppState;
use crate::store::{ConsoleSession, ReviewAction, ReviewRefused};
use axum::extract::{Path, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use careflow_core::Disposition;
use careflow_ledger::now_ms;
use maud::Markup;
use serde::Deserialize;
use session::{csrf_ok, foreign_origin, harden};

const MAX_REASON_CHARS: usize = 2_000;
const CONSOLE_JS: &str = include_str!("assets/console.js");
const CONSOLE_CSS: &str = include_str!("assets/console.css");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(queue))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/case/{id}", get(case).post(decide))
        .route("/console/audit", get(audit))
        .route("/console/dashboard", get(dashboard))
        .route("/console/dashboard.json", get(dashboard_json))
        .route("/console/assets/{name}", get(asset))
}

fn page(status: StatusCode, markup: Markup) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response();
    harden(&mut r);
    r
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    harden(&mut r);
    r
}

/// The signed-in clinician, or the response to send instead (sign-in page for a GET).
async fn signed_in(st: &AppState, headers: &HeaderMap) -> Result<ConsoleSession, Response> {
    match session::current(st, headers).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(redirect("/console/login")),
        Err(e) => Err(error_page(e)),
    }
}

/// A form post: signed in, same origin, and the session's CSRF token. Nothing is done
/// otherwise.
async fn form_session(
    st: &AppState,
    headers: &HeaderMap,
    csrf: Option<&str>,
) -> Result<ConsoleSession, Response> {
    if foreign_origin(headers) {
        return Err(page(
            StatusCode::FORBIDDEN,
            pages::notice("Refused", "This form was posted from another site.", None),
        ));
    }
    let s = match session::current(st, headers).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(page(
                StatusCode::UNAUTHORIZED,
                pages::notice(
                    "Signed out",
                    "Your session has ended: sign in again, then repeat the action.",
                    None,
                ),
            ))
        }
        Err(e) => return Err(error_page(e)),
    };
    if !csrf_ok(&s, csrf) {
        tracing::warn!(key_id = %s.api_key_id, "console form without its CSRF token refused");
        return Err(page(
            StatusCode::FORBIDDEN,
            pages::notice(
                "Refused",
                "This form is missing its security token or it is stale: reload the page and try again.",
                Some(&s),
            ),
        ));
    }
    Ok(s)
}

fn error_page(e: ApiError) -> Response {
    tracing::error!(error = ?e, "console error");
    page(
        StatusCode::INTERNAL_SERVER_ERROR,
        pages::notice(
            "Something went wrong",
            "The server could not complete this request. Try again; if it was a decision, \
             check the case before repeating it.",
            None,
        ),
    )
}

async fn login_page(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Ok(Some(_)) = session::current(&st, &headers).await {
        return redirect("/console");
    }
    page(StatusCode::OK, pages::login(None))
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    api_key: String,
}

async fn login(
    State(st): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if foreign_origin(&headers) {
        return page(
            StatusCode::FORBIDDEN,
            pages::notice("Refused", "This form was posted from another site.", None),
        );
    }
    // Attempts are throttled before the key is checked (one bucket for all sign-ins: the
    // console has few users), so guessing costs time, not just CPU.
    if let Err(retry_after) = st.limiter.check("console-sign-in") {
        let mut r = page(
            StatusCode::TOO_MANY_REQUESTS,
            pages::login(Some("Too many sign-in attempts: wait a moment.")),
        );
        if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let key = form.map(|Form(f)| f.api_key).unwrap_or_default();
    let key = key.trim();
    if key.is_empty() {
        return page(
            StatusCode::BAD_REQUEST,
            pages::login(Some("api_key: enter your API key.")),
        );
    }
    let principal = match st.keys.verify(key).await {
        Ok(p) => p,
        Err(ApiError::Internal(e)) => return error_page(ApiError::Internal(e)),
        Err(_) => {
            tracing::info!("console sign-in refused: unknown or revoked key");
            return page(
                StatusCode::UNAUTHORIZED,
                pages::login(Some("That key was not accepted (unknown or revoked).")),
            );
        }
    };
    if principal.role == Role::Portal {
        tracing::warn!(key_id = %principal.key_id, "console sign-in with a portal key refused");
        return page(
            StatusCode::FORBIDDEN,
            pages::login(Some(
                "The console is for clinician and admin keys; a portal key cannot open it.",
            )),
        );
    }
    // A session the browser already holds (perhaps one planted on it) ends here: signing
    // in always starts a new one.
    if let Err(e) = session::close(&st, &headers).await {
        return error_page(e);
    }
    match session::open(&st, &principal.key_id, principal.role.as_str()).await {
        Ok(token) => {
            tracing::info!(key_id = %principal.key_id, "console sign-in");
            let mut r = redirect("/console");
            r.headers_mut().insert(
                header::SET_COOKIE,
                session::set_cookie(&st, &headers, Some(&token)),
            );
            r
        }
        Err(e) => error_page(e),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn logout(
    State(st): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let signed_out = || {
        let mut r = redirect("/console/login");
        r.headers_mut()
            .insert(header::SET_COOKIE, session::set_cookie(&st, &headers, None));
        r
    };
    // A session that has already ended: nothing to protect, just clear the cookie.
    match session::current(&st, &headers).await {
        Ok(None) => return signed_out(),
        Ok(Some(_)) => {}
        Err(e) => return error_page(e),
    }
    let csrf = form.ok().and_then(|Form(f)| f.csrf);
    if let Err(r) = form_session(&st, &headers, csrf.as_deref()).await {
        return r;
    }
    if let Err(e) = session::close(&st, &headers).await {
        return error_page(e);
    }
    signed_out()
}

async fn queue(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let s = match signed_in(&st, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match st.store.review_queue(500).await {
        Ok(items) => page(StatusCode::OK, pages::queue(&items, &s, now_ms())),
        Err(e) => error_page(e.into()),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The case page, with `error` (and `status`) after a refused decision.
async fn case_page(
    st: &AppState,
    s: &ConsoleSession,
    id: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let not_found = || {
        page(
            StatusCode::NOT_FOUND,
            pages::notice(
                "No such case",
                "There is no triage request with this id.",
                Some(s),
            ),
        )
    };
    if !valid_id(id) {
        return not_found();
    }
    let row = match st.store.request(id).await {
        Ok(Some(row)) => row,
        Ok(None) => return not_found(),
        Err(e) => return error_page(e.into()),
    };
    let (message, review) = match (st.store.message(id).await, st.store.review(id).await) {
        (Ok(m), Ok(r)) => (m, r),
        (Err(e), _) | (_, Err(e)) => return error_page(e.into()),
    };
    let outcome: serde_json::Value = row
        .outcome
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or(serde_json::Value::Null);
    let view = pages::CaseView {
        row: &row,
        message: message.as_deref(),
        outcome: &outcome,
        review: review.as_ref(),
        error,
    };
    page(status, pages::case(&view, s))
}

async fn case(State(st): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    match signed_in(&st, &headers).await {
        Ok(s) => case_page(&st, &s, &id, StatusCode::OK, None).await,
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct DecisionForm {
    csrf: Option<String>,
    action: Option<String>,
    disposition: Option<String>,
    reason: Option<String>,
}

async fn decide(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Result<Form<DecisionForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let form = form.ok().map(|Form(f)| f);
    let csrf = form.as_ref().and_then(|f| f.csrf.as_deref());
    let s = match form_session(&st, &headers, csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(f) = form else {
        return case_page(
            &st,
            &s,
            &id,
            StatusCode::BAD_REQUEST,
            Some("The form could not be read."),
        )
        .await;
    };
    let bad = |msg: String| (StatusCode::BAD_REQUEST, msg);
    let checked = (|| {
        let action = f
            .action
            .as_deref()
            .and_then(ReviewAction::parse)
            .ok_or_else(|| bad("action: choose confirm or override.".into()))?;
        let reason = f.reason.as_deref().map(str::trim).unwrap_or("");
        if reason.chars().count() > MAX_REASON_CHARS
            || reason
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(bad(format!(
                "reason: at most {MAX_REASON_CHARS} characters, no control characters."
            )));
        }
        let reason = (!reason.is_empty()).then(|| reason.replace("\r\n", "\n"));
        let disposition = match action {
            ReviewAction::Confirm => None,
            ReviewAction::Override => {
                let d = f
                    .disposition
                    .as_deref()
                    .filter(|d| !d.is_empty())
                    .and_then(|d| d.parse::<Disposition>().ok())
                    .ok_or_else(|| {
                        bad("disposition: choose the new disposition to override.".into())
                    })?;
                if reason.is_none() {
                    return Err(bad("reason: an override needs a reason.".into()));
                }
                Some(d)
            }
        };
        Ok((action, disposition, reason))
    })();
    let (action, disposition, reason) = match checked {
        Ok(c) => c,
        Err((status, msg)) => return case_page(&st, &s, &id, status, Some(&msg)).await,
    };
    if !valid_id(&id) {
        return case_page(&st, &s, &id, StatusCode::NOT_FOUND, None).await;
    }
    match st
        .store
        .add_review(&id, &s.api_key_id, action, disposition, reason.as_deref())
        .await
    {
        Ok(record) => {
            st.metrics
                .reviews
                .with_label_values(&[action.label()])
                .inc();
            tracing::info!(request_id = %id, key_id = %s.api_key_id, action = action.label(), disposition = %record.disposition, "case reviewed in the console");
            redirect(&format!("/console/case/{id}"))
        }
        Err(ReviewRefused::NotFound) => case_page(&st, &s, &id, StatusCode::NOT_FOUND, None).await,
        Err(ReviewRefused::NotDone(why)) => {
            case_page(&st, &s, &id, StatusCode::UNPROCESSABLE_ENTITY, Some(&why)).await
        }
        Err(ReviewRefused::AlreadyReviewed(_)) => case_page(
            &st,
            &s,
            &id,
            StatusCode::CONFLICT,
            Some(
                "This case was already decided (the decision below stands): one decision per case.",
            ),
        )
        .await,
        Err(ReviewRefused::Store(e)) => error_page(e.into()),
    }
}

async fn audit(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let s = match signed_in(&st, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match (
        st.store.recent_reviews(500).await,
        st.store.recent_sign_ins(100).await,
    ) {
        (Ok(rows), Ok(sign_ins)) => page(StatusCode::OK, pages::audit(&rows, &sign_ins, &s)),
        (Err(e), _) | (_, Err(e)) => error_page(e.into()),
    }
}

async fn figures(st: &AppState) -> Result<crate::store::Figures, ApiError> {
    let console = &st.settings.console;
    let price = |u: &careflow_core::TokenUsage| console.flagship_usd(u);
    Ok(st
        .store
        .figures(console.dashboard_days, now_ms(), &price)
        .await?)
}

async fn dashboard(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let s = match signed_in(&st, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match figures(&st).await {
        Ok(f) => page(StatusCode::OK, pages::dashboard(&f, &s)),
        Err(e) => error_page(e),
    }
}

async fn dashboard_json(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = signed_in(&st, &headers).await {
        // A script's fetch: a status, not the sign-in page.
        if r.status() == StatusCode::SEE_OTHER {
            let mut r = (StatusCode::UNAUTHORIZED, "signed out").into_response();
            harden(&mut r);
            return r;
        }
        return r;
    }
    let mut r = match figures(&st).await {
        Ok(f) => Json(f).into_response(),
        Err(e) => e.into_response(),
    };
    harden(&mut r);
    r
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "console.js" => (CONSOLE_JS, "text/javascript; charset=utf-8"),
        "console.css" => (CONSOLE_CSS, "text/css; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let mut r = ([(header::CONTENT_TYPE, kind)], body).into_response();
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}
