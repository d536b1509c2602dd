//! What the review console reads and writes beside the reviews: its sign-in sessions, the
//! patients' messages, and the reviewed cases for `careflow review export`.
//!
//! `console_sessions` keeps the SHA-256 of each session token, never the token itself (the
//! browser holds it in an HttpOnly cookie), with the key that signed in, the session's CSRF
//! token and its expiry. A session whose key was revoked stops working at once.

use super::reviews::review_row;
use super::{Pool, Store};
use crate::store::ReviewRecord;
use crate::GatewayError;
use careflow_ledger::now_ms;
use serde::Serialize;

/// A signed-in clinician (or admin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub api_key_id: String,
    /// The key's name, shown on the pages.
    pub key_name: String,
    pub role: String,
    /// Every form of the session carries it; a POST without it is refused.
    pub csrf_token: String,
    pub expires_at_ms: i64,
}

/// A sign-in, as the console's audit page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignIn {
    pub api_key_id: String,
    pub key_name: String,
    pub role: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// When the clinician signed out (or a later sign-in in the same browser ended it).
    pub ended_at_ms: Option<i64>,
}

/// A reviewed case with what the export needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReviewedCase {
    pub review: ReviewRecord,
    pub patient_id: Option<i64>,
    pub created_at_ms: i64,
    /// The patient's message (`None` for a request accepted before messages were kept).
    pub message: Option<String>,
    /// The stored outcome JSON.
    pub outcome: Option<String>,
}

impl Store {
    /// The patient's message of a request.
    pub async fn message(&self, request_id: &str) -> Result<Option<String>, GatewayError> {
        let row: Option<(String,)> = on_backend!(&self.pool, p => {
            sqlx::query_as("SELECT message FROM triage_messages WHERE request_id = $1")
                .bind(request_id)
                .fetch_optional(p)
                .await
                .map_err(GatewayError::db("reading a request's message"))?
        });
        Ok(row.map(|r| r.0))
    }

