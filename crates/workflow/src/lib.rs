//! careflow-workflow: the triage workflow, step by step, over one engine session.
//!
//! Layout (the request path):
//! - [`conversation`]: how steps reach the engine — stateless (every step re-sends the whole
//!   transcript to a fresh sequence, as an API-based agent does), stateful (one session, steps
//!   append), or stateful with the shared prefix forked from the prefix cache.
//! - [`prompts`]: the shared prefix (role, schema card, guideline digest) and each step's
//!   instruction and output schema.
//! - [`validate`]: the deterministic Validate step — red-flag floor, consistency, confidence,
//!   and the decision (accept, escalate, human review).
//! - [`triage`]: Plan → Retrieve → Analyze → Validate → Respond, and the outcome it returns.
//!
//! Patient safety lives in code: a model's disposition is never below a fired rule's floor,
//! and uncertain cases are escalated instead of accepted.

pub mod conversation;
pub mod error;
pub mod prompts;
pub mod triage;
pub mod validate;

pub use conversation::Mode;
pub use error::WorkflowError;
pub use triage::{
    Decision, StepAdapters, StepReport, TriageOutcome, TriageRequest, TriageWorkflow,
    WorkflowConfig,
};
