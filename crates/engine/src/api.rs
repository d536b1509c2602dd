//! The engine boundary: what a workflow may ask of a model server, whatever runs it.

use crate::EngineError;
use async_trait::async_trait;
use careflow_core::TokenUsage;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A session is one request's transcript held in the engine's KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u64);

/// One chat message. Roles are free-form strings rendered through the model's chat template
/// (`system`, `user`, `assistant`, `tool`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.to_string(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
}

/// Opening a session.
#[derive(Debug, Clone, Default)]
pub struct OpenSession {
    /// Messages every session of this kind starts with (system prompt, schema card, guideline
    /// digest). With `cache_prefix`, they are computed once per process and forked.
    pub prefix: Vec<ChatMessage>,
    /// Fork the prefix from the prefix cache (computing it on a miss) instead of computing it
    /// into this session alone.
    pub cache_prefix: bool,
    /// A LoRA adapter applied to every token of the session, prefix included (the "one adapter
    /// for the whole session" mode). The prefix cache is keyed by this adapter.
    pub session_adapter: Option<String>,
    /// Upper bound on the tokens this session may hold; `None` takes the engine's default.
    pub max_tokens: Option<usize>,
}

/// The result of opening a session.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    pub id: SessionId,
    /// Prefix tokens: `reused` on a cache hit, `computed` on a miss or without the cache.
    pub usage: TokenUsage,
    /// Whether the prefix came from the prefix cache.
    pub prefix_hit: bool,
}

/// What constrains a generation.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// Output must be a JSON document valid for this JSON schema (llguidance).
    JsonSchema(serde_json::Value),
    /// Output must match this GBNF grammar (root rule `root`).
    Gbnf(String),
}

/// How to generate the assistant's reply at the end of a turn.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub constraint: Option<Constraint>,
}

impl GenerateParams {
    pub fn text(max_tokens: usize) -> Self {
        GenerateParams {
            max_tokens,
            constraint: None,
        }
    }
    pub fn json(max_tokens: usize, schema: serde_json::Value) -> Self {
        GenerateParams {
            max_tokens,
            constraint: Some(Constraint::JsonSchema(schema)),
        }
    }
}

/// One step's worth of work on a session: append messages, then optionally generate.
#[derive(Debug, Clone, Default)]
pub struct Turn {
    pub messages: Vec<ChatMessage>,
    /// The step adapter. It applies only to this turn's tokens (its messages, the assistant
    /// header and the generated reply): the KV already in the session stays as computed, so a
    /// step adapter never forces the shared context to be computed again (activated LoRA).
    pub adapter: Option<String>,
    pub generate: Option<GenerateParams>,
    /// Return the logits after the last appended token (tests, confidence probes).
    pub return_logits: bool,
    /// Fail the turn with [`EngineError::DeadlineExceeded`] past this duration.
    pub deadline: Option<Duration>,
    /// Receives the generated text piece by piece as it is sampled (whole characters only;
    /// the pieces concatenate to [`Generation::text`]). The channel closes when generation
    /// ends. If the receiver is dropped, the engine stops generating for this turn (the
    /// client went away). Engines that cannot stream send nothing and close it: the caller
    /// then has the whole text in the turn's result.
    pub stream: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its turn, or the constraint reached an accepting end.
    Stop,
    /// `max_tokens` reached.
    Length,
}

/// A generated reply.
#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<i32>,
    /// Bytes of text each token contributed (to map a span of `text` back to its tokens).
    pub piece_lens: Vec<usize>,
    /// Log-probability of each generated token under the (constrained, renormalised) distribution.
    pub logprobs: Vec<f32>,
    pub finish: FinishReason,
}

/// The result of a turn.
#[derive(Debug, Clone)]
pub struct TurnOutput {
    pub usage: TokenUsage,
    pub generation: Option<Generation>,
    pub logits: Option<Vec<f32>>,
    /// Tokens now held by the session.
    pub session_tokens: usize,
}

/// Totals for one session, returned when it closes.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SessionStats {
    pub usage: TokenUsage,
    pub turns: u64,
    pub tokens: usize,
}

/// Process-wide engine counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EngineStats {
    pub sessions_open: usize,
    pub sessions_queued: usize,
    pub prefix_entries: usize,
    pub prefix_hits: u64,
    pub prefix_misses: u64,
    pub prefix_evictions: u64,
    pub tokens_computed: u64,
    pub tokens_reused: u64,
    pub tokens_generated: u64,
    pub decode_calls: u64,
    /// Decode calls that carried more than one session.
    pub batched_decode_calls: u64,
    pub kv_cells_reserved: usize,
    pub kv_cells_total: usize,
}

/// Facts about the loaded model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub path: String,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub adapters: Vec<String>,
    pub threads: usize,
}

/// The boundary between the workflow and whatever serves the model.
#[async_trait]
pub trait Engine: Send + Sync {
    fn info(&self) -> &ModelInfo;
    async fn open(&self, req: OpenSession) -> Result<Opened, EngineError>;
    async fn turn(&self, session: SessionId, turn: Turn) -> Result<TurnOutput, EngineError>;
    /// Drops every token of the session at position `keep` and after (a rejected tail).
    async fn trim(&self, session: SessionId, keep: usize) -> Result<(), EngineError>;
    async fn close(&self, session: SessionId) -> Result<SessionStats, EngineError>;
    async fn stats(&self) -> Result<EngineStats, EngineError>;
    /// Counts the tokens `messages` render to (no KV is touched).
    async fn count_tokens(&self, messages: Vec<ChatMessage>) -> Result<usize, EngineError>;
}