    /// Opens a console session for `token_sha256` (the hash of the cookie's token).
    pub async fn create_console_session(
        &self,
        token_sha256: &str,
        api_key_id: &str,
        role: &str,
        csrf_token: &str,
        ttl_ms: i64,
    ) -> Result<(), GatewayError> {
        let now = now_ms();
        on_backend!(&self.pool, p => {
            sqlx::query(
                "INSERT INTO console_sessions (token_sha256, api_key_id, role, csrf_token, \
                 created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(token_sha256)
            .bind(api_key_id)
            .bind(role)
            .bind(csrf_token)
            .bind(now)
            .bind(now.saturating_add(ttl_ms))
            .execute(p)
            .await
            .map_err(GatewayError::db("opening a console session"))?;
        });
        Ok(())
    }

    /// The live session of a token hash: not ended, not expired, its key not revoked.
    pub async fn console_session(
        &self,
        token_sha256: &str,
    ) -> Result<Option<ConsoleSession>, GatewayError> {
        type Row = (String, String, String, String, i64);
        let row: Option<Row> = on_backend!(&self.pool, p => {
            sqlx::query_as(
                "SELECT s.api_key_id, k.name, s.role, s.csrf_token, s.expires_at_ms \
                 FROM console_sessions s JOIN api_keys k ON k.id = s.api_key_id \
                 WHERE s.token_sha256 = $1 AND s.ended_at_ms IS NULL \
                 AND s.expires_at_ms > $2 AND k.revoked_at_ms IS NULL",
            )
            .bind(token_sha256)
            .bind(now_ms())
            .fetch_optional(p)
            .await
            .map_err(GatewayError::db("reading a console session"))?
        });
        Ok(row.map(
            |(api_key_id, key_name, role, csrf_token, expires_at_ms)| ConsoleSession {
                api_key_id,
                key_name,
                role,
                csrf_token,
                expires_at_ms,
            },
        ))
    }

    /// Ends a session (sign-out).
    pub async fn end_console_session(&self, token_sha256: &str) -> Result<(), GatewayError> {
        on_backend!(&self.pool, p => {
            sqlx::query(
                "UPDATE console_sessions SET ended_at_ms = $2 \
                 WHERE token_sha256 = $1 AND ended_at_ms IS NULL",
            )
            .bind(token_sha256)
            .bind(now_ms())
            .execute(p)
            .await
            .map_err(GatewayError::db("ending a console session"))?;
        });
        Ok(())
    }

    /// Every reviewed case, oldest decision first, with its message and outcome.
    pub async fn reviewed_cases(&self) -> Result<Vec<ReviewedCase>, GatewayError> {
        type Row = (
            String,
            String,
            String,
            String,
            String,
            Option<String>,
            i64,
            Option<i64>,
            i64,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = on_backend!(&self.pool, p => {
            sqlx::query_as(
                "SELECT v.request_id, v.reviewer_key_id, v.action, v.disposition, v.previous, \
                 v.reason, v.at_ms, r.patient_id, r.created_at_ms, m.message, r.outcome \
                 FROM reviews v JOIN triage_requests r ON r.request_id = v.request_id \
                 LEFT JOIN triage_messages m ON m.request_id = v.request_id \
                 ORDER BY v.at_ms, v.request_id",
            )
            .fetch_all(p)
            .await
            .map_err(GatewayError::db("reading the reviewed cases"))?
        });
        Ok(rows
            .into_iter()
            .map(|t| ReviewedCase {
                review: review_row((t.0, t.1, t.2, t.3, t.4, t.5, t.6)),
                patient_id: t.7,
                created_at_ms: t.8,
                message: t.9,
                outcome: t.10,
            })
            .collect())
    }

    /// The latest decisions with the reviewer's key name, newest first (the console's audit).
    pub async fn recent_reviews(
        &self,
        limit: i64,
    ) -> Result<Vec<(ReviewRecord, String)>, GatewayError> {
        type Row = (
            String,
            String,
            String,
            String,
            String,
            Option<String>,
            i64,
            Option<String>,
        );
        let rows: Vec<Row> = on_backend!(&self.pool, p => {
            sqlx::query_as(
                "SELECT v.request_id, v.reviewer_key_id, v.action, v.disposition, v.previous, \
                 v.reason, v.at_ms, k.name FROM reviews v \
                 LEFT JOIN api_keys k ON k.id = v.reviewer_key_id \
                 ORDER BY v.at_ms DESC, v.request_id LIMIT $1",
            )
            .bind(limit)
            .fetch_all(p)
            .await
            .map_err(GatewayError::db("reading the latest reviews"))?
        });
        Ok(rows
            .into_iter()
            .map(|t| {
                (
                    review_row((t.0, t.1, t.2, t.3, t.4, t.5, t.6)),
                    t.7.unwrap_or_default(),
                )
            })
            .collect())
    }

    /// The latest sign-ins, newest first (never their tokens).
    pub async fn recent_sign_ins(&self, limit: i64) -> Result<Vec<SignIn>, GatewayError> {
        type Row = (String, Option<String>, String, i64, i64, Option<i64>);
        let rows: Vec<Row> = on_backend!(&self.pool, p => {
            sqlx::query_as(
                "SELECT s.api_key_id, k.name, s.role, s.created_at_ms, s.expires_at_ms, \
                 s.ended_at_ms FROM console_sessions s LEFT JOIN api_keys k ON k.id = s.api_key_id \
                 ORDER BY s.created_at_ms DESC LIMIT $1",
            )
            .bind(limit)
            .fetch_all(p)
            .await
            .map_err(GatewayError::db("reading the latest sign-ins"))?
        });
        Ok(rows
            .into_iter()
            .map(|t| SignIn {
                api_key_id: t.0,
                key_name: t.1.unwrap_or_default(),
                role: t.2,
                created_at_ms: t.3,
                expires_at_ms: t.4,
                ended_at_ms: t.5,
            })
            .collect())
    }
}
