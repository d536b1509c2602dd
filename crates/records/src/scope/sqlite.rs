//! SQLite: the guarded SQL already reads the patient tables through scope CTEs bound to
//! `?1`. It runs on a pooled connection switched to `PRAGMA query_only` (nothing can be
//! written), under a progress handler that aborts the statement at the deadline: SQLite
//! calls it every few thousand virtual-machine instructions, so a cartesian join or any
//! long scan stops within milliseconds of the timeout (`SQLITE_INTERRUPT`). A patient not
//! in `person` is refused ([`RecordsError::UnknownPatient`]) before the guarded SQL runs.

use std::time::{Duration, Instant};

use serde_json::Value as Json;
use sqlx::sqlite::SqliteRow;
use sqlx::{Column, Executor, Row, SqlitePool, Statement, TypeInfo, ValueRef};

use super::Table;
use crate::error::RecordsError;

/// Virtual-machine instructions between two deadline checks (about 0.1 ms of work).
const PROGRESS_OPS: i32 = 1_000;

/// Whether the patient is in `person` (parameterised; checked on the same `query_only`
/// connection, under the same deadline, before the guarded SQL runs).
const KNOWN_PATIENT: &str = "SELECT EXISTS (SELECT 1 FROM main.person WHERE person_id = ?1)";

/// SQLite's primary result code for an interrupted statement.
const SQLITE_INTERRUPT: &str = "9";

pub(super) async fn run(
    pool: &SqlitePool,
    patient: i64,
    sql: &str,
    ms: u64,
) -> Result<Table, RecordsError> {
    let mut conn = pool.acquire().await?;
    (&mut *conn).execute("PRAGMA query_only = ON").await?;
    let deadline = Instant::now() + Duration::from_millis(ms);
    let outcome = async {
        conn.lock_handle()
            .await?
            .set_progress_handler(PROGRESS_OPS, move || Instant::now() < deadline);
        let known: bool = sqlx::query_scalar(KNOWN_PATIENT)
            .bind(patient)
            .fetch_one(&mut *conn)
            .await?;
        if !known {
            return Ok(None);
        }
        let columns: Vec<String> = (&mut *conn)
            .prepare(sql)
            .await?
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let rows = sqlx::query(sql).bind(patient).fetch_all(&mut *conn).await?;
        Ok::<_, sqlx::Error>(Some((columns, rows)))
    }
    .await;
    let reset = async {
        conn.lock_handle().await?.remove_progress_handler();
        (&mut *conn).execute("PRAGMA query_only = OFF").await?;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    if reset.is_err() {
        // Never hand a connection still read-only or still timed back to the pool.
        conn.close_on_drop();
    }
    let (columns, rows) = outcome
        .map_err(|e| classify(e, ms))?
        .ok_or(RecordsError::UnknownPatient(patient))?;
    let rows = rows.iter().map(decode).collect::<Result<_, _>>()?;
    Ok((columns, rows))
}

fn classify(e: sqlx::Error, ms: u64) -> RecordsError {
    match &e {
        sqlx::Error::Database(d)
            if d.code().as_deref() == Some(SQLITE_INTERRUPT) || d.message() == "interrupted" =>
        {
            RecordsError::Timeout { ms }
        }
        _ => RecordsError::Database(e),
    }
}

/// One row as JSON, by each value's storage class (SQLite types values, not columns).
fn decode(row: &SqliteRow) -> Result<Vec<Json>, RecordsError> {
    let mut out = Vec::with_capacity(row.len());
    for i in 0..row.len() {
        let raw = row.try_get_raw(i)?;
        if raw.is_null() {
            out.push(Json::Null);
            continue;
        }
        let kind = raw.type_info().name().to_string();
        out.push(match kind.as_str() {
            "INTEGER" => Json::from(row.try_get_unchecked::<i64, _>(i)?),
            "REAL" => serde_json::Number::from_f64(row.try_get_unchecked::<f64, _>(i)?)
                .map_or(Json::Null, Json::Number),
            "BLOB" => Json::String(format!(
                "<{} bytes>",
                row.try_get_unchecked::<Vec<u8>, _>(i)?.len()
            )),
            _ => Json::String(row.try_get_unchecked::<String, _>(i)?),
        });
    }
    Ok(out)
}
