//! The ledger: one row per priced workflow step (`ledger_entries`), on SQLite or PostgreSQL,
//! written one request per transaction, and read back as spend, summaries and entries.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use careflow_core::TokenUsage;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::error::LedgerError;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Hides the password of a database URL before it is shown.
pub use careflow_core::redact_url as redact;

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One priced workflow step of one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub request_id: String,
    /// When the step ended, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The workflow (e.g. "triage").
    pub workflow: String,
    /// The step (e.g. "plan", "retrieve").
    pub step: String,
    /// The price tier the step ran on (a key of the prices file, e.g. "local_small").
    pub tier: String,
    pub model: String,
    /// The adapter active during the step, if any.
    pub adapter: Option<String>,
    /// Token counters of the step (`submitted`, `computed`, `reused`, `generated`, `micros`).
    #[serde(flatten)]
    pub usage: TokenUsage,
    /// What the step cost on its tier, in dollars.
    pub cost_usd: f64,
    /// The step's decision, if it made one (e.g. a disposition or "escalate").
    pub decision: Option<String>,
}

/// Averages per request (over every request in a [`LedgerSummary`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PerRequest {
    pub submitted: f64,
    pub computed: f64,
    pub reused: f64,
    pub generated: f64,
    pub micros: f64,
    pub cost_usd: f64,
}

impl PerRequest {
    fn of(usage: &TokenUsage, cost_usd: f64, requests: u64) -> PerRequest {
        let n = requests.max(1) as f64;
        PerRequest {
            submitted: usage.submitted as f64 / n,
            computed: usage.computed as f64 / n,
            reused: usage.reused as f64 / n,
            generated: usage.generated as f64 / n,
            micros: usage.micros as f64 / n,
            cost_usd: cost_usd / n,
        }
    }

    /// A day at `requests_per_day` requests like these, as token counters (rounded).
    pub fn daily(&self, requests_per_day: u64) -> TokenUsage {
        let r = requests_per_day as f64;
        let t = |v: f64| {
            let x = (v * r).round();
            if x >= u64::MAX as f64 {
                u64::MAX
            } else if x > 0.0 {
                x as u64
            } else {
                0
            }
        };
        TokenUsage {
            submitted: t(self.submitted),
            computed: t(self.computed),
            reused: t(self.reused),
            generated: t(self.generated),
            micros: t(self.micros),
        }
    }
}

/// Tokens and cost of one tier or one step within a [`LedgerSummary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    /// The tier or step name.
    pub name: String,
    /// Requests with at least one entry of this tier or step.
    pub requests: u64,
    pub entries: u64,
    pub usage: TokenUsage,
    pub cost_usd: f64,
    /// This tier's or step's share of an average request (divided by all the requests of
    /// the summary, so the shares add up to the summary's per-request figures).
    pub per_request: PerRequest,
}

/// What the ledger holds from `since_ms` on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerSummary {
    pub since_ms: i64,
    /// Distinct request ids.
    pub requests: u64,
    pub entries: u64,
    pub first_at_ms: Option<i64>,
    pub last_at_ms: Option<i64>,
    /// Distinct UTC calendar days with at least one entry.
    pub days_covered: u64,
    pub usage: TokenUsage,
    pub cost_usd: f64,
    /// `None` when there are no requests.
    pub per_request: Option<PerRequest>,
    /// Per tier, in the order tiers first appear.
    pub by_tier: Vec<Breakdown>,
    /// Per step, in the order steps first appear.
    pub by_step: Vec<Breakdown>,
}

impl LedgerSummary {
    /// Average dollars per request, `None` for an empty ledger.
    pub fn cost_per_request_usd(&self) -> Option<f64> {
        self.per_request.map(|p| p.cost_usd)
    }

