//! careflow-remote: remote model servers behind careflow's [`Engine`] trait.
//!
//! Two backends:
//! - [`OpenAiEngine`]: any OpenAI-compatible chat-completions server. With vLLM, LoRA adapters
//!   are served as model names (`--lora-modules`), so a turn's adapter picks the `model` field,
//!   and automatic prefix caching makes re-sending the transcript cheap (reported as `reused`).
//! - [`AnthropicEngine`]: the Messages API, the frontier tier, with prompt caching of the
//!   session prefix.
//!
//! Layout:
//! - [`config`]: [`RemoteConfig`] (data, serde) and its `build()` into a running engine.
//! - [`engine`]: [`RemoteEngine`], generic over a wire [`engine::Protocol`]: sessions, adapter
//!   mapping, accounting, the [`Engine`] impl.
//! - [`openai`], [`anthropic`]: the two wire formats.
//! - [`replicas`]: [`ReplicaSet`], several OpenAI-compatible replicas as one engine (session
//!   affinity by rendezvous hashing, health probes, failover of a session's remaining turns).
//! - [`session`]: client-side transcripts (a remote server holds no session for us).
//! - [`transport`]: one call: breaker, attempts, deadline, error classification.
//! - [`retry`]: exponential backoff with full jitter, and `Retry-After`.
//! - [`breaker`]: the circuit breaker shared by every clone of an engine.
//! - [`secret`]: the API key, which never appears in `Debug` output or error messages.
//!
//! Failures map to [`EngineError`]: `Remote` (the server refused the request: 4xx),
//! `Unavailable` (breaker open, or transient failures outlasted the retries), `BadResponse`
//! (a reply that cannot be read), `DeadlineExceeded` (the turn's deadline; no retry is started
//! that cannot finish before it).

pub mod anthropic;
pub mod breaker;
pub mod config;
pub mod engine;
pub mod openai;
pub mod replicas;
pub mod retry;
pub mod secret;
pub mod session;
pub mod transport;

pub use anthropic::AnthropicEngine;
pub use breaker::BreakerState;
pub use config::{RemoteConfig, RemoteKind};
pub use engine::RemoteEngine;
pub use openai::OpenAiEngine;
pub use replicas::{ReplicaSet, ReplicaStatus};
pub use secret::ApiKey;

#[doc(no_inline)]
pub use careflow_engine::{Engine, EngineError};
