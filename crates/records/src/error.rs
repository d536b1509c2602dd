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

    /// A load or synth failed while writing. It writes in one transaction, and that
    /// transaction was rolled back: the database is as it was before it started.
    #[error("{what} failed and was rolled back; the database is as it was before: {source}")]
    RolledBack {
        /// What was being written, e.g. "loading `measurement` from Synthea27Nj_5.4.zip".
        what: String,
        #[source]
        source: Box<RecordsError>,
    },

    /// The final COMMIT of a load or synth got no answer (the connection was lost while
    /// committing). It was one transaction, so the database holds either all of it or none
    /// of it; which one, only the database can tell (count the rows).
    #[error("{what}: the connection was lost while committing, so either all of it or none of it was written (check the row counts): {source}")]
    CommitUncertain {
        what: String,
        #[source]
        source: Box<RecordsError>,
    },

    /// A patient id that is not in the `person` table.
    #[error("patient {0} is not in the records database")]
    UnknownPatient(i64),

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
