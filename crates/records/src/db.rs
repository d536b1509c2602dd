//! Connecting to SQLite or PostgreSQL, creating the tables, and the batched writes and
//! small reads that the other modules share.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, PgPool, Postgres, Sqlite, SqlitePool, Transaction};

use careflow_core::PatientId;

use crate::error::RecordsError;
use crate::table::{
    insert_sql, rows_per_statement, OnConflict, Placeholder, Row, TableSpec, Value, TABLES,
};

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` once per backend with `$p` bound to the concrete pool (or transaction), so
/// the same query code compiles against both drivers.
macro_rules! on_backend {
    ($value:expr, $enum:ident, $p:ident => $body:expr) => {
        match $value {
            $enum::Sqlite($p) => $body,
            $enum::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_backend;

/// A handle on the records database (cheap to clone: it wraps a connection pool).
#[derive(Debug, Clone)]
pub struct Records {
    pub(crate) pool: Pool,
}

impl Records {
    /// `sqlite://PATH` (file and parent directories created if missing; `?mode=ro` opens
    /// read-only), `sqlite::memory:` (one private in-memory database), or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Records, RecordsError> {
        let bad = |reason: &str| RecordsError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if url == "sqlite::memory:" || url == "sqlite://:memory:" {
            // Each connection would get its own empty database: keep exactly one, forever.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(SqliteConnectOptions::from_str("sqlite::memory:")?)
                .await?;
            return Ok(Records {
                pool: Pool::Sqlite(pool),
            });
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let (path, query) = match rest.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(bad("no file path after `sqlite://`"));
            }
            let read_only = match query {
                None | Some("mode=rwc") | Some("mode=rw") => false,
                Some("mode=ro") => true,
                Some(q) => {
                    return Err(bad(&format!(
                        "unsupported option `{q}` (only mode=ro|rw|rwc)"
                    )))
                }
            };
            let path = Path::new(path);
            let mut opts = SqliteConnectOptions::new()
                .filename(path)
                .busy_timeout(Duration::from_secs(30));
            if read_only {
                opts = opts.read_only(true);
            } else {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|source| RecordsError::Io {
                        path: parent.to_path_buf(),
                        source,
                    })?;
                }
                opts = opts
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal);
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await?;
            return Ok(Records {
                pool: Pool::Sqlite(pool),
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url).map_err(|e| bad(&e.to_string()))?;
            let pool = PgPoolOptions::new()
                .max_connections(5)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(opts)
                .await?;
            return Ok(Records {
                pool: Pool::Postgres(pool),
            });
        }
        Err(bad(
            "expected sqlite://PATH, sqlite::memory: or postgres://…",
        ))
    }

    /// Creates the tables and indexes (idempotent: applied migrations are recorded in
    /// `_sqlx_migrations` and skipped).
    pub async fn init(&self) -> Result<(), RecordsError> {
        match &self.pool {
            Pool::Sqlite(p) => SQLITE_MIGRATOR.run(p).await?,
            Pool::Postgres(p) => POSTGRES_MIGRATOR.run(p).await?,
        }
        Ok(())
    }

    /// The first `limit` person ids, ascending (a negative limit returns none).
    pub async fn patients(&self, limit: i64) -> Result<Vec<PatientId>, RecordsError> {
        let sql = "SELECT person_id FROM person ORDER BY person_id LIMIT $1";
        let ids: Vec<i64> = on_backend!(&self.pool, Pool, p => {
            sqlx::query_scalar(sql).bind(limit.max(0)).fetch_all(p).await?
        });
        Ok(ids.into_iter().map(PatientId).collect())
    }

    /// Rows per table, in load order: concept, person, visit_occurrence,
    /// condition_occurrence, drug_exposure, procedure_occurrence, measurement, observation.
    pub async fn counts(&self) -> Result<Vec<(String, i64)>, RecordsError> {
        let mut out = Vec::with_capacity(TABLES.len());
        for t in TABLES {
            let sql = format!("SELECT COUNT(*) FROM {}", t.name);
            let n: i64 = on_backend!(&self.pool, Pool, p => {
                sqlx::query_scalar(&sql).fetch_one(p).await?
            });
            out.push((t.name.to_string(), n));
        }
        Ok(out)
    }

    /// The largest key of a table, or 0 when it is empty.
    pub(crate) async fn max_id(tx: &mut Tx<'_>, spec: &TableSpec) -> Result<i64, RecordsError> {
        let sql = format!("SELECT MAX({}) FROM {}", spec.key(), spec.name);
        let v: Option<i64> = on_backend!(tx, Tx, t => {
            sqlx::query_scalar(&sql).fetch_one(&mut **t).await?
        });
        Ok(v.unwrap_or(0))
    }

    /// A connection of its own for one write transaction ([`Conn::begin`]).
    pub(crate) async fn acquire(&self) -> Result<Conn, RecordsError> {
        Ok(match &self.pool {
            Pool::Sqlite(p) => Conn::Sqlite(p.acquire().await?),
            Pool::Postgres(p) => Conn::Postgres(p.acquire().await?),
        })
    }
}

