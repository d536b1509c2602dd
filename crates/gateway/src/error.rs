//! The crate's one error type. [`crate::api_error`] is where each variant becomes an HTTP
//! status; nothing else turns errors into responses.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A setting is out of range or names something that cannot be loaded.
    #[error("{field}: {reason}")]
    Config { field: String, reason: String },

    /// The gateway's database failed; `context` says doing what.
    #[error("gateway database, {context}: {cause}")]
    Database { context: String, cause: sqlx::Error },

    /// The database URL is not one the gateway can open (the password is not shown).
    #[error("gateway database URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },

    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },

    /// The request queue is full: try again after `retry_after`.
    #[error("the server is at capacity; retry after {}s", retry_after.as_secs())]
    Overloaded { retry_after: Duration },

    /// The server is draining for shutdown and takes no new work.
    #[error("the server is shutting down")]
    ShuttingDown,

    /// The request's deadline passed before it finished.
    #[error("the request did not finish within its deadline of {0} ms")]
    DeadlineExceeded(u64),

    /// A field of the request is not acceptable to the service (e.g. a workflow it does
    /// not run).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },

    /// The patient named by the token is not in the records database.
    #[error("patient {0} is not in the records database")]
    UnknownPatient(i64),

    /// No engine behind this service (the no-op service has none).
    #[error("this server has no model engine")]
    NoEngine,

    /// A metric could not be registered (a name clash: a bug, caught at start).
    #[error("metrics: {0}")]
    Metrics(String),

    /// The workflow or the engine failed.
    #[error("{0}")]
    Service(String),
}

impl GatewayError {
    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> GatewayError {
        let context = context.into();
        move |cause| GatewayError::Database { context, cause }
    }

    /// A short machine name of the variant (metrics label, stored error kind).
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::Config { .. } => "config",
            GatewayError::Database { .. } | GatewayError::BadUrl { .. } => "database",
            GatewayError::Io { .. } => "io",
            GatewayError::Overloaded { .. } => "overloaded",
            GatewayError::ShuttingDown => "shutdown",
            GatewayError::DeadlineExceeded(_) => "deadline",
            GatewayError::Invalid { .. } => "invalid",
            GatewayError::UnknownPatient(_) => "unknown_patient",
            GatewayError::NoEngine => "no_engine",
            GatewayError::Metrics(_) => "metrics",
            GatewayError::Service(_) => "service",
        }
    }
}
