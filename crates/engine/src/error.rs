use std::path::PathBuf;

/// Everything the engine can refuse or fail at. Each variant names the cause so that a caller
/// (CLI, HTTP layer) can turn it into a message a person acts on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model file not found: {0} (run `careflow model pull` or pass an existing GGUF path)")]
    ModelNotFound(PathBuf),
    #[error("model file {path} is not a usable GGUF model: {reason}")]
    ModelCorrupt { path: PathBuf, reason: String },
    #[error("adapter `{name}` could not be loaded from {path}: {reason}")]
    AdapterLoad {
        name: String,
        path: PathBuf,
        reason: String,
    },
    /// The adapter's manifest names another base model than the one being served.
    #[error("adapter `{name}` was trained for another base model: its manifest {} names sha256 {trained_on}, but the served model {} has sha256 {served}; train it again for this model (careflow distill train) or serve it with its own base", manifest.display(), model.display())]
    AdapterBaseMismatch {
        name: String,
        manifest: PathBuf,
        trained_on: String,
        model: PathBuf,
        served: String,
    },
    #[error("unknown adapter `{0}` (loaded adapters: {1})")]
    UnknownAdapter(String, String),
    #[error("unknown or closed session {0}")]
    UnknownSession(u64),
    #[error("session {0} is busy with another turn")]
    SessionBusy(u64),
    #[error("context overflow: the session would hold {needed} tokens, over its limit of {limit}")]
    ContextOverflow { needed: usize, limit: usize },
    #[error("engine overloaded: no session slot or KV budget became free within {waited_ms} ms")]
    Overloaded { waited_ms: u64 },
    #[error("the engine ran out of KV cache cells while decoding")]
    KvExhausted,
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("constraint error: {0}")]
    Constraint(String),
    #[error("deadline of {0} ms exceeded")]
    DeadlineExceeded(u64),
    #[error("llama.cpp error: {0}")]
    Backend(String),
    #[error("invalid engine configuration: {0}")]
    Config(String),
    #[error("the engine thread has stopped")]
    Stopped,
    /// A remote model server refused the request (a 4xx other than 429: bad request, auth,
    /// unknown model; retrying gets the same answer) or the model refused to answer. `message`
    /// is the server's own, with any API key removed.
    #[error("{backend} server error{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Remote {
        backend: String,
        status: Option<u16>,
        message: String,
    },
    /// A remote backend cannot be used now: its circuit breaker is open, or every attempt failed
    /// with a transient error (429, 5xx, timeout, connection). Worth retrying later.
    #[error("{backend} backend unavailable: {reason}")]
    Unavailable { backend: String, reason: String },
    /// A remote server's reply could not be understood (malformed JSON, a field missing).
    #[error("{backend} sent a response careflow cannot read: {reason}")]
    BadResponse { backend: String, reason: String },
}
