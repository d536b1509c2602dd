//! The one error type of the crate: each variant names its cause.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// The database URL is neither `sqlite://PATH`, `sqlite::memory:` nor `postgres://…`, or is malformed.
    #[error("database URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },

    #[error("{}: file not found", path.display())]
    FileNotFound { path: PathBuf },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: sha256 mismatch: expected {expected}, actual {actual}", path.display())]
    Sha256Mismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error("{}: not a readable zip archive: {message}", path.display())]
    Zip { path: PathBuf, message: String },

    /// A table careflow needs has no CSV in the archive.
    #[error("{}: no CSV file for table `{table}` in the archive", path.display())]
    MissingTable { path: PathBuf, table: String },

    /// The CSV header lacks a column careflow needs.
    #[error("{file}: the header has no column `{column}`")]
    MissingColumn { file: String, column: String },

    /// A row of a CSV file could not be read or a field did not parse. `line` is the
    /// 1-based line of the file (the header is line 1).
    #[error("{file} line {line}{}: {message}", field.as_ref().map(|f| format!(", field `{f}`")).unwrap_or_default())]
    Csv {
        file: String,
        line: u64,
        field: Option<String>,
        message: String,
    },

    /// A date argument (e.g. `today`) is not `YYYY-MM-DD`.
    #[error("`{0}` is not a date (expected YYYY-MM-DD)")]
    BadDate(String),

    #[error("database: {0}")]
    Database(#[from] sqlx::Error),

    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// The SQL guard refused a statement; `reason` says why (specific enough to tell the
    /// model that wrote it, e.g. "table `x` is not allowed").
    #[error("rejected: {reason}")]
    Rejected { reason: String },

    /// A guarded statement ran past its statement timeout and was stopped by the database.
    #[error("the statement ran past its timeout of {ms} ms and was stopped")]
    Timeout { ms: u64 },

    /// A background task (zip reading) panicked or was cancelled.
    #[error("background task: {0}")]
    Task(String),
}
