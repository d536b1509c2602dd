//! Clinician review: the queue of cases the workflow did not settle alone (sent to human
//! review, or decided by the frontier tier after an escalation), and the decisions on them.
//!
//! `reviews` is append-only like `audit_log` (triggers refuse UPDATE and DELETE), with one
//! decision per request (a primary key on `request_id`): a case is confirmed or overridden
//! once, by a named key, with the reason, and that row is the audit of the action.

use super::{Pool, Store};
use crate::GatewayError;
use careflow_core::Disposition;
use careflow_ledger::now_ms;
use serde::Serialize;
use serde_json::Value;

/// What the reviewer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewAction {
    /// The workflow's disposition stands.
    Confirm,
    /// A clinician's disposition replaces it.
    Override,
}

impl ReviewAction {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "confirm" => Some(ReviewAction::Confirm),
            "override" => Some(ReviewAction::Override),
            _ => None,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            ReviewAction::Confirm => "confirm",
            ReviewAction::Override => "override",
        }
    }
}

/// A decision on a case, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReviewRecord {
    pub request_id: String,
    pub reviewer_key_id: String,
    pub action: String,
    /// The disposition in force after the review.
    pub disposition: String,
    /// The workflow's disposition before it.
    pub previous: String,
    pub reason: Option<String>,
    pub at_ms: i64,
}

/// A case waiting for a clinician.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueItem {
    pub request_id: String,
    pub patient_id: Option<i64>,
    pub created_at_ms: i64,
    /// The workflow's disposition and who decided it (`human_review` or `frontier`).
    pub disposition: String,
    pub decided_by: String,
    /// The red-flag floor, when a rule fired.
    pub floor: Option<String>,
    /// The most urgent of the disposition and the floor: the queue's order.
    pub urgency: String,
}

/// Why a review could not be recorded.
#[derive(Debug)]
pub enum ReviewRefused {
    NotFound,
    /// The request has no outcome to review (still running, or it ended in an error).
    NotDone(String),
    AlreadyReviewed(Box<ReviewRecord>),
    Store(GatewayError),
}

impl From<GatewayError> for ReviewRefused {
    fn from(e: GatewayError) -> Self {
        ReviewRefused::Store(e)
    }
}

