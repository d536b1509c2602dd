//! [`Records::query_scoped`]: guarded SQL run for one patient, with the scope enforced by
//! the database (`sqlite`: scope CTEs bound to the patient on a `query_only` connection;
//! `postgres`: row-level security as `careflow_reader` in a read-only transaction) and a
//! statement timeout the database itself enforces.

mod postgres;
mod sqlite;

use std::time::Duration;

use careflow_core::PatientId;

use crate::db::{Pool, Records};
use crate::error::RecordsError;
use crate::guard::{guard_sql, Backend, GuardPolicy};

/// The rows a guarded statement returned.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QueryResult {
    pub columns: Vec<String>,
    /// At most `GuardPolicy::max_limit` rows; integers, reals, text (dates as
    /// `YYYY-MM-DD`), booleans or null.
    pub rows: Vec<Vec<serde_json::Value>>,
    /// The rewritten SQL actually executed (patient as parameter 1).
    pub sql_run: String,
}

/// Column names and rows, as a backend runner returns them.
pub(crate) type Table = (Vec<String>, Vec<Vec<serde_json::Value>>);

/// How long past the statement timeout the caller waits before giving up on the database
/// (which should have stopped the statement itself well before).
const BACKSTOP_SLACK: Duration = Duration::from_secs(3);

impl Records {
    /// The backend of this database (which SQL dialect and which scope mechanism).
    pub fn backend(&self) -> Backend {
        match &self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Runs model-written (or operator) SQL for ONE patient: [`guard_sql`] first (one
    /// SELECT, allow-listed tables, columns and functions, LIMIT at most
    /// `policy.max_limit`), then on the database with the patient scope and
    /// `policy.statement_timeout_ms` enforced there. A patient id that is not in `person`
    /// is refused with [`RecordsError::UnknownPatient`] (checked with a parameterised query
    /// inside the same scoped session, before the guarded SQL runs); SQL the guard rejects
    /// is rejected first, whoever the patient.
    pub async fn query_scoped(
        &self,
        patient: PatientId,
        sql: &str,
        policy: &GuardPolicy,
    ) -> Result<QueryResult, RecordsError> {
        let sql_run = guard_sql(sql, self.backend(), policy)?;
        let ms = policy.statement_timeout_ms;
        let pool = self.pool.clone();
        let text = sql_run.clone();
        // A task of its own: if the caller stops waiting, the connection is still reset
        // (progress handler removed, query_only off; or the transaction rolled back).
        let task = tokio::spawn(async move {
            match pool {
                Pool::Sqlite(p) => sqlite::run(&p, patient.0, &text, ms).await,
                Pool::Postgres(p) => postgres::run(&p, patient.0, &text, ms).await,
            }
        });
        let backstop = Duration::from_millis(ms).saturating_add(BACKSTOP_SLACK);
        let (columns, mut rows) = match tokio::time::timeout(backstop, task).await {
            Err(_) => return Err(RecordsError::Timeout { ms }),
            Ok(Err(e)) => return Err(RecordsError::Task(e.to_string())),
            Ok(Ok(result)) => result?,
        };
        rows.truncate(usize::try_from(policy.max_limit).unwrap_or(usize::MAX));
        Ok(QueryResult {
            columns,
            rows,
            sql_run,
        })
    }
}
