//! The gateway's tables, on SQLite or PostgreSQL (the same URLs as the records database and
//! the ledger), created at start if missing:
//!
//! - `api_keys`: id, name, role, salt and HMAC-SHA256 of the secret, created, revoked;
//! - `triage_requests`: one row per accepted (or refused-for-overload) request; queued as
//!   `accepted` before the work is queued (and committed before or with the ending) and
//!   finished exactly once as `done` (with the outcome JSON) or `error` (with its kind), so
//!   every accepted request ends with a stored outcome — the update only applies to a row
//!   still `accepted`, so the first ending wins;
//! - `audit_log`: append-only, one row per decision, written in the same transaction as the
//!   request's `done`; triggers refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL);
//! - `triage_messages`: the patient's text of the cases a clinician must review (sent to
//!   human review or decided by the frontier), written with the request's `done`, read only by
//!   the review console and `careflow review export` (logs and the audit log hold its hash;
//!   the text of cases settled alone is not kept);
//! - `triage_steps`: per decided request and step, latency and tokens (the dashboard);
//! - `reviews` (see `reviews.rs`) and `console_sessions` (see `console.rs`).
//!
//! The request path's writes (accept, reject, finish) go through one writer task that
//! commits whatever has queued up in one transaction (group commit; on SQLite one query, see
//! `batch_sqlite.rs`), in the order they were queued. A caller waits for its write's commit,
//! except the `accepted` row of a request without an idempotency key, whose commit is
//! waited for together with its ending's (see `flow.rs`).

