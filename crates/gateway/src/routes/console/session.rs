//! Console sign-in: a random session token in an `HttpOnly; SameSite=Strict` cookie (its
//! SHA-256 in `console_sessions`), a CSRF token per session that every form carries, and
//! the headers every console page is sent with.
//!
//! The console reads only its cookie: an `Authorization` header or a patient token opens
//! nothing here, so a portal key or a patient's token cannot reach a page.

use crate::api_error::ApiError;
use crate::auth::random_hex;
use crate::flow::sha256_hex;
use crate::state::AppState;
use crate::store::ConsoleSession;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::Response;

pub const COOKIE: &str = "careflow_console";
/// Pages, their data and forms live under this path; the cookie is sent to nothing else.
pub const BASE: &str = "/console";

/// The session token in the request's cookie, if any.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The signed-in clinician, if the cookie names a live session.
pub async fn current(
    st: &AppState,
    headers: &HeaderMap,
) -> Result<Option<ConsoleSession>, ApiError> {
    let Some(token) = cookie_token(headers) else {
        return Ok(None);
    };
    Ok(st.store.console_session(&sha256_hex(&token)).await?)
}

/// Opens a session for a verified key; returns the cookie's token.
pub async fn open(st: &AppState, key_id: &str, role: &str) -> Result<String, ApiError> {
    let token = random_hex(32)?;
    let csrf = random_hex(32)?;
    let ttl = st
        .settings
        .console
        .session_ttl
        .as_millis()
        .min(i64::MAX as u128) as i64;
    st.store
        .create_console_session(&sha256_hex(&token), key_id, role, &csrf, ttl)
        .await?;
    Ok(token)
}

/// Ends the session the cookie names (if any).
pub async fn close(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(token) = cookie_token(headers) {
        st.store.end_console_session(&sha256_hex(&token)).await?;
    }
    Ok(())
}

/// Whether the request came to us through an HTTPS proxy.
fn via_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value that stores `token` (or, with `None`, clears the cookie).
pub fn set_cookie(st: &AppState, headers: &HeaderMap, token: Option<&str>) -> HeaderValue {
    let secure = if st.settings.console.secure_cookie || via_https(headers) {
        "; Secure"
    } else {
        ""
    };
    let value = match token {
        Some(t) => format!(
            "{COOKIE}={t}; Path={BASE}; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            st.settings.console.session_ttl.as_secs()
        ),
        None => format!("{COOKIE}=; Path={BASE}; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    };
    // Only hex and fixed text: always a valid header value.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Compares in constant time, so the token cannot be guessed byte by byte from timings.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Whether a form's CSRF token is the session's.
pub fn csrf_ok(session: &ConsoleSession, sent: Option<&str>) -> bool {
    sent.is_some_and(|t| same(t, &session.csrf_token))
}

/// A cross-site form post names another origin: refused whatever the cookie says (the
/// cookie's SameSite=Strict already keeps it from being sent; this is the second lock).
pub fn foreign_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    // Behind a proxy that rewrites Host, the host the browser used is X-Forwarded-Host (a
    // browser cannot set that header on a cross-site form, so trusting it keeps the check).
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    origin == "null" || origin_host != host
}

/// The headers every console response carries: no caching (patient data), no framing, no
/// scripts or styles but ours, no referrer to other sites.
pub fn harden(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: under `no-referrer` browsers send `Origin: null`
    // with our own forms, which the origin check refuses; request ids still never leave.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others_and_must_look_like_a_token() {
        let mut h = HeaderMap::new();
        let t = "a".repeat(64);
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {COOKIE}={t}; y=2")).unwrap(),
        );
        assert_eq!(cookie_token(&h), Some(t));
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{COOKIE}=<script>")).unwrap(),
        );
        assert_eq!(cookie_token(&h), None);
    }

    #[test]
    fn origins_are_compared_with_the_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(!foreign_origin(&h), "no Origin: a same-origin navigation");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(!foreign_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(foreign_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(foreign_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://care.example.org"),
        );
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("care.example.org"),
        );
        assert!(!foreign_origin(&h), "behind a proxy");
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
