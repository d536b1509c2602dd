//! careflow-core: the domain types every other crate speaks.
//!
//! Nothing here does I/O. The layout of the workspace follows the request path:
//! `core` ← `engine`, `records`, `knowledge` ← `workflow` ← `cli` (and later `gateway`, `eval`).
//!
//! - [`disposition`]: the triage scale and its mappings to the published scales.
//! - [`message`]: a validated patient message (the only way text enters the workflow).
//! - [`usage`]: token counters per step and per request.
//! - [`step`]: the names of the workflow steps.
//! - [`redact`]: credentials hidden before a URL is shown.

pub mod disposition;
pub mod facts;
pub mod message;
pub mod redact;
pub mod step;
pub mod time;
pub mod usage;

pub use disposition::{Disposition, ParseDispositionError};
pub use facts::RecordFacts;
pub use message::{MessageError, PatientId, PatientMessage};
pub use redact::redact_url;
pub use step::Step;
pub use usage::TokenUsage;