use crate::GatewayError;
use careflow_ledger::{now_ms, redact};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use wal::{WalSync, WalUpkeep};

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` once per backend with `$p` bound to the concrete pool (both drivers accept
/// `$1` placeholders, so one SQL text serves both).
macro_rules! on_backend {
    ($value:expr, $p:ident => $body:expr) => {
        match $value {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

const SQLITE_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('portal', 'clinician', 'admin')),
        salt TEXT NOT NULL,
        secret_hmac TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        revoked_at_ms BIGINT NULL
    )",
    "CREATE TABLE IF NOT EXISTS triage_requests (
        request_id TEXT PRIMARY KEY,
        api_key_id TEXT NOT NULL,
        patient_id BIGINT NULL,
        idempotency_key TEXT NULL,
        message_sha256 TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('accepted', 'done', 'error', 'rejected')),
        created_at_ms BIGINT NOT NULL,
        finished_at_ms BIGINT NULL,
        outcome TEXT NULL,
        error_kind TEXT NULL,
        error TEXT NULL
    )",
    // Every page a commit changes is written to the WAL again (4 KB), and the checkpoint that
    // copies the WAL back is what stalls the request path: the idempotency index leaves out
    // the requests without a key, and `triage_requests_day` (shared below, new rows at its
    // end) serves what `(status, created_at_ms)` did. They replace earlier versions' indexes,
    // dropped here.
    "CREATE UNIQUE INDEX IF NOT EXISTS triage_requests_idempotency_key
        ON triage_requests (api_key_id, idempotency_key) WHERE idempotency_key IS NOT NULL",
    "DROP INDEX IF EXISTS triage_requests_idempotency",
    "DROP INDEX IF EXISTS triage_requests_open",
    "DROP INDEX IF EXISTS triage_requests_status",
    // Not AUTOINCREMENT (as in earlier versions), whose counter row is one more page per
    // commit: rows are never deleted (the triggers below), so no id is ever reused anyway.
    "CREATE TABLE IF NOT EXISTS audit_log (
        id INTEGER PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        request_id TEXT NOT NULL,
        api_key_id TEXT NOT NULL,
        role TEXT NOT NULL,
        patient_id BIGINT NULL,
        message_sha256 TEXT NOT NULL,
        workflow TEXT NOT NULL,
        disposition TEXT NOT NULL,
        decision TEXT NOT NULL,
        decided_by TEXT NOT NULL,
        escalated BOOLEAN NOT NULL,
        rules_fired TEXT NOT NULL,
        tiers TEXT NOT NULL,
        models TEXT NOT NULL,
        cost_usd REAL NOT NULL
    )",
    "CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    "CREATE TABLE IF NOT EXISTS reviews (
        request_id TEXT PRIMARY KEY,
        reviewer_key_id TEXT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('confirm', 'override')),
        disposition TEXT NOT NULL,
        previous TEXT NOT NULL,
        reason TEXT NULL,
        at_ms BIGINT NOT NULL
    )",
    "CREATE TRIGGER IF NOT EXISTS reviews_no_update BEFORE UPDATE ON reviews
        BEGIN SELECT RAISE(ABORT, 'reviews is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS reviews_no_delete BEFORE DELETE ON reviews
        BEGIN SELECT RAISE(ABORT, 'reviews is append-only'); END",
];

/// Tables whose SQL is the same on both databases, created after the others.
const SHARED_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS triage_messages (
        request_id TEXT PRIMARY KEY,
        message TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS triage_steps (
        request_id TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        step TEXT NOT NULL,
        tier TEXT NOT NULL,
        millis DOUBLE PRECISION NOT NULL,
        submitted BIGINT NOT NULL,
        computed BIGINT NOT NULL,
        reused BIGINT NOT NULL,
        generated BIGINT NOT NULL,
        cost_usd DOUBLE PRECISION NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS triage_steps_at ON triage_steps (at_ms)",
    // The dashboard's requests per day and status (covering), and the requests left open by
    // a stopped process (`abandon_stale`, at start).
    "CREATE INDEX IF NOT EXISTS triage_requests_day ON triage_requests (created_at_ms, status)",
    // The review queue's cases only (its query names the same kinds, see `QUEUED_CASES`):
    // an entry for every decision was one more page written per commit (1.2 of 7.4 pages
    // per commit at 5,000 requests/s, counted from the WAL's frame headers) for a query
    // that never reads the others. It replaces the full index of earlier versions, dropped
    // here.
    "DROP INDEX IF EXISTS audit_log_decided_by",
    "CREATE INDEX IF NOT EXISTS audit_log_review ON audit_log (decided_by, request_id) \
     WHERE decided_by IN ('human_review', 'frontier')",
    "CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at_ms)",
    "CREATE TABLE IF NOT EXISTS console_sessions (
        token_sha256 TEXT PRIMARY KEY,
        api_key_id TEXT NOT NULL,
        role TEXT NOT NULL,
        csrf_token TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL,
        ended_at_ms BIGINT NULL
    )",
];

const POSTGRES_SCHEMA: &[&str] = &[
    // Two processes creating the tables at once would collide in the catalog: serialise.
    "SELECT pg_advisory_xact_lock(4242031200)",
    "CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('portal', 'clinician', 'admin')),
        salt TEXT NOT NULL,
        secret_hmac TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        revoked_at_ms BIGINT NULL
    )",
    "CREATE TABLE IF NOT EXISTS triage_requests (
        request_id TEXT PRIMARY KEY,
        api_key_id TEXT NOT NULL,
        patient_id BIGINT NULL,
        idempotency_key TEXT NULL,
        message_sha256 TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('accepted', 'done', 'error', 'rejected')),
        created_at_ms BIGINT NOT NULL,
        finished_at_ms BIGINT NULL,
        outcome TEXT NULL,
        error_kind TEXT NULL,
        error TEXT NULL
    )",
    "CREATE UNIQUE INDEX IF NOT EXISTS triage_requests_idempotency
        ON triage_requests (api_key_id, idempotency_key)",
    "CREATE INDEX IF NOT EXISTS triage_requests_status ON triage_requests (status, created_at_ms)",
    "CREATE TABLE IF NOT EXISTS audit_log (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        request_id TEXT NOT NULL,
        api_key_id TEXT NOT NULL,
        role TEXT NOT NULL,
        patient_id BIGINT NULL,
        message_sha256 TEXT NOT NULL,
        workflow TEXT NOT NULL,
        disposition TEXT NOT NULL,
        decision TEXT NOT NULL,
        decided_by TEXT NOT NULL,
        escalated BOOLEAN NOT NULL,
        rules_fired TEXT NOT NULL,
        tiers TEXT NOT NULL,
        models TEXT NOT NULL,
        cost_usd DOUBLE PRECISION NOT NULL
    )",
    "CREATE OR REPLACE FUNCTION careflow_audit_log_refuse() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$",
    "CREATE OR REPLACE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION careflow_audit_log_refuse()",
    "CREATE OR REPLACE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION careflow_audit_log_refuse()",
    "CREATE TABLE IF NOT EXISTS reviews (
        request_id TEXT PRIMARY KEY,
        reviewer_key_id TEXT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('confirm', 'override')),
        disposition TEXT NOT NULL,
        previous TEXT NOT NULL,
        reason TEXT NULL,
        at_ms BIGINT NOT NULL
    )",
    "CREATE OR REPLACE TRIGGER reviews_no_change BEFORE UPDATE OR DELETE ON reviews
        FOR EACH ROW EXECUTE FUNCTION careflow_audit_log_refuse()",
    "CREATE OR REPLACE TRIGGER reviews_no_truncate BEFORE TRUNCATE ON reviews
        FOR EACH STATEMENT EXECUTE FUNCTION careflow_audit_log_refuse()",
];

/// A stored API key, without its secret material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// A stored API key with what verifies its secret.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub record: ApiKeyRecord,
    pub salt: String,
    pub secret_hmac: String,
}

/// A row of `triage_requests`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRow {
    pub request_id: String,
    pub api_key_id: String,
    pub patient_id: Option<i64>,
    pub idempotency_key: Option<String>,
    pub message_sha256: String,
    pub status: String,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// The outcome JSON (status `done`).
    pub outcome: Option<String>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
}

/// A request as it is accepted.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub request_id: String,
    pub api_key_id: String,
    pub patient_id: Option<i64>,
    pub idempotency_key: Option<String>,
    pub message_sha256: String,
}

/// A write of the request path, done by the writer task (see [`Store::connect`]).
enum Write {
    Accept(NewRequest),
    Reject(NewRequest, String),
    Finish(String, Ending),
}

type WriteReply = oneshot::Sender<Result<bool, GatewayError>>;

/// Writes of the request path queue here and are committed in groups.
const MAX_BATCH: usize = 256;

/// One decision, as the audit log records it (no patient text: the message's hash only).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub request_id: String,
    pub api_key_id: String,
    pub role: String,
    pub patient_id: Option<i64>,
    pub message_sha256: String,
    pub workflow: String,
    pub disposition: String,
    pub decision: String,
    pub decided_by: String,
    pub escalated: bool,
    /// JSON array of rule ids.
    pub rules_fired: String,
    /// JSON array of the tiers that ran, in order, each once.
    pub tiers: String,
    /// JSON array of `{step, tier, model, adapter}`.
    pub models: String,
    pub cost_usd: f64,
    /// Per-step figures for the dashboard (`triage_steps`), not part of the audit row.
    #[serde(skip)]
    pub steps: Vec<StepFigures>,
}

/// What one step of a decided request took: the dashboard's latency and token figures.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepFigures {
    pub step: String,
    pub tier: String,
    pub millis: f64,
    pub submitted: u64,
    pub computed: u64,
    pub reused: u64,
    pub generated: u64,
    pub cost_usd: f64,
}

/// How a request ended.
#[derive(Debug, Clone)]
pub enum Ending {
    Done {
        outcome_json: String,
        audit: Box<AuditRecord>,
        /// The patient's text, for a case a clinician must review (kept in
        /// `triage_messages`; never in the logs or the audit log, which hold its hash).
        message: Option<String>,
    },
    Error {
        kind: String,
        message: String,
    },
}

impl Ending {
    /// What the ending sets on its `triage_requests` row: status, outcome, error kind, error.
    fn columns(&self) -> (&'static str, Option<&str>, Option<&str>, Option<&str>) {
        match self {
            Ending::Done { outcome_json, .. } => ("done", Some(outcome_json), None, None),
            Ending::Error { kind, message } => ("error", None, Some(kind), Some(message)),
        }
    }
}

type RequestTuple = (
    String,
    String,
    Option<i64>,
    Option<String>,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

const REQUEST_COLUMNS: &str = "request_id, api_key_id, patient_id, idempotency_key, \
     message_sha256, status, created_at_ms, finished_at_ms, outcome, error_kind, error";

fn request_row(t: RequestTuple) -> RequestRow {
    RequestRow {
        request_id: t.0,
        api_key_id: t.1,
        patient_id: t.2,
        idempotency_key: t.3,
        message_sha256: t.4,
        status: t.5,
        created_at_ms: t.6,
        finished_at_ms: t.7,
        outcome: t.8,
        error_kind: t.9,
        error: t.10,
    }
}

type AuditTuple = (
    String,
    String,
    String,
    Option<i64>,
    String,
    String,
    String,
    String,
    String,
    bool,
    String,
    String,
    String,
    f64,
);

fn writer_gone() -> GatewayError {
    GatewayError::Service("the database writer has stopped".into())
}

/// A write queued to the writer task.
#[derive(Debug)]
pub struct QueuedWrite(oneshot::Receiver<Result<bool, GatewayError>>);

impl QueuedWrite {
    /// Waits for the write's commit: whether it changed a row.
    pub async fn applied(self) -> Result<bool, GatewayError> {
        self.0.await.map_err(|_| writer_gone())?
    }
}

/// A handle on the gateway's tables (cheap to clone: it wraps a connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    writer: mpsc::Sender<(Write, WriteReply)>,
    /// The WAL sync thread's count of completed syncs (SQLite files).
    wal_syncs: Option<Arc<AtomicU64>>,
}

/// How a [`Store`] keeps its database, beyond its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// On a SQLite file: past this many WAL frames (4 KB pages), the writer completes a
    /// checkpoint so the WAL starts over (see `WalUpkeep`). The WAL file stays about this big.
    pub wal_restart_frames: u64,
    /// On a SQLite file: how often a thread of its own writes the WAL's and the database
    /// file's new pages to disk between two checkpoints (see `store/wal.rs`); `None`: only
    /// the checkpoints do.
    pub wal_sync_every: Option<Duration>,
    /// On a SQLite file: whether the background checkpoint and sync threads run at idle
    /// priority (`SCHED_IDLE` on Linux), giving way to the request path's threads. They
    /// still progress under full load, slowly (the idle class keeps a small share).
    pub upkeep_idle_priority: bool,
    /// On a SQLite file (Linux): whether the sync thread also asks the kernel to read the
    /// WAL's pages ahead of the writer into the page cache (see `store/wal.rs`: a commit
    /// into an uncached page otherwise reads it from disk first, in the writer). Part of
    /// the sync thread: nothing without [`StoreOptions::wal_sync_every`].
    pub wal_readahead: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        // 65,536 frames of 4 KB: 256 MB of WAL.
        StoreOptions {
            wal_restart_frames: 65_536,
            wal_sync_every: Some(Duration::from_millis(20)),
            upkeep_idle_priority: true,
            wal_readahead: true,
        }
    }
}

impl Store {
    /// Connects and creates the tables if missing. `url`: `sqlite://PATH`, `sqlite::memory:`
    /// or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Store, GatewayError> {
        Store::connect_with(url, StoreOptions::default()).await
    }

    /// [`Store::connect`] with options.
    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Store, GatewayError> {
        let shown = redact(url);
        let bad = |reason: &str| GatewayError::BadUrl {
            url: shown.clone(),
            reason: reason.to_string(),
        };
        let context = format!("connecting to {shown}");
        // The database file and how to connect to it, for the WAL's upkeep (none in memory or
        // on PostgreSQL).
        let mut db_file = None;
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
                    .map_err(GatewayError::db(context))?,
            )
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let path = rest.split_once('?').map_or(rest, |(p, _)| p);
            if path.is_empty() {
                return Err(bad("no file path after `sqlite://`"));
            }
            let path = Path::new(path);
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|cause| GatewayError::Io {
                    context: format!("creating {}", parent.display()),
                    cause,
                })?;
            }
            let opts = SqliteConnectOptions::new()
                .filename(path)
                .busy_timeout(Duration::from_secs(30))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                // Checkpoints off the request path: SQLite's automatic checkpoint runs inside
                // the commit that crosses 1,000 WAL pages, a stall of milliseconds for every
                // request in that group; `store/wal.rs` does it in the background instead.
                .pragma("wal_autocheckpoint", "0");
            db_file = Some((path.to_path_buf(), opts.clone()));
            // SQLite has one writer, and the request path's writes all go through the writer
            // task, which keeps a connection of its own (see `write_loop`); two more serve
            // reads (WAL lets them overlap) and the rare key writes, for which SQLite's busy
            // handler, whose sleeps would dominate the request path's latency, is kept.
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(3)
                    .min_connections(1)
                    .connect_with(opts)
                    .await
                    .map_err(GatewayError::db(context))?,
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url).map_err(|e| bad(&e.to_string()))?;
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(opts)
                    .await
                    .map_err(GatewayError::db(context))?,
            )
        } else {
            return Err(bad(
                "expected sqlite://PATH, sqlite::memory: or postgres://…",
            ));
        };
        // Group commit: every request writes twice (accepted, then its ending), and one
        // commit per write made the WAL writes of SQLite the gateway's bottleneck. One
        // writer task takes what has queued up and commits it in one transaction.
        let (writer, rx) = mpsc::channel(4 * MAX_BATCH);
        let sqlite_writer = match &pool {
            Pool::Sqlite(p) => {
                let upkeep = Arc::new(WalUpkeep::default());
                // An in-memory database has one connection, which the readers need too, and
                // no WAL.
                if let Some((_, opts)) = &db_file {
                    tokio::spawn(wal::checkpoint_loop(
                        p.clone(),
                        opts.clone(),
                        Arc::downgrade(&upkeep),
                        options.upkeep_idle_priority,
                    ));
                }
                let keep = db_file.is_some();
                let wal_sync =
                    db_file.and_then(|(f, _)| WalSync::start(f, &options, Arc::downgrade(&upkeep)));
                Some(SqliteWriter {
                    held: None,
                    keep,
                    upkeep,
                    restart_frames: options.wal_restart_frames,
                    wal_sync,
                })
            }
            Pool::Postgres(_) => None,
        };
        let wal_syncs = sqlite_writer
            .as_ref()
            .and_then(|w| w.wal_sync.as_ref())
            .map(|s| s.syncs.clone());
        tokio::spawn(write_loop(pool.clone(), rx, sqlite_writer));
        let store = Store {
            pool,
            writer,
            wal_syncs,
        };
        store.create_schema().await?;
        Ok(store)
    }

    async fn create_schema(&self) -> Result<(), GatewayError> {
        let statements = match &self.pool {
            Pool::Sqlite(_) => SQLITE_SCHEMA,
            Pool::Postgres(_) => POSTGRES_SCHEMA,
        };
        let ctx = "creating the gateway tables";
        on_backend!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(GatewayError::db(ctx))?;
            for sql in statements.iter().chain(SHARED_SCHEMA) {
                sqlx::query(sql)
                    .execute(&mut *tx)
                    .await
                    .map_err(GatewayError::db(ctx))?;
            }
            tx.commit().await.map_err(GatewayError::db(ctx))?;
        });
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), GatewayError> {
        on_backend!(&self.pool, p => {
            sqlx::query("SELECT 1")
                .execute(p)
                .await
                .map_err(GatewayError::db("ping"))?;
        });
        Ok(())
    }

    pub async fn insert_key(&self, key: &StoredKey) -> Result<(), GatewayError> {
        let r = &key.record;
        on_backend!(&self.pool, p => {
            sqlx::query(
                "INSERT INTO api_keys (id, name, role, salt, secret_hmac, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&r.id)
            .bind(&r.name)
            .bind(&r.role)
            .bind(&key.salt)
            .bind(&key.secret_hmac)
            .bind(r.created_at_ms)
            .execute(p)
            .await
            .map_err(GatewayError::db("creating an API key"))?;
        });
        Ok(())
    }

    pub async fn find_key(&self, id: &str) -> Result<Option<StoredKey>, GatewayError> {
        type Row = (String, String, String, String, String, i64, Option<i64>);
        let row: Option<Row> = on_backend!(&self.pool, p => {
            sqlx::query_as(
                "SELECT id, name, role, salt, secret_hmac, created_at_ms, revoked_at_ms \
                 FROM api_keys WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(p)
            .await
            .map_err(GatewayError::db("reading an API key"))?
        });
        Ok(row.map(
            |(id, name, role, salt, secret_hmac, created_at_ms, revoked_at_ms)| StoredKey {
                record: ApiKeyRecord {
                    id,
                    name,
                    role,
                    created_at_ms,
                    revoked_at_ms,
                },
                salt,
                secret_hmac,
            },
        ))
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, GatewayError> {
        type Row = (String, String, String, i64, Option<i64>);
        let rows: Vec<Row> = on_backend!(&self.pool, p => {
            sqlx::query_as(
                "SELECT id, name, role, created_at_ms, revoked_at_ms FROM api_keys \
                 ORDER BY created_at_ms, id",
            )
            .fetch_all(p)
            .await
            .map_err(GatewayError::db("listing API keys"))?
        });
        Ok(rows
            .into_iter()
            .map(
                |(id, name, role, created_at_ms, revoked_at_ms)| ApiKeyRecord {
                    id,
                    name,
                    role,
                    created_at_ms,
                    revoked_at_ms,
                },
            )
            .collect())
    }

    /// Revokes a key; `false` when there is no such key or it was already revoked.
    pub async fn revoke_key(&self, id: &str) -> Result<bool, GatewayError> {
        let n = on_backend!(&self.pool, p => {
            sqlx::query(
                "UPDATE api_keys SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL",
            )
            .bind(id)
            .bind(now_ms())
            .execute(p)
            .await
            .map_err(GatewayError::db("revoking an API key"))?
            .rows_affected()
        });
        Ok(n == 1)
    }

    async fn write(&self, w: Write) -> Result<bool, GatewayError> {
        self.queue_write(w).await?.applied().await
    }

    /// Queues a write without waiting for it: writes are applied in the order they are
    /// queued, so a later write of the same request (its ending) is applied after it.
    async fn queue_write(&self, w: Write) -> Result<QueuedWrite, GatewayError> {
        let (tx, rx) = oneshot::channel();
        self.writer.send((w, tx)).await.map_err(|_| writer_gone())?;
        Ok(QueuedWrite(rx))
    }

    /// Queues a request's `accepted` row without waiting for its commit, for a request with
    /// no idempotency key (nothing to find out before its work starts). Its ending, queued
    /// later, is committed with it or after it; see [`QueuedWrite::applied`].
    pub async fn accept_queued(&self, r: &NewRequest) -> Result<QueuedWrite, GatewayError> {
        self.queue_write(Write::Accept(r.clone())).await
    }

    /// Stores a request as `accepted`; `false` when the key already used this idempotency
    /// key (the caller then reads that request instead).
    pub async fn accept(&self, r: &NewRequest) -> Result<bool, GatewayError> {
        self.write(Write::Accept(r.clone())).await
    }

    /// Stores a request refused before it was accepted (overload, shutdown): for the record,
    /// without its idempotency key, so a retry with the same key runs.
    pub async fn reject(&self, r: &NewRequest, kind: &str) -> Result<(), GatewayError> {
        self.write(Write::Reject(r.clone(), kind.to_string()))
            .await
            .map(|_| ())
    }

    /// Ends an `accepted` request (and writes its audit row, in the same transaction).
    /// `false` when the request had already ended (e.g. its deadline was stored first).
    pub async fn finish(&self, request_id: &str, ending: &Ending) -> Result<bool, GatewayError> {
        self.write(Write::Finish(request_id.to_string(), ending.clone()))
            .await
    }

    pub async fn request(&self, request_id: &str) -> Result<Option<RequestRow>, GatewayError> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM triage_requests WHERE request_id = $1");
        let row: Option<RequestTuple> = on_backend!(&self.pool, p => {
            sqlx::query_as(&sql)
                .bind(request_id)
                .fetch_optional(p)
                .await
                .map_err(GatewayError::db("reading a request"))?
        });
        Ok(row.map(request_row))
    }

    pub async fn request_by_idempotency_key(
        &self,
        api_key_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<RequestRow>, GatewayError> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM triage_requests \
             WHERE api_key_id = $1 AND idempotency_key = $2"
        );
        let row: Option<RequestTuple> = on_backend!(&self.pool, p => {
            sqlx::query_as(&sql)
                .bind(api_key_id)
                .bind(idempotency_key)
                .fetch_optional(p)
                .await
                .map_err(GatewayError::db("reading a request by idempotency key"))?
        });
        Ok(row.map(request_row))
    }

    /// Every request, oldest first (tests and audits).
    pub async fn requests(&self) -> Result<Vec<RequestRow>, GatewayError> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM triage_requests ORDER BY created_at_ms");
        let rows: Vec<RequestTuple> = on_backend!(&self.pool, p => {
            sqlx::query_as(&sql)
                .fetch_all(p)
                .await
                .map_err(GatewayError::db("reading requests"))?
        });
        Ok(rows.into_iter().map(request_row).collect())
    }

    /// The audit rows of one request.
    pub async fn audit(&self, request_id: &str) -> Result<Vec<AuditRecord>, GatewayError> {
        let rows: Vec<AuditTuple> = on_backend!(&self.pool, p => {
            sqlx::query_as(
                "SELECT request_id, api_key_id, role, patient_id, message_sha256, workflow, \
                 disposition, decision, decided_by, escalated, rules_fired, tiers, models, \
                 cost_usd FROM audit_log WHERE request_id = $1 ORDER BY id",
            )
            .bind(request_id)
            .fetch_all(p)
            .await
            .map_err(GatewayError::db("reading the audit log"))?
        });
        Ok(rows
            .into_iter()
            .map(|t| AuditRecord {
                request_id: t.0,
                api_key_id: t.1,
                role: t.2,
                patient_id: t.3,
                message_sha256: t.4,
                workflow: t.5,
                disposition: t.6,
                decision: t.7,
                decided_by: t.8,
                escalated: t.9,
                rules_fired: t.10,
                tiers: t.11,
                models: t.12,
                cost_usd: t.13,
                steps: Vec::new(),
            })
            .collect())
    }

    /// Ends requests left `accepted` since before `before_ms` as `error: abandoned` (a
    /// process that died mid-request). Only rows older than any live request's deadline
    /// plus the shutdown grace are touched, so other live gateways' work is safe.
    pub async fn abandon_stale(&self, before_ms: i64) -> Result<u64, GatewayError> {
        let n = on_backend!(&self.pool, p => {
            sqlx::query(
                "UPDATE triage_requests SET status = 'error', finished_at_ms = $2, \
                 error_kind = 'abandoned', error = 'the server stopped before the request ended' \
                 WHERE status = 'accepted' AND created_at_ms < $1",
            )
            .bind(before_ms)
            .bind(now_ms())
            .execute(p)
            .await
            .map_err(GatewayError::db("ending abandoned requests"))?
            .rows_affected()
        });
        Ok(n)
    }

    /// How many times the WAL sync thread has written the WAL out (`None`: no such thread:
    /// not a SQLite file, or turned off by [`StoreOptions::wal_sync_every`]).
    pub fn wal_syncs(&self) -> Option<u64> {
        self.wal_syncs.as_ref().map(|n| n.load(Ordering::Relaxed))
    }

    pub async fn close(&self) {
        on_backend!(&self.pool, p => p.close().await);
    }
}

