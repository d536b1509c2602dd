//! The generic remote engine: client-side sessions, adapter -> model mapping, accounting and
//! the [`Engine`] trait. What differs between providers (request body, reply format, headers)
//! is a [`Protocol`].

use crate::breaker::{Breaker, BreakerState};
use crate::config::RemoteConfig;
use crate::retry::RetryPolicy;
use crate::secret::ApiKey;
use crate::session::{estimate_tokens, message_bytes, Sessions};
use crate::transport::{Deadline, Transport, TransportConfig};
use async_trait::async_trait;
use careflow_core::TokenUsage;
use careflow_engine::{
    ChatMessage, Engine, EngineError, EngineStats, GenerateParams, Generation, ModelInfo,
    OpenSession, Opened, SessionId, SessionStats, Turn, TurnOutput,
};
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a generation request is made from.
pub struct Request<'a> {
    pub model: &'a str,
    /// The whole transcript: the session's prefix, earlier turns, and this turn's messages.
    pub transcript: &'a [ChatMessage],
    /// How many leading messages are the session's stable prefix (the part worth caching).
    pub prefix_len: usize,
    pub params: &'a GenerateParams,
}

/// A parsed reply. `usage.micros` is filled in by the engine.
pub struct Reply {
    pub generation: Generation,
    pub usage: TokenUsage,
}

/// One provider's wire format.
pub trait Protocol: Send + Sync + 'static {
    /// The backend's name in errors and logs.
    const BACKEND: &'static str;
    /// The URL generations are posted to.
    fn endpoint(base: &url::Url) -> Result<reqwest::Url, EngineError>;
    /// Headers on every request (authentication, API version). Key values must be sensitive.
    fn headers(key: Option<&ApiKey>) -> Result<HeaderMap, EngineError>;
    fn body(&self, req: &Request<'_>) -> Result<Value, EngineError>;
    fn parse(&self, body: Value, params: &GenerateParams) -> Result<Reply, EngineError>;
}

/// `{base}{suffix}` with exactly one slash between them.
pub(crate) fn join(base: &url::Url, suffix: &str) -> Result<reqwest::Url, EngineError> {
    let s = format!("{}/{}", base.as_str().trim_end_matches('/'), suffix);
    reqwest::Url::parse(&s).map_err(|e| EngineError::Config(format!("base_url: {e}")))
}

pub(crate) fn bad<P: Protocol>(reason: impl Into<String>) -> EngineError {
    EngineError::BadResponse {
        backend: P::BACKEND.to_string(),
        reason: reason.into(),
    }
}

#[derive(Debug, Default)]
struct Counters {
    computed: AtomicU64,
    reused: AtomicU64,
    generated: AtomicU64,
    prefix_hits: AtomicU64,
    prefix_misses: AtomicU64,
}

struct Inner<P> {
    proto: P,
    transport: Transport,
    sessions: Sessions,
    info: ModelInfo,
    model: String,
    adapters: BTreeMap<String, String>,
    counters: Counters,
}

/// A remote engine. Cloning is cheap and shares sessions, counters and the circuit breaker.
pub struct RemoteEngine<P> {
    inner: Arc<Inner<P>>,
}

impl<P> Clone for RemoteEngine<P> {
    fn clone(&self) -> Self {
        RemoteEngine {
            inner: self.inner.clone(),
        }
    }
}

impl<P> std::fmt::Debug for RemoteEngine<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The transport's Debug shows the key as `ApiKey(<redacted>)`; the model and URL suffice.
        f.debug_struct("RemoteEngine")
            .field("model", &self.inner.info.name)
            .field("base_url", &self.inner.info.path)
            .field("adapters", &self.inner.info.adapters)
            .field("breaker", &self.inner.transport.breaker.state())
            .finish()
    }
}

impl<P: Protocol> RemoteEngine<P> {
    pub(crate) fn with_protocol(
        cfg: &RemoteConfig,
        key: Option<ApiKey>,
        proto: P,
    ) -> Result<Self, EngineError> {
        let base = cfg.validate()?;
        let mut shown = base.clone();
        // `info().path` may be logged or shown: no credentials in it.
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        let transport = Transport::new(TransportConfig {
            backend: P::BACKEND,
            endpoint: P::endpoint(&base)?,
            headers: P::headers(key.as_ref())?,
            key,
            timeout: Duration::from_millis(cfg.timeout_ms),
            policy: RetryPolicy {
                max_attempts: cfg.max_attempts,
                base: Duration::from_millis(cfg.backoff_base_ms),
                max: Duration::from_millis(cfg.backoff_max_ms),
            },
            breaker: Breaker::new(
                cfg.breaker_failures,
                Duration::from_millis(cfg.breaker_cooldown_ms),
            ),
        })?;
        let info = ModelInfo {
            name: cfg.model.clone(),
            path: shown.as_str().trim_end_matches('/').to_string(),
            n_vocab: 0,
            n_ctx_train: 0,
            adapters: cfg.adapters.keys().cloned().collect(),
            threads: 0,
        };
        Ok(RemoteEngine {
            inner: Arc::new(Inner {
                proto,
                transport,
                sessions: Sessions::default(),
                info,
                model: cfg.model.clone(),
                adapters: cfg.adapters.clone(),
                counters: Counters::default(),
            }),
        })
    }

