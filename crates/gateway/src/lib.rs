//! careflow-gateway: the HTTP API in front of the workflow.
//!
//! Layout (the request path, top to bottom):
//! - [`server`]: the router, a span and a latency metric per request, and [`run`] (serve on
//!   a listener until a shutdown future completes, then drain).
//! - [`routes`]: the handlers — `triage` (`POST /v1/triage`, `GET /v1/triage/{id}`; the
//!   portal's answer held until a clinician reviews a case that needs it), `review`
//!   (`/v1/review`), `console` (the clinicians' web console and dashboard under `/console`),
//!   `openai` (`/v1/models`, `/v1/chat/completions`), `keys` (`/v1/keys`, admin), `ops`
//!   (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`).
//! - [`state`]: what handlers share; authentication and the patient token read in one place.
//! - [`auth`]: API keys (HMAC-SHA256 with a per-key salt, roles) and patient tokens (JWT,
//!   EdDSA or RS256; the patient's identity never comes from the body).
//! - [`validate`]: bodies into validated types, or 400 naming the field.
//! - [`limits`]: per-key token buckets.
//! - [`flow`]: a triage request from acceptance to its stored ending.
//! - [`queue`]: the bounded queue in front of the engine, an actor with a handle; full means
//!   429 + Retry-After at once, draining means 503.
//! - [`service`]: [`TriageService`], the one boundary between HTTP and the engine, with the
//!   real [`WorkflowService`] and the [`NoopService`] the overhead test uses.
//! - [`store`]: `api_keys`, `triage_requests`, `audit_log` (append-only) on SQLite or
//!   PostgreSQL.
//! - [`metrics`]: Prometheus metrics. [`openapi`]: the OpenAPI document.
//! - [`api_error`]: errors into HTTP, in one place. [`error`]: the crate's error type.
//! - [`config`]: [`GatewayConfig`] (the `[gateway]` table) and its checked [`Settings`].
//!
//! Patient text never reaches the logs: requests are logged by id, key and the first 12 hex
//! digits of the message's SHA-256.

pub mod api_error;
pub mod auth;
pub mod config;
pub mod error;
pub mod flow;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod queue;
pub mod routes;
pub mod server;
pub mod service;
pub mod state;
pub mod store;
pub mod validate;

pub use api_error::ApiError;
pub use auth::{create_key, PatientTokens, Principal, Role};
pub use config::{
    ConsoleConfig, ConsoleSettings, GatewayConfig, JwtAlgorithm, JwtConfig, RateLimitConfig,
    Settings,
};
pub use error::GatewayError;
pub use server::{router, run};
pub use service::{NoopService, ServiceInfo, TriageJob, TriageService, WorkflowService};
pub use state::AppState;
pub use store::{
    ApiKeyRecord, AuditRecord, ConsoleSession, DayFigures, Figures, QueueItem, RequestRow,
    ReviewAction, ReviewRecord, ReviewRefused, ReviewedCase, StepFigures, StepLatency, Store,
    StoreOptions,
};