/// The writer's connection on SQLite. On a file it is kept from one group to the next
/// (`keep`): taking any idle connection of the pool each time made every switch between two
/// connections cost a re-read of the pages the other had written (`pread` and page-cache
/// truncation, 10% of the writer thread at 5,000 requests/s).
struct SqliteWriter {
    held: Option<sqlx::pool::PoolConnection<sqlx::Sqlite>>,
    keep: bool,
    upkeep: Arc<WalUpkeep>,
    restart_frames: u64,
    /// Stops the WAL sync thread when the writer ends.
    wal_sync: Option<WalSync>,
}

impl SqliteWriter {
    /// Applies a group in one query (see [`batch_sqlite`]); `None`: not one for that path.
    async fn apply(
        &mut self,
        pool: &SqlitePool,
        writes: &[&Write],
        now: i64,
    ) -> Option<Result<Vec<bool>, GroupFailed>> {
        let conn = match self.held.take() {
            Some(c) => Ok(c),
            None => pool.acquire().await,
        };
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                return Some(Err(GroupFailed::RolledBack(GatewayError::db(
                    "writing requests",
                )(e))))
            }
        };
        let r = batch_sqlite::apply(&mut conn, writes, now).await;
        // A connection that failed a group is given back (the pool checks it).
        if self.keep && !matches!(r, Some(Err(_))) {
            self.held = Some(conn);
        }
        r
    }

    /// Between two groups: finishes the WAL when it has grown past its bound. The
    /// checkpoint does not finish when the background one is running at that moment, and the
    /// WAL does not start over while a reader still holds an older snapshot; either way it is
    /// tried again after the background loop's next report.
    async fn upkeep(&mut self) {
        if self.upkeep.frames.load(Ordering::Relaxed) < self.restart_frames {
            return;
        }
        let Some(conn) = self.held.as_mut() else {
            return;
        };
        self.upkeep.frames.store(0, Ordering::Relaxed);
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut **conn)
            .await
        {
            Ok((0, frames, copied)) if frames == copied => {}
            Ok((busy, frames, copied)) => tracing::debug!(
                busy,
                frames,
                copied,
                "the writer's WAL checkpoint did not finish; tried again later"
            ),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint by the writer failed"),
        }
    }
}