    /// Requests per covered day, `None` for an empty ledger.
    pub fn requests_per_day(&self) -> Option<f64> {
        (self.days_covered > 0).then(|| self.requests as f64 / self.days_covered as f64)
    }
}

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` once per backend with `$p` bound to the concrete pool, so the same query
/// code compiles against both drivers (both accept `$1` placeholders).
macro_rules! on_backend {
    ($value:expr, $p:ident => $body:expr) => {
        match $value {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

const SQLITE_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS ledger_entries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL CHECK (length(request_id) > 0),
        at_ms BIGINT NOT NULL CHECK (at_ms >= 0),
        workflow TEXT NOT NULL,
        step TEXT NOT NULL CHECK (length(step) > 0),
        tier TEXT NOT NULL CHECK (length(tier) > 0),
        model TEXT NOT NULL,
        adapter TEXT NULL,
        submitted BIGINT NOT NULL CHECK (submitted >= 0),
        computed BIGINT NOT NULL CHECK (computed >= 0),
        reused BIGINT NOT NULL CHECK (reused >= 0),
        generated BIGINT NOT NULL CHECK (generated >= 0),
        micros BIGINT NOT NULL CHECK (micros >= 0),
        cost_usd REAL NOT NULL CHECK (cost_usd >= 0),
        decision TEXT NULL
    )",
    "CREATE INDEX IF NOT EXISTS ledger_entries_at_ms ON ledger_entries (at_ms)",
    "CREATE INDEX IF NOT EXISTS ledger_entries_request_id ON ledger_entries (request_id)",
];

const POSTGRES_SCHEMA: &[&str] = &[
    // Two processes creating the table at once would collide in the catalog: serialise.
    "SELECT pg_advisory_xact_lock(4242031100)",
    "CREATE TABLE IF NOT EXISTS ledger_entries (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        request_id TEXT NOT NULL CHECK (length(request_id) > 0),
        at_ms BIGINT NOT NULL CHECK (at_ms >= 0),
        workflow TEXT NOT NULL,
        step TEXT NOT NULL CHECK (length(step) > 0),
        tier TEXT NOT NULL CHECK (length(tier) > 0),
        model TEXT NOT NULL,
        adapter TEXT NULL,
        submitted BIGINT NOT NULL CHECK (submitted >= 0),
        computed BIGINT NOT NULL CHECK (computed >= 0),
        reused BIGINT NOT NULL CHECK (reused >= 0),
        generated BIGINT NOT NULL CHECK (generated >= 0),
        micros BIGINT NOT NULL CHECK (micros >= 0),
        cost_usd DOUBLE PRECISION NOT NULL CHECK (cost_usd >= 0 AND cost_usd <> 'NaN'),
        decision TEXT NULL
    )",
    "CREATE INDEX IF NOT EXISTS ledger_entries_at_ms ON ledger_entries (at_ms)",
    "CREATE INDEX IF NOT EXISTS ledger_entries_request_id ON ledger_entries (request_id)",
];

const INSERT_SQL: &str = "INSERT INTO ledger_entries (request_id, at_ms, workflow, step, tier, \
     model, adapter, submitted, computed, reused, generated, micros, cost_usd, decision) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

const ENTRIES_SQL: &str = "SELECT request_id, at_ms, workflow, step, tier, model, adapter, \
     submitted, computed, reused, generated, micros, cost_usd, decision \
     FROM ledger_entries WHERE request_id = $1 ORDER BY id";

const SPENT_SQL: &str = "SELECT CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) \
     FROM ledger_entries WHERE at_ms >= $1";

const SPENT_TIER_SQL: &str = "SELECT CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) \
     FROM ledger_entries WHERE at_ms >= $1 AND tier = $2";

const TOTALS_SQL: &str = "SELECT COUNT(DISTINCT request_id), COUNT(*), MIN(at_ms), MAX(at_ms), \
     COUNT(DISTINCT at_ms / 86400000), \
     CAST(COALESCE(SUM(submitted), 0) AS BIGINT), CAST(COALESCE(SUM(computed), 0) AS BIGINT), \
     CAST(COALESCE(SUM(reused), 0) AS BIGINT), CAST(COALESCE(SUM(generated), 0) AS BIGINT), \
     CAST(COALESCE(SUM(micros), 0) AS BIGINT), \
     CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) \
     FROM ledger_entries WHERE at_ms >= $1";

/// Per-group sums; `{col}` is `tier` or `step` (never user input).
fn group_sql(col: &str) -> String {
    format!(
        "SELECT {col}, COUNT(DISTINCT request_id), COUNT(*), \
         CAST(SUM(submitted) AS BIGINT), CAST(SUM(computed) AS BIGINT), \
         CAST(SUM(reused) AS BIGINT), CAST(SUM(generated) AS BIGINT), \
         CAST(SUM(micros) AS BIGINT), CAST(SUM(cost_usd) AS DOUBLE PRECISION) \
         FROM ledger_entries WHERE at_ms >= $1 GROUP BY {col} ORDER BY MIN(id)"
    )
}

type EntryRow = (
    String,
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
    i64,
    i64,
    i64,
    f64,
    Option<String>,
);
type TotalsRow = (
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    f64,
);
type GroupRow = (String, i64, i64, i64, i64, i64, i64, i64, f64);

/// An entry's numbers as the database stores them.
struct Stored {
    submitted: i64,
    computed: i64,
    reused: i64,
    generated: i64,
    micros: i64,
}

impl Stored {
    fn of(index: usize, e: &LedgerEntry) -> Result<Stored, LedgerError> {
        let bad = |field: &'static str, reason: String| LedgerError::BadEntry {
            request_id: e.request_id.clone(),
            index,
            field,
            reason,
        };
        let int = |field: &'static str, v: u64| {
            i64::try_from(v).map_err(|_| bad(field, format!("{v} is beyond the range of BIGINT")))
        };
        if !e.cost_usd.is_finite() || e.cost_usd < 0.0 {
            return Err(bad(
                "cost_usd",
                format!("{} is not a finite non-negative number", e.cost_usd),
            ));
        }
        Ok(Stored {
            submitted: int("submitted", e.usage.submitted)?,
            computed: int("computed", e.usage.computed)?,
            reused: int("reused", e.usage.reused)?,
            generated: int("generated", e.usage.generated)?,
            micros: int("micros", e.usage.micros)?,
        })
    }
}

fn unsigned(column: &'static str, v: i64) -> Result<u64, LedgerError> {
    u64::try_from(v).map_err(|_| LedgerError::BadRow {
        column,
        reason: format!("{v} is negative"),
    })
}

fn usage_of(
    submitted: i64,
    computed: i64,
    reused: i64,
    generated: i64,
    micros: i64,
) -> Result<TokenUsage, LedgerError> {
    Ok(TokenUsage {
        submitted: unsigned("submitted", submitted)?,
        computed: unsigned("computed", computed)?,
        reused: unsigned("reused", reused)?,
        generated: unsigned("generated", generated)?,
        micros: unsigned("micros", micros)?,
    })
}

/// A handle on the ledger (cheap to clone: it wraps a connection pool).
#[derive(Debug, Clone)]
pub struct Ledger {
    pool: Pool,
}

impl Ledger {
    /// Connects and creates `ledger_entries` and its indexes if missing. `url` is
    /// `sqlite://PATH` (the file and its parent directories are created if missing),
    /// `sqlite::memory:` (one private in-memory database) or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Ledger, LedgerError> {
        let shown = redact(url);
        let bad = |reason: &str| LedgerError::BadUrl {
            url: shown.clone(),
            reason: reason.to_string(),
        };
        let context = format!("connecting to {shown}");
        let pool = if url == "sqlite::memory:" || url == "sqlite://:memory:" {
            // Each connection would get its own empty database: keep exactly one, forever.
            let opts = SqliteConnectOptions::from_str("sqlite::memory:")
                .map_err(|e| bad(&e.to_string()))?;
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_with(opts)
                    .await
                    .map_err(LedgerError::db(context))?,
            )
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let path = match rest.split_once('?') {
                None => rest,
                Some((p, "mode=rwc" | "mode=rw")) => p,
                Some((_, q)) => {
                    return Err(bad(&format!(
                        "unsupported option `{q}` (the ledger writes: only mode=rw|rwc)"
                    )))
                }
            };
            if path.is_empty() {
                return Err(bad("no file path after `sqlite://`"));
            }
            let path = Path::new(path);
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|cause| LedgerError::CreateDir {
                    path: parent.to_path_buf(),
                    cause,
                })?;
            }
            let opts = SqliteConnectOptions::new()
                .filename(path)
                .busy_timeout(Duration::from_secs(30))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(opts)
                    .await
                    .map_err(LedgerError::db(context))?,
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url).map_err(|e| bad(&e.to_string()))?;
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(5)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(opts)
                    .await
                    .map_err(LedgerError::db(context))?,
            )
        } else {
            return Err(bad(
                "expected sqlite://PATH, sqlite::memory: or postgres://…",
            ));
        };
        let ledger = Ledger { pool };
        ledger.create_schema().await?;
        Ok(ledger)
    }

    async fn create_schema(&self) -> Result<(), LedgerError> {
        let statements = match &self.pool {
            Pool::Sqlite(_) => SQLITE_SCHEMA,
            Pool::Postgres(_) => POSTGRES_SCHEMA,
        };
        let ctx = "creating table ledger_entries";
        on_backend!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(LedgerError::db(ctx))?;
            for sql in statements {
                sqlx::query(sql)
                    .execute(&mut *tx)
                    .await
                    .map_err(LedgerError::db(ctx))?;
            }
            tx.commit().await.map_err(LedgerError::db(ctx))?;
        });
        Ok(())
    }

    /// Writes the entries of one request in one transaction: all of them or, on any
    /// failure, none ([`LedgerError::RolledBack`]). Every entry must carry the same
    /// `request_id`; an empty slice writes nothing.
    pub async fn record(&self, entries: &[LedgerEntry]) -> Result<(), LedgerError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if let Some((index, other)) = entries
            .iter()
            .enumerate()
            .find(|(_, e)| e.request_id != first.request_id)
        {
            return Err(LedgerError::MixedRequests {
                first: first.request_id.clone(),
                index,
                other: other.request_id.clone(),
            });
        }
        let request_id = first.request_id.clone();
        let postgres = matches!(self.pool, Pool::Postgres(_));
        on_backend!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(LedgerError::db(format!(
                "recording request `{request_id}`: beginning a transaction"
            )))?;
            let mut failure = None;
            for (index, e) in entries.iter().enumerate() {
                let s = match Stored::of(index, e) {
                    Ok(s) => s,
                    Err(err) => {
                        failure = Some(err);
                        break;
                    }
                };
                let done = sqlx::query(INSERT_SQL)
                    .bind(&e.request_id)
                    .bind(e.at_ms)
                    .bind(&e.workflow)
                    .bind(&e.step)
                    .bind(&e.tier)
                    .bind(&e.model)
                    .bind(&e.adapter)
                    .bind(s.submitted)
                    .bind(s.computed)
                    .bind(s.reused)
                    .bind(s.generated)
                    .bind(s.micros)
                    .bind(e.cost_usd)
                    .bind(&e.decision)
                    .execute(&mut *tx)
                    .await;
                if let Err(cause) = done {
                    failure = Some(LedgerError::Database {
                        context: format!("inserting entry {index} (step `{}`)", e.step),
                        cause,
                    });
                    break;
                }
            }
            if let Some(err) = failure {
                // A failed rollback leaves nothing either: the database ends the
                // transaction of a connection that is gone.
                let _ = tx.rollback().await;
                return Err(LedgerError::RolledBack {
                    request_id,
                    cause: Box::new(err),
                });
            }
            if let Err(cause) = tx.commit().await {
                // PostgreSQL may have committed when its answer was lost; SQLite and an
                // answered error mean nothing was committed.
                return Err(if postgres && !matches!(cause, sqlx::Error::Database(_)) {
                    LedgerError::CommitUncertain { request_id, cause }
                } else {
                    LedgerError::RolledBack {
                        request_id,
                        cause: Box::new(LedgerError::Database {
                            context: "committing".into(),
                            cause,
                        }),
                    }
                });
            }
        });
        Ok(())
    }

    /// Dollars recorded from `since_ms` on, on one tier or (with `None`) on all of them;
    /// 0 when there is nothing. For a daily budget, pass the start of the day.
    pub async fn spent_since(&self, tier: Option<&str>, since_ms: i64) -> Result<f64, LedgerError> {
        let ctx = "summing cost_usd";
        let v: f64 = on_backend!(&self.pool, p => match tier {
            None => sqlx::query_scalar(SPENT_SQL)
                .bind(since_ms)
                .fetch_one(p)
                .await
                .map_err(LedgerError::db(ctx))?,
            Some(t) => sqlx::query_scalar(SPENT_TIER_SQL)
                .bind(since_ms)
                .bind(t)
                .fetch_one(p)
                .await
                .map_err(LedgerError::db(ctx))?,
        });
        Ok(v)
    }

    /// Requests, tokens and cost from `since_ms` on: totals, per request, per tier and per
    /// step. An empty ledger gives zeros and `per_request: None`.
    pub async fn summary(&self, since_ms: i64) -> Result<LedgerSummary, LedgerError> {
        let ctx = "summarising ledger_entries";
        let totals: TotalsRow = on_backend!(&self.pool, p => {
            sqlx::query_as(TOTALS_SQL)
                .bind(since_ms)
                .fetch_one(p)
                .await
                .map_err(LedgerError::db(ctx))?
        });
        let (requests, entries, first_at_ms, last_at_ms, days, su, co, re, ge, mi, cost_usd) =
            totals;
        let requests = unsigned("request_id", requests)?;
        let usage = usage_of(su, co, re, ge, mi)?;
        let mut groups = Vec::with_capacity(2);
        for col in ["tier", "step"] {
            let sql = group_sql(col);
            let rows: Vec<GroupRow> = on_backend!(&self.pool, p => {
                sqlx::query_as(&sql)
                    .bind(since_ms)
                    .fetch_all(p)
                    .await
                    .map_err(LedgerError::db(format!("{ctx} per {col}")))?
            });
            let mut out = Vec::with_capacity(rows.len());
            for (name, reqs, n, su, co, re, ge, mi, cost) in rows {
                let usage = usage_of(su, co, re, ge, mi)?;
                out.push(Breakdown {
                    name,
                    requests: unsigned("request_id", reqs)?,
                    entries: unsigned("id", n)?,
                    per_request: PerRequest::of(&usage, cost, requests),
                    usage,
                    cost_usd: cost,
                });
            }
            groups.push(out);
        }
        let by_step = groups.pop().unwrap_or_default();
        let by_tier = groups.pop().unwrap_or_default();
        Ok(LedgerSummary {
            since_ms,
            requests,
            entries: unsigned("id", entries)?,
            first_at_ms,
            last_at_ms,
            days_covered: unsigned("at_ms", days)?,
            per_request: (requests > 0).then(|| PerRequest::of(&usage, cost_usd, requests)),
            usage,
            cost_usd,
            by_tier,
            by_step,
        })
    }

    /// The entries of one request, in the order they were recorded.
    pub async fn entries(&self, request_id: &str) -> Result<Vec<LedgerEntry>, LedgerError> {
        let rows: Vec<EntryRow> = on_backend!(&self.pool, p => {
            sqlx::query_as(ENTRIES_SQL)
                .bind(request_id)
                .fetch_all(p)
                .await
                .map_err(LedgerError::db(format!("reading the entries of request `{request_id}`")))?
        });
        rows.into_iter()
            .map(
                |(
                    request_id,
                    at_ms,
                    workflow,
                    step,
                    tier,
                    model,
                    adapter,
                    su,
                    co,
                    re,
                    ge,
                    mi,
                    cost_usd,
                    decision,
                )| {
                    Ok(LedgerEntry {
                        request_id,
                        at_ms,
                        workflow,
                        step,
                        tier,
                        model,
                        adapter,
                        usage: usage_of(su, co, re, ge, mi)?,
                        cost_usd,
                        decision,
                    })
                },
            )
            .collect()
    }

    /// Closes the connections (waits for them to be returned).
    pub async fn close(&self) {
        on_backend!(&self.pool, p => p.close().await);
    }
}
