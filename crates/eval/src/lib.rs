//! careflow-eval: evaluation suites and their scoring.
//!
//! - [`sql`]: execution accuracy of model-written SQL against a dev set of questions about one
//!   patient each (expected rows computed independently of the guard), and the fallback rate
//!   (SQL the guard refused, that failed, or that did not parse).
//! - The triage harness behind `careflow eval --suite FILE.jsonl`, strategy-agnostic:
//!   - [`suite`]: a lenient JSONL loader; a malformed line is recorded (line number, field,
//!     reason) and skipped, the other lines still load;
//!   - [`score`]: one [`score::Prediction`] per item and repeat → [`score::Metrics`]
//!     (accuracy, per-level precision/recall, under/over-triage, emergencies missed, admin
//!     routing, escalation, tokens, cost, latency), each item scored on the coarser of its gold
//!     label's scale and careflow's, plus the same collapsed to the published 4- and 3-level
//!     scales;
//!   - [`bootstrap`]: seeded 95 % percentile-bootstrap intervals (items resampled with all their
//!     repeats);
//!   - [`runner`]: the [`runner::Strategy`] trait and [`runner::run_suite`] (sequential: one
//!     engine never decodes two evaluation requests at once);
//!   - [`report`]: the JSON report (`schema_version` 1, documented field by field) and a
//!     plain-text summary table;
//!   - [`html`]: a self-contained HTML report with inline SVG plots (drawn with `plotters`);
//!   - [`diff`]: two JSON reports compared strategy by strategy, regressions flagged.

pub mod bootstrap;
pub mod diff;
pub mod html;
pub mod report;
pub mod runner;
pub mod score;
pub mod sql;
pub mod suite;

pub use bootstrap::{BootstrapConfig, Interval, Intervals};
pub use diff::{Diff, Regression, Tolerances};
pub use report::{Report, StrategyReport, SCHEMA_VERSION};
pub use runner::{run_suite, RunProgress, Strategy};
pub use score::{score, Metrics, Prediction, StepTokens};
pub use suite::{load_suite, Gold, LineProblem, LoadedSuite, Scale, SuiteItem};

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
    /// A file could not be written (report, HTML).
    #[error("{file}: cannot write: {reason}")]
    Write { file: String, reason: String },
    /// A JSON report that does not parse, or has a schema version this build does not know.
    #[error("{file}: not a careflow evaluation report: {reason}")]
    Report { file: String, reason: String },
    /// A report could not be serialized.
    #[error("cannot serialize the report: {0}")]
    Serialize(String),
    /// A plot could not be drawn.
    #[error("cannot draw the {plot} plot: {reason}")]
    Plot { plot: String, reason: String },
}