/// How a group of writes failed.
pub(super) enum GroupFailed {
    /// Nothing of it was written: each write is tried again alone.
    RolledBack(GatewayError),
    /// It was committed, but its answers could not be read: retrying would apply it twice.
    AfterCommit(GatewayError),
}

/// The writer task: one transaction per group of queued writes. If a group fails, its
/// writes are retried one transaction each, so one bad write fails alone. `sqlite`: the
/// writer's connection on SQLite; a kept one is given back when the pool closes, since
/// closing waits for every connection, and the WAL sync thread stops then too.
async fn write_loop(
    pool: Pool,
    mut rx: mpsc::Receiver<(Write, WriteReply)>,
    mut sqlite: Option<SqliteWriter>,
) {
    let closed = on_backend!(&pool, p => p.close_event());
    let mut closed = std::pin::pin!(closed);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // What the pool's closing ends: the kept connection, the WAL sync thread.
        let holding = sqlite
            .as_ref()
            .is_some_and(|w| w.held.is_some() || w.wal_sync.is_some());
        let first = tokio::select! {
            w = rx.recv() => match w {
                Some(w) => w,
                None => break,
            },
            _ = &mut closed, if holding => {
                if let Some(w) = sqlite.as_mut() {
                    w.held = None;
                    w.wal_sync = None;
                }
                continue;
            }
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let writes: Vec<&Write> = batch.iter().map(|(w, _)| w).collect();
        let now = now_ms();
        let grouped = match (&pool, sqlite.as_mut()) {
            (Pool::Sqlite(p), Some(w)) => w.apply(p, &writes, now).await,
            _ => None,
        };
        // One bad write must not fail the others: after a failed transaction, each again,
        // a transaction each, on the general path.
        let (result, retry) = match grouped {
            Some(Ok(v)) => (Ok(v), false),
            Some(Err(GroupFailed::RolledBack(e))) => (Err(e), true),
            Some(Err(GroupFailed::AfterCommit(e))) => (Err(e), false),
            None => (apply(&pool, &writes, now).await, batch.len() > 1),
        };
        match result {
            Ok(results) => {
                for ((_, reply), r) in batch.drain(..).zip(results) {
                    let _ = reply.send(Ok(r));
                }
            }
            Err(_) if retry => {
                for (w, reply) in batch.drain(..) {
                    let r = apply(&pool, &[&w], now_ms())
                        .await
                        .map(|v| v.first().copied().unwrap_or(false));
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(GatewayError::Service(e.to_string())));
                }
            }
        }
        if let Some(w) = sqlite.as_mut() {
            w.upkeep().await;
        }
    }
}