    /// The circuit breaker's state, shared by every clone of this engine.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.transport.breaker.state()
    }

    /// Prompt tokens the server computed, prompt tokens it served from its cache, and tokens
    /// it generated, summed over this engine's replies.
    pub fn token_counts(&self) -> (u64, u64, u64) {
        let c = &self.inner.counters;
        (
            c.computed.load(Ordering::Relaxed),
            c.reused.load(Ordering::Relaxed),
            c.generated.load(Ordering::Relaxed),
        )
    }

    /// HTTP requests sent so far, retries included.
    pub fn requests_sent(&self) -> u64 {
        self.inner.transport.requests.load(Ordering::Relaxed)
    }

    /// The served model name for an adapter (none: the configured model).
    fn model_for(&self, adapter: Option<&str>) -> Result<&str, EngineError> {
        match adapter {
            None => Ok(&self.inner.model),
            Some(a) => self
                .inner
                .adapters
                .get(a)
                .map(String::as_str)
                .ok_or_else(|| {
                    EngineError::UnknownAdapter(a.to_string(), self.inner.info.adapters.join(", "))
                }),
        }
    }
}

#[async_trait]
impl<P: Protocol> Engine for RemoteEngine<P> {
    fn info(&self) -> &ModelInfo {
        &self.inner.info
    }

    /// Stores the prefix; nothing is sent until a turn generates, so the usage is zero (the
    /// prefix is counted in the first generation's prompt tokens).
    async fn open(&self, req: OpenSession) -> Result<Opened, EngineError> {
        self.model_for(req.session_adapter.as_deref())?;
        let id = self
            .inner
            .sessions
            .open(req.prefix, req.session_adapter, req.max_tokens);
        Ok(Opened {
            id,
            usage: TokenUsage::default(),
            prefix_hit: false,
        })
    }

    async fn turn(&self, session: SessionId, turn: Turn) -> Result<TurnOutput, EngineError> {
        let start = Instant::now();
        let deadline = turn.deadline.map(|d| Deadline {
            at: start + d,
            budget: d,
        });
        if turn.return_logits {
            return Err(EngineError::InvalidInput(
                "logits are not available from remote backends".into(),
            ));
        }
        let inner = &self.inner;
        let (_busy, snap) = inner.sessions.begin(session)?;
        let model = self.model_for(turn.adapter.as_deref().or(snap.adapter.as_deref()))?;
        let Some(params) = turn.generate else {
            // Appending without generating needs no call: the messages go with the next one.
            let tokens =
                inner
                    .sessions
                    .commit(session, turn.messages, None, TokenUsage::default(), None)?;
            return Ok(TurnOutput {
                usage: TokenUsage::default(),
                generation: None,
                logits: None,
                session_tokens: tokens,
            });
        };
        // Checked on the client's estimate: a request that cannot fit is not worth paying for.
        if let Some(limit) = snap.max_tokens {
            let needed =
                snap.tokens + estimate_tokens(message_bytes(&turn.messages)) + params.max_tokens;
            if needed > limit {
                return Err(EngineError::ContextOverflow { needed, limit });
            }
        }
        let mut transcript = snap.transcript;
        transcript.extend(turn.messages.iter().cloned());
        let body = inner.proto.body(&Request {
            model,
            transcript: &transcript,
            prefix_len: snap.prefix_len,
            params: &params,
        })?;
        let reply = inner
            .transport
            .call(&body, deadline, |v| inner.proto.parse(v, &params))
            .await?;
        let mut usage = reply.usage;
        usage.micros = start.elapsed().as_micros() as u64;
        let c = &inner.counters;
        c.computed.fetch_add(usage.computed, Ordering::Relaxed);
        c.reused.fetch_add(usage.reused, Ordering::Relaxed);
        c.generated.fetch_add(usage.generated, Ordering::Relaxed);
        // A server-side prefix-cache hit is any reused prompt token.
        let hit = if usage.reused > 0 {
            &c.prefix_hits
        } else {
            &c.prefix_misses
        };
        hit.fetch_add(1, Ordering::Relaxed);
        let counted = (usage.submitted + usage.generated) as usize;
        let answer = ChatMessage::new("assistant", reply.generation.text.clone());
        let tokens =
            inner
                .sessions
                .commit(session, turn.messages, Some(answer), usage, Some(counted))?;
        Ok(TurnOutput {
            usage,
            generation: Some(reply.generation),
            logits: None,
            session_tokens: tokens,
        })
    }

    /// The server keeps no transcript to cut, and the client's token positions are estimates,
    /// so only a no-op trim (`keep` at or past the end) succeeds.
    async fn trim(&self, session: SessionId, keep: usize) -> Result<(), EngineError> {
        if keep >= self.inner.sessions.tokens(session)? {
            return Ok(());
        }
        Err(EngineError::InvalidInput(
            "trim is not supported by remote backends".into(),
        ))
    }

    async fn close(&self, session: SessionId) -> Result<SessionStats, EngineError> {
        self.inner.sessions.close(session)
    }

    async fn stats(&self) -> Result<EngineStats, EngineError> {
        let c = &self.inner.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Ok(EngineStats {
            sessions_open: self.inner.sessions.open_count(),
            prefix_hits: load(&c.prefix_hits),
            prefix_misses: load(&c.prefix_misses),
            tokens_computed: load(&c.computed),
            tokens_reused: load(&c.reused),
            tokens_generated: load(&c.generated),
            decode_calls: self.requests_sent(),
            ..Default::default()
        })
    }

    /// An estimate (about four bytes per token): the providers' tokenizers are not available
    /// offline, and a count endpoint would cost a round trip.
    async fn count_tokens(&self, messages: Vec<ChatMessage>) -> Result<usize, EngineError> {
        Ok(estimate_tokens(message_bytes(&messages)))
    }
}