/// A pooled connection held for one write transaction. After a failed write, call
/// [`Conn::discard`]: the connection is then closed (which also ends any transaction the
/// database still holds open) instead of going back to the pool in an unknown state
/// (e.g. SQLite may already have rolled back on an I/O error, which sqlx does not see).
pub(crate) enum Conn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl Conn {
    pub(crate) async fn begin(&mut self) -> Result<Tx<'_>, RecordsError> {
        Ok(match self {
            Conn::Sqlite(c) => Tx::Sqlite(Connection::begin(&mut **c).await?),
            Conn::Postgres(c) => Tx::Postgres(Connection::begin(&mut **c).await?),
        })
    }

    /// Closes the connection when it is dropped instead of returning it to the pool.
    pub(crate) fn discard(&mut self) {
        on_backend!(self, Conn, c => c.close_on_drop());
    }
}

/// An open write transaction; dropping it without [`Tx::commit`] rolls everything back.
pub(crate) enum Tx<'c> {
    Sqlite(Transaction<'c, Sqlite>),
    Postgres(Transaction<'c, Postgres>),
}

/// A failed COMMIT: the driver's error, and whether the transaction may nevertheless have
/// been committed.
pub(crate) struct CommitError {
    pub uncertain: bool,
    pub source: sqlx::Error,
}

impl CommitError {
    /// The crate error for a failed commit of `what`.
    pub fn into_records_error(self, what: String) -> RecordsError {
        let source = Box::new(RecordsError::Database(self.source));
        if self.uncertain {
            RecordsError::CommitUncertain { what, source }
        } else {
            RecordsError::RolledBack { what, source }
        }
    }
}

impl Tx<'_> {
    /// Commits. On failure, whether the transaction may still have been committed: never on
    /// SQLite (it rolls back, or the transaction stays open until the connection is
    /// discarded); on PostgreSQL only when the server's answer was lost (a connection
    /// error), not when it answered with an error.
    pub async fn commit(self) -> Result<(), CommitError> {
        let postgres = matches!(self, Tx::Postgres(_));
        let result: Result<(), sqlx::Error> = on_backend!(self, Tx, t => t.commit().await);
        result.map_err(|e| CommitError {
            uncertain: postgres && !matches!(e, sqlx::Error::Database(_)),
            source: e,
        })
    }

    /// Rolls back; errors are ignored (a dead connection has nothing to roll back: the
    /// database ends the transaction of a connection that is gone).
    pub async fn rollback(self) {
        let _ = on_backend!(self, Tx, t => t.rollback().await);
    }

    /// Inserts rows (each in the column order of `spec`) in multi-row statements.
    pub async fn insert(
        &mut self,
        spec: &TableSpec,
        rows: &[Row],
        on_conflict: OnConflict,
    ) -> Result<(), RecordsError> {
        let placeholder = match self {
            Tx::Sqlite(_) => Placeholder::Anonymous,
            Tx::Postgres(_) => Placeholder::Numbered,
        };
        for chunk in rows.chunks(rows_per_statement(spec)) {
            let sql = insert_sql(spec, chunk.len(), on_conflict, placeholder);
            on_backend!(self, Tx, t => {
                let mut q = sqlx::query(&sql);
                for v in chunk.iter().flatten() {
                    q = match v {
                        Value::Int(x) => q.bind(*x),
                        Value::Float(x) => q.bind(*x),
                        Value::Text(x) => q.bind(x.clone()),
                        Value::Date(x) => q.bind(*x),
                    };
                }
                q.execute(&mut **t).await?;
            });
        }
        Ok(())
    }
}
