//! The one error type of the crate: each variant names the file, field or entry at fault and
//! the cause. A variant's message includes the underlying error (`cause`), so one line says
//! it all; it is not repeated as `source()`, which would print it twice in a chain.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A prices file could not be read.
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// A prices file is not valid TOML (the message carries the line and column).
    #[error("{file}: not valid TOML: {message}")]
    PricesSyntax { file: String, message: String },

    /// A field of a prices file is missing, unknown, of the wrong type or out of range.
    /// `tier` is `None` for the top-level fields (`as_of`, `note`, `tiers`).
    #[error("{file}: {}field `{field}`: {reason}", tier.as_ref().map(|t| format!("tier `{t}`, ")).unwrap_or_default())]
    PricesField {
        file: String,
        tier: Option<String>,
        field: String,
        reason: String,
    },

    /// A tier name that the prices do not define.
    #[error("{origin}: no price tier `{name}` (known tiers: {known})")]
    UnknownTier {
        origin: String,
        name: String,
        known: String,
    },

    /// A stated volume that cannot be projected (e.g. zero requests per day).
    #[error("volume: field `{field}`: {reason}")]
    BadVolume { field: &'static str, reason: String },

    /// The database URL is neither `sqlite://PATH`, `sqlite::memory:` nor `postgres://…`,
    /// or is malformed. The password, if any, is not shown.
    #[error("ledger database URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },

    /// A directory for the SQLite file could not be created.
    #[error("{}: {cause}", path.display())]
    CreateDir {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// A database operation failed; `context` says which.
    #[error("ledger database, {context}: {cause}")]
    Database { context: String, cause: sqlx::Error },

    /// An entry cannot be stored as it is (e.g. a token count beyond the 64-bit signed
    /// range, or a cost that is not a finite non-negative number). `index` is 0-based.
    #[error("ledger entry {index} of request `{request_id}`, field `{field}`: {reason}")]
    BadEntry {
        request_id: String,
        index: usize,
        field: &'static str,
        reason: String,
    },

    /// One call to `record` holds the entries of one request only.
    #[error("ledger entries of one call to record must share one request_id: entry 0 has `{first}`, entry {index} has `{other}`")]
    MixedRequests {
        first: String,
        index: usize,
        other: String,
    },

    /// A row read back from the ledger holds a value out of range (e.g. a negative token
    /// count in a table created without careflow's CHECK constraints).
    #[error("ledger_entries row, column `{column}`: {reason}")]
    BadRow {
        column: &'static str,
        reason: String,
    },

    /// Recording a request failed; its transaction was rolled back, so no entry of that
    /// request was written.
    #[error("recording request `{request_id}` failed and was rolled back (no entry of it was written): {cause}")]
    RolledBack {
        request_id: String,
        cause: Box<LedgerError>,
    },

    /// The COMMIT of a request's entries got no answer (the connection was lost while
    /// committing): the ledger holds either all of that request's entries or none of them.
    #[error("recording request `{request_id}`: the connection was lost while committing, so either all of its entries or none were written (see Ledger::entries): {cause}")]
    CommitUncertain {
        request_id: String,
        cause: sqlx::Error,
    },
}

impl LedgerError {
    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> LedgerError {
        let context = context.into();
        move |cause| LedgerError::Database { context, cause }
    }
}