const ACCEPT_SQL: &str = "INSERT INTO triage_requests (request_id, api_key_id, patient_id, \
     idempotency_key, message_sha256, status, created_at_ms) \
     VALUES ($1, $2, $3, $4, $5, 'accepted', $6) ON CONFLICT DO NOTHING";

/// Applies writes in one transaction, a statement per row (PostgreSQL; on SQLite, what
/// [`batch_sqlite`] leaves); per write, whether it changed a row.
async fn apply(pool: &Pool, writes: &[&Write], now: i64) -> Result<Vec<bool>, GatewayError> {
    let ctx = "writing requests";
    let mut results = Vec::with_capacity(writes.len());
    on_backend!(pool, p => {
        // One write of one statement needs no transaction of its own: one round trip to the
        // database instead of three (BEGIN, the statement, COMMIT).
        if let [Write::Accept(r)] = writes {
            let n = sqlx::query(ACCEPT_SQL)
                .bind(&r.request_id)
                .bind(&r.api_key_id)
                .bind(r.patient_id)
                .bind(&r.idempotency_key)
                .bind(&r.message_sha256)
                .bind(now)
                .execute(p)
                .await
                .map_err(GatewayError::db("storing an accepted request"))?
                .rows_affected();
            return Ok(vec![n == 1]);
        }
        let mut tx = p.begin().await.map_err(GatewayError::db(ctx))?;
        for w in writes {
            let changed = match w {
                Write::Accept(r) => sqlx::query(ACCEPT_SQL)
                .bind(&r.request_id)
                .bind(&r.api_key_id)
                .bind(r.patient_id)
                .bind(&r.idempotency_key)
                .bind(&r.message_sha256)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(GatewayError::db("storing an accepted request"))?
                .rows_affected() == 1,
                Write::Reject(r, kind) => sqlx::query(
                    "INSERT INTO triage_requests (request_id, api_key_id, patient_id, \
                     message_sha256, status, created_at_ms, finished_at_ms, error_kind, error) \
                     VALUES ($1, $2, $3, $4, 'rejected', $5, $5, $6, \
                     'refused before it was accepted') ON CONFLICT DO NOTHING",
                )
                .bind(&r.request_id)
                .bind(&r.api_key_id)
                .bind(r.patient_id)
                .bind(&r.message_sha256)
                .bind(now)
                .bind(kind)
                .execute(&mut *tx)
                .await
                .map_err(GatewayError::db("storing a refused request"))?
                .rows_affected() == 1,
                Write::Finish(request_id, ending) => {
                    let (status, outcome, kind, message) = ending.columns();
                    let n = sqlx::query(
                        "UPDATE triage_requests SET status = $2, finished_at_ms = $3, outcome = $4, \
                         error_kind = $5, error = $6 WHERE request_id = $1 AND status = 'accepted'",
                    )
                    .bind(request_id)
                    .bind(status)
                    .bind(now)
                    .bind(outcome)
                    .bind(kind)
                    .bind(message)
                    .execute(&mut *tx)
                    .await
                    .map_err(GatewayError::db("storing a request's outcome"))?
                    .rows_affected();
                    if let (1, Ending::Done { audit, message, .. }) = (n, ending) {
                        if let Some(text) = message {
                            sqlx::query(
                                "INSERT INTO triage_messages (request_id, message) VALUES ($1, $2) \
                                 ON CONFLICT DO NOTHING",
                            )
                            .bind(request_id)
                            .bind(text)
                            .execute(&mut *tx)
                            .await
                            .map_err(GatewayError::db("storing a request's message"))?;
                        }
                        let a = audit.as_ref();
                        sqlx::query(
                            "INSERT INTO audit_log (at_ms, request_id, api_key_id, role, patient_id, \
                             message_sha256, workflow, disposition, decision, decided_by, escalated, \
                             rules_fired, tiers, models, cost_usd) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                        )
                        .bind(now)
                        .bind(&a.request_id)
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
                        .bind(a.cost_usd)
                        .execute(&mut *tx)
                        .await
                        .map_err(GatewayError::db("writing the audit row"))?;
                        for st in &a.steps {
                            sqlx::query(
                                "INSERT INTO triage_steps (request_id, at_ms, step, tier, millis, \
                                 submitted, computed, reused, generated, cost_usd) \
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                            )
                            .bind(&a.request_id)
                            .bind(now)
                            .bind(&st.step)
                            .bind(&st.tier)
                            .bind(st.millis)
                            .bind(st.submitted as i64)
                            .bind(st.computed as i64)
                            .bind(st.reused as i64)
                            .bind(st.generated as i64)
                            .bind(st.cost_usd)
                            .execute(&mut *tx)
                            .await
                            .map_err(GatewayError::db("writing a request's step figures"))?;
                        }
                    }
                    n == 1
                }
            };
            results.push(changed);
        }
        tx.commit().await.map_err(GatewayError::db(ctx))?;
    });
    Ok(results)
}

mod batch_sqlite;
mod console;
mod dashboard;
mod reviews;
mod wal;
pub use console::{ConsoleSession, ReviewedCase, SignIn};
pub use dashboard::{DayFigures, Figures, StepLatency};
pub use reviews::{needs_review, QueueItem, ReviewAction, ReviewRecord, ReviewRefused};
