//! careflow-eval: evaluation suites and their scoring.
//!
//! - [`sql`]: execution accuracy of model-written SQL against a dev set of questions about one
//!   patient each (expected rows computed independently of the guard), and the fallback rate
//!   (SQL the guard refused, that failed, or that did not parse).
//!
//! The triage suite harness (`careflow eval --suite`) comes with its own issue.

pub mod sql;

/// Everything an evaluation can fail at; a malformed suite line names its line and field.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{file}: cannot read: {reason}")]
    Io { file: String, reason: String },
    #[error("{file} line {line}: {reason}")]
    Line {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("engine: {0}")]
    Engine(#[from] careflow_engine::EngineError),
}
