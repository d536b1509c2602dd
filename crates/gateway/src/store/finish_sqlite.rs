//! A decided request's ending on SQLite in one round trip.
//!
//! sqlx runs each SQLite connection on a thread of its own and every statement is a round
//! trip to it (a channel send and two thread wake-ups); with BEGIN, the request's UPDATE, the
//! audit row, one row per step and COMMIT, those round trips were most of the gateway's CPU
//! under load (`perf`: 46% of samples in the `sqlx-sqlite-worker` threads, mostly context
//! switches). Here the whole transaction is one multi-statement query — sqlx-sqlite runs the
//! statements of one query in turn and binds `$N` by number into the same argument list —
//! and each INSERT is conditional on the statement before it (`changes() = 1`), so nothing is
//! written unless the request was still `accepted` (the first ending wins, as on the general
//! path). A failure rolls the transaction back on the same connection.

use super::{AuditRecord, Ending};
use crate::GatewayError;
use sqlx::SqlitePool;

/// The SQL for `steps` step rows, with or without the message row.
fn sql(steps: usize, message: bool) -> String {
    let mut s = String::from(
        "BEGIN; \
         UPDATE triage_requests SET status = 'done', finished_at_ms = $2, outcome = $3, \
         error_kind = NULL, error = NULL WHERE request_id = $1 AND status = 'accepted' \
         RETURNING 1; \
         INSERT INTO audit_log (at_ms, request_id, api_key_id, role, patient_id, \
         message_sha256, workflow, disposition, decision, decided_by, escalated, rules_fired, \
         tiers, models, cost_usd) SELECT $2, $1, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
         $14, $15, $16 WHERE changes() = 1;",
    );
    let mut n = 16;
    for _ in 0..steps {
        s.push_str(&format!(
            " INSERT INTO triage_steps (request_id, at_ms, step, tier, millis, submitted, \
             computed, reused, generated, cost_usd) SELECT $1, $2, ${}, ${}, ${}, ${}, ${}, ${}, \
             ${}, ${} WHERE changes() = 1;",
            n + 1,
            n + 2,
            n + 3,
            n + 4,
            n + 5,
            n + 6,
            n + 7,
            n + 8
        ));
        n += 8;
    }
    if message {
        s.push_str(&format!(
            " INSERT INTO triage_messages (request_id, message) SELECT $1, ${} \
             WHERE changes() = 1 ON CONFLICT DO NOTHING;",
            n + 1
        ));
    }
    s.push_str(" COMMIT;");
    s
}

/// Stores a `done` ending; `Ok(false)` when the request had already ended. `None` for an
/// ending this path does not take (errors: one UPDATE, the general path is as short).
pub(super) async fn finish_done(
    pool: &SqlitePool,
    request_id: &str,
    ending: &Ending,
    now: i64,
) -> Option<Result<bool, GatewayError>> {
    let Ending::Done {
        outcome_json,
        audit,
        message,
    } = ending
    else {
        return None;
    };
    let a: &AuditRecord = audit;
    let text = sql(a.steps.len(), message.is_some());
    let mut q = sqlx::query(&text)
        .bind(request_id)
        .bind(now)
        .bind(outcome_json)
        .bind(&a.api_key_id)
        .bind(&a.role)
        .bind(a.patient_id)
        .bind(&a.message_sha256)
        .bind(&a.workflow)
        .bind(&a.disposition)
        .bind(&a.decision)
        .bind(&a.decided_by)
        .bind(a.escalated)
        .bind(&a.rules_fired)
        .bind(&a.tiers)
        .bind(&a.models)
        .bind(a.cost_usd);
    for st in &a.steps {
        q = q
            .bind(&st.step)
            .bind(&st.tier)
            .bind(st.millis)
            .bind(st.submitted as i64)
            .bind(st.computed as i64)
            .bind(st.reused as i64)
            .bind(st.generated as i64)
            .bind(st.cost_usd);
    }
    if let Some(m) = message {
        q = q.bind(m);
    }
    let ctx = "storing a request's outcome";
    let mut conn = match pool.acquire().await {
        Ok(c) => c,
        Err(e) => return Some(Err(GatewayError::db(ctx)(e))),
    };
    // Whether the UPDATE applied is the row its RETURNING gives (the query's rows-affected
    // count cannot say: SQLite reports BEGIN and COMMIT with the last statement's count).
    Some(match q.fetch_all(&mut *conn).await {
        Ok(rows) => Ok(!rows.is_empty()),
        Err(e) => {
            // The statements stopped mid-transaction: end it before the connection is reused.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err(GatewayError::db(ctx)(e))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::sql;

    #[test]
    fn parameters_are_numbered_in_bind_order() {
        let s = sql(2, true);
        for n in 1..=(16 + 2 * 8 + 1) {
            assert!(
                s.contains(&format!("${n},")) || s.contains(&format!("${n} ")),
                "${n}"
            );
        }
        assert!(!s.contains("$34"));
        assert!(s.starts_with("BEGIN;") && s.ends_with("COMMIT;"));
        assert_eq!(s.matches("changes() = 1").count(), 4);
    }
}
