//! A group of request-path writes on SQLite in one round trip and a handful of statements.
//!
//! sqlx runs each SQLite connection on a thread of its own and every statement is a round
//! trip to it (a channel send and two thread wake-ups). Written one statement per row — BEGIN,
//! each accept, each ending's UPDATE, its audit row, a row per step, COMMIT — those round
//! trips were most of the gateway's CPU under load and, because the writer waits for each,
//! milliseconds of queueing at 5,000 requests/s. Here a whole group is one multi-statement
//! query (sqlx-sqlite runs its statements in turn and hands out the anonymous `?`
//! parameters in order across them) with one multi-row statement per table, so a group of
//! any size costs one round trip and at most six statements to prepare.
//!
//! The first ending wins, as on the general path: the rows of a `done` ending (steps,
//! message, audit) are inserted only for requests still `accepted`, and the UPDATE that ends
//! them comes last, in the same transaction, with the same condition. `RETURNING` tells which
//! writes applied (the query's rows-affected count cannot: SQLite reports BEGIN and COMMIT
//! with the connection's last count). A group with two rows or two endings of one request is
//! left to the general path, which takes the writes in order.

use super::{AuditRecord, Ending, GroupFailed, Write};
use crate::GatewayError;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, Row, SqliteConnection};
use std::collections::{HashMap, HashSet};

/// SQLite's default limit on the parameters of one statement is 32,766; a group that would
/// pass it (it takes hundreds of writes with many steps) goes the general way.
const MAX_PARAMETERS: usize = 32_000;

/// One bound value.
enum Arg<'a> {
    Text(&'a str),
    MaybeText(Option<&'a str>),
    Int(i64),
    MaybeInt(Option<i64>),
    Real(f64),
    Bool(bool),
}

/// The query being built: its text and, in the same order, the values of its `?`.
#[derive(Default)]
struct Batch<'a> {
    sql: String,
    args: Vec<Arg<'a>>,
}

impl<'a> Batch<'a> {
    /// Appends `head`, then one `(?, …)` row per item of `rows` (comma-separated), then
    /// `tail`; nothing at all when there are no rows.
    fn statement<I, R>(&mut self, head: &str, rows: I, tail: &str)
    where
        I: IntoIterator<Item = R>,
        R: IntoIterator<Item = Arg<'a>>,
    {
        let mut first = true;
        for row in rows {
            self.sql.push_str(if first { head } else { ", " });
            first = false;
            self.sql.push('(');
            for (i, arg) in row.into_iter().enumerate() {
                self.sql.push_str(if i == 0 { "?" } else { ", ?" });
                self.args.push(arg);
            }
            self.sql.push(')');
        }
        if !first {
            self.sql.push_str(tail);
        }
    }
}

