//! careflow-engine: the [`Engine`] trait and its embedded llama.cpp backend.
//!
//! Layout:
//! - [`api`]: the trait the workflow talks to, and its request/response types. Nothing above this
//!   crate names a concrete engine.
//! - [`config`]: [`EngineConfig`] (data, serde) and its `build()` into a running engine.
//! - [`llama`]: the embedded backend. One thread owns the llama.cpp backend, model, adapters and
//!   context; [`llama::EmbeddedEngine`] is a cloneable handle that sends it commands over a channel,
//!   each with its own reply channel. The thread runs a scheduler that decodes all active sessions
//!   in shared batches (continuous batching), grouped by the adapter they need.
//! - [`gguf`]: GGUF file checks, and a writer for LoRA adapter files (used to make test adapters).
//! - [`manifest`]: the manifest beside a trained adapter (base model sha256, step, dataset,
//!   hyper-parameters, metrics); adapters load by manifest and are refused for another base.
//!
//! Why sessions: an agentic workflow appends to one transcript step after step. Keeping the
//! transcript's KV cells in a llama.cpp sequence means each step computes only its new tokens; the
//! shared prefix (system prompt, schema card, guideline digest) is computed once per process and
//! forked into each session with `seq_cp`, which shares the cells instead of copying them.

pub mod api;
pub mod config;
pub mod error;
pub mod gguf;
pub mod llama;
pub mod manifest;
pub mod models;

pub use api::{
    ChatMessage, Constraint, Engine, EngineStats, FinishReason, GenerateParams, Generation,
    ModelInfo, OpenSession, Opened, SessionId, SessionStats, Turn, TurnOutput,
};
pub use config::{AdapterConfig, EngineConfig};
pub use error::EngineError;
pub use llama::EmbeddedEngine;
pub use manifest::{AdapterManifest, BaseModelRef, DatasetRef};
