//! careflow-workflow: a workflow defined as data, run step by step over one engine session,
//! with a cascade to a frontier tier for the cases the small model cannot settle.
//!
//! Layout (the request path):
//! - [`definition`]: the workflow file (TOML): steps, prompt templates, adapters, output
//!   schemas, token limits, retries, transitions; checked on load. `data/workflows/triage.toml`
//!   is the default; `medication_refill.toml` shows a second workflow on the same code.
//! - [`template`]: `{{placeholder}}` prompt templates.
//! - [`conversation`]: how steps reach the engine — stateless (every step re-sends the whole
//!   transcript to a fresh sequence, as an API-based agent does), stateful (one session, steps
//!   append), or stateful with the shared prefix forked from the prefix cache.
//! - [`run`]: the step machine (generate, retrieve, validate, respond).
//! - [`validate`]: the deterministic Validate checks — red-flag floor, consistency, confidence.
//! - [`cascade`]: tiers, the escalation policy, the frontier's daily budget, the route record.
//! - [`triage`]: the workflow object, its configuration and the outcome of a request.
//! - [`prompts`]: the fixed texts that are safety properties (the safety-net line) and the
//!   SQL output schema the guard relies on.
//!
//! Patient safety lives in code: a model's disposition is never below a fired rule's floor,
//! uncertain cases are escalated instead of accepted, and a case the frontier cannot take goes
//! to human review, never back to the small model.

pub mod cascade;
pub mod conversation;
pub mod definition;
pub mod error;
pub mod prompts;
pub mod run;
pub mod template;
pub mod triage;
pub mod validate;

pub use cascade::{Budget, CascadeConfig, Handoff, Route, Tier};
pub use conversation::Mode;
pub use definition::WorkflowDef;
pub use error::WorkflowError;
pub use triage::{
    Decision, StepReport, TriageOutcome, TriageRequest, TriageWorkflow, WorkflowConfig,
};