/// The whole group as one query, or `None` when the group has two rows or two endings of
/// one request, or is too big for one statement.
fn build<'a>(writes: &[&'a Write], now: i64) -> Option<Batch<'a>> {
    // A request's row (accepted or rejected) and its ending may share a group (the INSERT
    // comes first); two rows or two endings of one request may not.
    let mut ids = HashSet::with_capacity(writes.len());
    for w in writes {
        let (tag, id) = tag(w);
        if !ids.insert((tag == "finish", id)) {
            return None;
        }
    }
    let done: Vec<(&str, &AuditRecord, Option<&str>)> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Finish(id, Ending::Done { audit, message, .. }) => {
                Some((id.as_str(), audit.as_ref(), message.as_deref()))
            }
            _ => None,
        })
        .collect();
    let mut b = Batch {
        sql: String::from("BEGIN IMMEDIATE;"),
        args: Vec::new(),
    };
    b.statement(
        " INSERT INTO triage_requests (request_id, api_key_id, patient_id, idempotency_key, \
         message_sha256, created_at_ms, status) VALUES ",
        writes.iter().filter_map(|w| match w {
            Write::Accept(r) => Some([
                Arg::Text(&r.request_id),
                Arg::Text(&r.api_key_id),
                Arg::MaybeInt(r.patient_id),
                Arg::MaybeText(r.idempotency_key.as_deref()),
                Arg::Text(&r.message_sha256),
                Arg::Int(now),
                Arg::Text("accepted"),
            ]),
            _ => None,
        }),
        " ON CONFLICT DO NOTHING RETURNING 'accept', request_id;",
    );
    // Refused requests are stored without their idempotency key, so a retry with it runs.
    b.statement(
        " INSERT INTO triage_requests (request_id, api_key_id, patient_id, message_sha256, \
         created_at_ms, finished_at_ms, error_kind, status, error) VALUES ",
        writes.iter().filter_map(|w| match w {
            Write::Reject(r, kind) => Some([
                Arg::Text(&r.request_id),
                Arg::Text(&r.api_key_id),
                Arg::MaybeInt(r.patient_id),
                Arg::Text(&r.message_sha256),
                Arg::Int(now),
                Arg::Int(now),
                Arg::Text(kind),
                Arg::Text("rejected"),
                Arg::Text("refused before it was accepted"),
            ]),
            _ => None,
        }),
        " ON CONFLICT DO NOTHING RETURNING 'reject', request_id;",
    );
    // A `done` ending's rows, each only while its request is still `accepted` (the UPDATE
    // below ends it in this same transaction).
    const STILL_ACCEPTED: &str = ") AS v JOIN triage_requests AS r ON r.request_id = v.column1 \
         WHERE r.status = 'accepted'";
    b.statement(
        " INSERT INTO triage_steps (request_id, at_ms, step, tier, millis, submitted, computed, \
         reused, generated, cost_usd) SELECT v.column1, v.column2, v.column3, v.column4, \
         v.column5, v.column6, v.column7, v.column8, v.column9, v.column10 FROM (VALUES ",
        done.iter().flat_map(|(id, a, _)| {
            a.steps.iter().map(move |s| {
                [
                    Arg::Text(id),
                    Arg::Int(now),
                    Arg::Text(&s.step),
                    Arg::Text(&s.tier),
                    Arg::Real(s.millis),
                    Arg::Int(s.submitted as i64),
                    Arg::Int(s.computed as i64),
                    Arg::Int(s.reused as i64),
                    Arg::Int(s.generated as i64),
                    Arg::Real(s.cost_usd),
                ]
            })
        }),
        &format!("{STILL_ACCEPTED};"),
    );
    b.statement(
        " INSERT INTO triage_messages (request_id, message) SELECT v.column1, v.column2 \
         FROM (VALUES ",
        done.iter()
            .filter_map(|(id, _, m)| m.map(|m| [Arg::Text(id), Arg::Text(m)])),
        &format!("{STILL_ACCEPTED} ON CONFLICT DO NOTHING;"),
    );
    b.statement(
        " INSERT INTO audit_log (request_id, at_ms, api_key_id, role, patient_id, \
         message_sha256, workflow, disposition, decision, decided_by, escalated, rules_fired, \
         tiers, models, cost_usd) SELECT v.column1, v.column2, v.column3, v.column4, \
         v.column5, v.column6, v.column7, v.column8, v.column9, v.column10, v.column11, \
         v.column12, v.column13, v.column14, v.column15 FROM (VALUES ",
        done.iter().map(|(id, a, _)| {
            [
                Arg::Text(id),
                Arg::Int(now),
                Arg::Text(&a.api_key_id),
                Arg::Text(&a.role),
                Arg::MaybeInt(a.patient_id),
                Arg::Text(&a.message_sha256),
                Arg::Text(&a.workflow),
                Arg::Text(&a.disposition),
                Arg::Text(&a.decision),
                Arg::Text(&a.decided_by),
                Arg::Bool(a.escalated),
                Arg::Text(&a.rules_fired),
                Arg::Text(&a.tiers),
                Arg::Text(&a.models),
                Arg::Real(a.cost_usd),
            ]
        }),
        &format!("{STILL_ACCEPTED};"),
    );
    b.statement(
        " UPDATE triage_requests SET status = v.column2, finished_at_ms = v.column3, \
         outcome = v.column4, error_kind = v.column5, error = v.column6 FROM (VALUES ",
        writes.iter().filter_map(|w| match w {
            Write::Finish(id, ending) => {
                let (status, outcome, kind, message) = ending.columns();
                Some([
                    Arg::Text(id),
                    Arg::Text(status),
                    Arg::Int(now),
                    Arg::MaybeText(outcome),
                    Arg::MaybeText(kind),
                    Arg::MaybeText(message),
                ])
            }
            _ => None,
        }),
        ") AS v WHERE triage_requests.request_id = v.column1 \
         AND triage_requests.status = 'accepted' RETURNING 'finish', request_id;",
    );
    b.sql.push_str(" COMMIT;");
    (b.args.len() <= MAX_PARAMETERS).then_some(b)
}