fn label_of(outcome: &Value, pointer: &str) -> Option<Disposition> {
    outcome
        .pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// The more urgent of two dispositions (admin has no acuity and loses to any clinical level).
fn most_urgent(a: Disposition, b: Option<Disposition>) -> Disposition {
    match b {
        Some(b) if a.is_below(b) => b,
        _ => a,
    }
}

pub(super) type ReviewTuple = (String, String, String, String, String, Option<String>, i64);

pub(super) fn review_row(t: ReviewTuple) -> ReviewRecord {
    ReviewRecord {
        request_id: t.0,
        reviewer_key_id: t.1,
        action: t.2,
        disposition: t.3,
        previous: t.4,
        reason: t.5,
        at_ms: t.6,
    }
}

const REVIEW_COLUMNS: &str =
    "request_id, reviewer_key_id, action, disposition, previous, reason, at_ms";

/// Whether a decision needs a clinician: the workflow sent it to human review, or the
/// frontier tier decided it after an escalation. The one definition: the queue, the
/// dashboard, the portal's hold and which messages are kept all ask it (the SQL below says
/// the same for the queries).
pub fn needs_review(decided_by: &str) -> bool {
    matches!(decided_by, "human_review" | "frontier")
}

/// The done, unreviewed cases that need a clinician (`a`: their audit rows, `r`: requests).
/// The partial index `audit_log_review` holds these kinds only: its condition and this
/// one's must stay the same, or the planner cannot use it.
pub(super) const QUEUED_CASES: &str = "FROM audit_log a \
     JOIN triage_requests r ON r.request_id = a.request_id \
     LEFT JOIN reviews v ON v.request_id = a.request_id \
     WHERE a.decided_by IN ('human_review', 'frontier') AND r.status = 'done' \
     AND v.request_id IS NULL";

impl Store {
    /// The cases waiting for a clinician, most urgent first, then oldest first.
    pub async fn review_queue(&self, limit: usize) -> Result<Vec<QueueItem>, GatewayError> {
        // The audit row says who decided, so only the queued cases' outcomes are parsed
        // (for the floor).
        let sql = format!(
            "SELECT r.request_id, r.patient_id, r.created_at_ms, a.decided_by, r.outcome \
             {QUEUED_CASES} ORDER BY r.created_at_ms, r.request_id"
        );
        type Row = (String, Option<i64>, i64, String, Option<String>);
        let rows: Vec<Row> = on_backend!(&self.pool, p => {
            sqlx::query_as(&sql)
                .fetch_all(p)
                .await
                .map_err(GatewayError::db("reading the review queue"))?
        });
        let mut items: Vec<(Disposition, QueueItem)> = Vec::new();
        for (request_id, patient_id, created_at_ms, decided_by, outcome) in rows {
            let Some(outcome) = outcome.and_then(|o| serde_json::from_str::<Value>(&o).ok()) else {
                continue;
            };
            let Some(disposition) = label_of(&outcome, "/disposition") else {
                continue;
            };
            let floor = label_of(&outcome, "/floor");
            let urgency = most_urgent(disposition, floor);
            items.push((
                urgency,
                QueueItem {
                    request_id,
                    patient_id,
                    created_at_ms,
                    disposition: disposition.label().to_string(),
                    decided_by,
                    floor: floor.map(|f| f.label().to_string()),
                    urgency: urgency.label().to_string(),
                },
            ));
        }
        // Most urgent first (admin, with no acuity, last); the sort is stable, so equal
        // urgency keeps the oldest first.
        items.sort_by_key(|(u, _)| std::cmp::Reverse(u.acuity().map_or(0, |a| a as i32 + 1)));
        Ok(items.into_iter().take(limit).map(|(_, i)| i).collect())
    }

    /// The decision on a request, if it was reviewed.
    pub async fn review(&self, request_id: &str) -> Result<Option<ReviewRecord>, GatewayError> {
        let sql = format!("SELECT {REVIEW_COLUMNS} FROM reviews WHERE request_id = $1");
        let row: Option<ReviewTuple> = on_backend!(&self.pool, p => {
            sqlx::query_as(&sql)
                .bind(request_id)
                .fetch_optional(p)
                .await
                .map_err(GatewayError::db("reading a review"))?
        });
        Ok(row.map(review_row))
    }

    /// Every decision, oldest first (the export).
    pub async fn reviews(&self) -> Result<Vec<ReviewRecord>, GatewayError> {
        let sql = format!("SELECT {REVIEW_COLUMNS} FROM reviews ORDER BY at_ms, request_id");
        let rows: Vec<ReviewTuple> = on_backend!(&self.pool, p => {
            sqlx::query_as(&sql)
                .fetch_all(p)
                .await
                .map_err(GatewayError::db("reading reviews"))?
        });
        Ok(rows.into_iter().map(review_row).collect())
    }

    /// Records a clinician's decision on a finished request. `disposition`: the new one for
    /// an override (required), ignored for a confirmation (the workflow's stands).
    pub async fn add_review(
        &self,
        request_id: &str,
        reviewer_key_id: &str,
        action: ReviewAction,
        disposition: Option<Disposition>,
        reason: Option<&str>,
    ) -> Result<ReviewRecord, ReviewRefused> {
        let row = self
            .request(request_id)
            .await?
            .ok_or(ReviewRefused::NotFound)?;
        let outcome = match (row.status.as_str(), &row.outcome) {
            ("done", Some(o)) => serde_json::from_str::<Value>(o)
                .map_err(|e| ReviewRefused::NotDone(format!("its outcome cannot be read: {e}")))?,
            (status, _) => {
                return Err(ReviewRefused::NotDone(format!(
                    "the request is `{status}`: there is no outcome to review"
                )))
            }
        };
        let previous = label_of(&outcome, "/disposition")
            .ok_or_else(|| ReviewRefused::NotDone("its outcome has no disposition".into()))?;
        let now = match action {
            ReviewAction::Confirm => previous,
            ReviewAction::Override => disposition.unwrap_or(previous),
        };
        let record = ReviewRecord {
            request_id: request_id.to_string(),
            reviewer_key_id: reviewer_key_id.to_string(),
            action: action.label().to_string(),
            disposition: now.label().to_string(),
            previous: previous.label().to_string(),
            reason: reason.map(str::to_string),
            at_ms: now_ms(),
        };
        // One decision per case: the primary key refuses a second, and the loser is told
        // which decision stands.
        let inserted = on_backend!(&self.pool, p => {
            sqlx::query(
                "INSERT INTO reviews (request_id, reviewer_key_id, action, disposition, \
                 previous, reason, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (request_id) DO NOTHING",
            )
            .bind(&record.request_id)
            .bind(&record.reviewer_key_id)
            .bind(&record.action)
            .bind(&record.disposition)
            .bind(&record.previous)
            .bind(&record.reason)
            .bind(record.at_ms)
            .execute(p)
            .await
            .map_err(GatewayError::db("storing a review"))?
            .rows_affected()
                == 1
        });
        if !inserted {
            let standing = self
                .review(request_id)
                .await?
                .ok_or(ReviewRefused::NotFound)?;
            return Err(ReviewRefused::AlreadyReviewed(Box::new(standing)));
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The review queue is read through the partial index of review cases (the audit log
    /// keeps no index entry for the other decisions): if the query's condition and the
    /// index's drift apart, the planner falls back to scanning the whole audit log.
    #[tokio::test]
    async fn the_review_queue_reads_the_partial_index_of_review_cases() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let Pool::Sqlite(pool) = &store.pool else {
            unreachable!("a SQLite URL")
        };
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!(
            "EXPLAIN QUERY PLAN SELECT a.request_id {QUEUED_CASES}"
        ))
        .fetch_all(pool)
        .await
        .unwrap();
        assert!(
            plan.iter()
                .any(|(_, _, _, d)| d.contains("audit_log_review")),
            "{plan:?}"
        );
    }
}