/// Applies the group; per write, whether it changed a row. `None`: the group is for the
/// general path (see [`build`]).
pub(super) async fn apply(
    conn: &mut SqliteConnection,
    writes: &[&Write],
    now: i64,
) -> Option<Result<Vec<bool>, GroupFailed>> {
    let batch = build(writes, now)?;
    let mut args = SqliteArguments::default();
    let bound = batch.args.iter().try_for_each(|a| match a {
        Arg::Text(v) => args.add(*v),
        Arg::MaybeText(v) => args.add(*v),
        Arg::Int(v) => args.add(*v),
        Arg::MaybeInt(v) => args.add(*v),
        Arg::Real(v) => args.add(*v),
        Arg::Bool(v) => args.add(*v),
    });
    let ctx = "writing requests";
    if let Err(e) = bound {
        return Some(Err(GroupFailed::RolledBack(GatewayError::Service(
            format!("{ctx}: {e}"),
        ))));
    }
    // Persistent: a group's text repeats at a steady mix (one accept, one accept and one
    // ending, …) and the connection's statement cache (LRU) keeps those prepared.
    let rows = match sqlx::query_with(&batch.sql, args)
        .fetch_all(&mut *conn)
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            // The statements stopped mid-transaction: end it before the connection is reused.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            return Some(Err(GroupFailed::RolledBack(GatewayError::db(ctx)(e))));
        }
    };
    // Per request id: whether its row (accept or reject: a group has at most one of them
    // per request, see `build`) and its ending applied. Looked up by `&str`, so answering a
    // write allocates nothing.
    let mut applied: HashMap<String, [bool; 2]> = HashMap::with_capacity(rows.len());
    for row in &rows {
        match (row.try_get::<String, _>(0), row.try_get::<String, _>(1)) {
            (Ok(kind), Ok(id)) => {
                applied.entry(id).or_default()[usize::from(kind == "finish")] = true;
            }
            (Err(e), _) | (_, Err(e)) => {
                return Some(Err(GroupFailed::AfterCommit(GatewayError::db(ctx)(e))))
            }
        }
    }
    Some(Ok(writes
        .iter()
        .map(|w| {
            let (tag, id) = tag(w);
            applied
                .get(id)
                .is_some_and(|done| done[usize::from(tag == "finish")])
        })
        .collect()))
}

/// What a write's statement returns when it applies (`RETURNING tag, request_id`).
fn tag(w: &Write) -> (&'static str, &str) {
    match w {
        Write::Accept(r) => ("accept", &r.request_id),
        Write::Reject(r, _) => ("reject", &r.request_id),
        Write::Finish(id, _) => ("finish", id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewRequest, StepFigures};

    fn new(id: &str) -> NewRequest {
        NewRequest {
            request_id: id.into(),
            api_key_id: "k".into(),
            patient_id: None,
            idempotency_key: Some("i".into()),
            message_sha256: "00".into(),
        }
    }

    #[test]
    fn every_placeholder_has_its_value_and_a_repeated_request_goes_the_general_way() {
        let audit = AuditRecord {
            request_id: "b".into(),
            api_key_id: "k".into(),
            role: "portal".into(),
            patient_id: None,
            message_sha256: "00".into(),
            workflow: "triage".into(),
            disposition: "routine".into(),
            decision: "answer".into(),
            decided_by: "small".into(),
            escalated: false,
            rules_fired: "[]".into(),
            tiers: "[]".into(),
            models: "[]".into(),
            cost_usd: 0.0,
            steps: vec![StepFigures::default(); 3],
        };
        let writes = [
            Write::Accept(new("a")),
            Write::Finish(
                "b".into(),
                Ending::Done {
                    outcome_json: "{}".into(),
                    audit: Box::new(audit),
                    message: Some("text".into()),
                },
            ),
            Write::Reject(new("c"), "overloaded".into()),
            Write::Finish(
                "d".into(),
                Ending::Error {
                    kind: "deadline".into(),
                    message: "late".into(),
                },
            ),
        ];
        let refs: Vec<&Write> = writes.iter().collect();
        let b = build(&refs, 1).expect("distinct requests");
        assert_eq!(b.sql.matches('?').count(), b.args.len());
        // accept 7 + reject 9 + steps 3 × 10 + message 2 + audit 15 + endings 2 × 6
        assert_eq!(b.args.len(), 7 + 9 + 30 + 2 + 15 + 12);
        assert!(b.sql.starts_with("BEGIN IMMEDIATE;") && b.sql.ends_with("COMMIT;"));
        // The ending's UPDATE comes after the rows that depend on it.
        let update = b.sql.find("UPDATE triage_requests").unwrap();
        assert!(b.sql.rfind("INSERT INTO").unwrap() < update);

        let again = [Write::Accept(new("a")), Write::Accept(new("a"))];
        let refs: Vec<&Write> = again.iter().collect();
        assert!(build(&refs, 1).is_none());
    }
}
