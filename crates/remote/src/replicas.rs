//! Several OpenAI-compatible replicas of one served model (vLLM pods, careflow's own
//! `/v1/chat/completions`) behind one [`Engine`]: session affinity, health, failover.
//!
//! Why affinity matters: a replica's automatic prefix cache holds what it computed for a
//! request's earlier steps. If the steps of one request were spread over replicas, every step
//! would pay for the whole transcript again. So a session (one request) is pinned to one
//! replica, chosen by rendezvous hashing (highest random weight) of the session key over the
//! healthy replicas: adding or losing a replica moves only the sessions that hashed to it.
//!
//! Health: a replica is skipped while it is marked down. It is marked down when a turn on it
//! fails with a transient error that outlasted its retries (connection refused, 5xx, timeout)
//! or with a reply that cannot be read, and by the health probe (`GET {base}/models` must answer
//! 200 with an OpenAI model list within `health_timeout_ms`). A successful probe brings it
//! back; without probes (no tokio runtime at build time) it comes back after
//! `breaker_cooldown_ms`.
//!
//! Failover: the client holds each session's transcript (a remote server holds none for us),
//! so when a turn fails that way, the session is reopened on the next replica in its hashing
//! order with the transcript so far, and the same turn is sent there. The request's remaining
//! steps continue on the new replica; nothing already generated is lost or generated twice.
//! A refusal (4xx) or the turn's own deadline are not replica faults: they fail the turn.

use crate::config::RemoteConfig;
use crate::engine::Protocol;
use crate::openai::{OpenAi, OpenAiEngine};
use crate::secret::ApiKey;
use async_trait::async_trait;
use careflow_core::TokenUsage;
use careflow_engine::{
    ChatMessage, Engine, EngineError, EngineStats, ModelInfo, OpenSession, Opened, SessionId,
    SessionStats, Turn, TurnOutput,
};
use serde::Serialize;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// One replica's state as reported by [`ReplicaSet::status`].
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    /// The base URL, without credentials.
    pub url: String,
    pub healthy: bool,
    /// Why it was last marked down (kept after it recovers, for the operator).
    pub last_error: Option<String>,
    /// Sessions opened here, failed-over sessions included.
    pub sessions: u64,
    /// Turns answered here: generations. (A turn that only appends messages sends nothing;
    /// its messages go with the next generation, and it is not counted.)
    pub turns: u64,
    /// Turns that failed here in a way that moved the session elsewhere.
    pub failures: u64,
    /// Prompt tokens the replica computed, and those it served from its prefix cache, as its
    /// usage reports said.
    pub tokens_computed: u64,
    pub tokens_cached: u64,
    pub tokens_generated: u64,
}

struct Replica {
    url: String,
    engine: OpenAiEngine,
    down_until: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    sessions: AtomicU64,
    turns: AtomicU64,
    failures: AtomicU64,
}

impl Replica {
    fn healthy(&self, now: Instant) -> bool {
        lock(&self.down_until).is_none_or(|until| now >= until)
    }
    fn mark_down(&self, why: String, cooldown: Duration) {
        tracing::warn!(replica = %self.url, reason = %why, "replica marked down");
        *lock(&self.down_until) = Some(Instant::now() + cooldown);
        *lock(&self.last_error) = Some(why);
    }
    fn mark_up(&self) {
        if lock(&self.down_until).take().is_some() {
            tracing::info!(replica = %self.url, "replica healthy again");
        }
    }
}

/// A session as the set sees it: where it lives now, and the transcript to move it with.
struct Routed {
    replica: usize,
    inner: SessionId,
    transcript: Vec<ChatMessage>,
    session_adapter: Option<String>,
    max_tokens: Option<usize>,
    /// Usage over every replica the session ran on.
    usage: TokenUsage,
    turns: u64,
    busy: bool,
}

struct SetInner {
    replicas: Vec<Replica>,
    sessions: Mutex<HashMap<u64, Routed>>,
    next: AtomicU64,
    info: ModelInfo,
    failovers: AtomicU64,
    probe: reqwest::Client,
    cooldown: Duration,
}

/// OpenAI-compatible replicas of one model as one engine. Cloning is cheap and shares
/// everything; the health-probe task stops when the last clone is dropped.
#[derive(Clone)]
pub struct ReplicaSet {
    inner: Arc<SetInner>,
}

impl std::fmt::Debug for ReplicaSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaSet")
            .field("model", &self.inner.info.name)
            .field(
                "replicas",
                &self
                    .inner
                    .replicas
                    .iter()
                    .map(|r| r.url.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The failures that say "this replica, not this request": worth another replica.
fn is_replica_fault(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::Unavailable { .. } | EngineError::BadResponse { .. }
    )
}

/// Rendezvous weight of `key` on replica `url`.
fn weight(key: u64, url: &str) -> u64 {
    // DefaultHasher::new() uses fixed keys: the same order in every process of this build,
    // which is what lets several gateways agree on a session's replica.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    url.hash(&mut h);
    h.finish()
}

impl ReplicaSet {
    /// Builds one client per replica URL in `cfg.replicas` (each with the settings of `cfg`:
    /// timeouts, retries, breaker, adapters) and, inside a tokio runtime, starts the health
    /// probe every `cfg.health_interval_ms`.
    pub fn new(cfg: &RemoteConfig, key: Option<ApiKey>) -> Result<Self, EngineError> {
        if cfg.replicas.is_empty() {
            return Err(EngineError::Config(
                "replicas: list at least one base URL".into(),
            ));
        }
        let mut replicas = Vec::with_capacity(cfg.replicas.len());
        for (i, url) in cfg.replicas.iter().enumerate() {
            let one = RemoteConfig {
                base_url: url.clone(),
                replicas: Vec::new(),
                ..cfg.clone()
            };
            let engine = OpenAiEngine::new(&one, key.clone())
                .map_err(|e| EngineError::Config(format!("replicas[{i}]: {e}")))?;
            let shown = engine.info().path.clone();
            if replicas.iter().any(|r: &Replica| r.url == shown) {
                return Err(EngineError::Config(format!(
                    "replicas[{i}]: {shown} is listed twice"
                )));
            }
            replicas.push(Replica {
                url: shown,
                engine,
                down_until: Mutex::new(None),
                last_error: Mutex::new(None),
                sessions: AtomicU64::new(0),
                turns: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            });
        }
        let probe = reqwest::Client::builder()
            .default_headers(OpenAi::headers(key.as_ref())?)
            .timeout(Duration::from_millis(cfg.health_timeout_ms))
            .build()
            .map_err(|e| EngineError::Config(format!("health probe client: {e}")))?;
        let info = ModelInfo {
            name: cfg.model.clone(),
            path: replicas
                .iter()
                .map(|r| r.url.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            n_vocab: 0,
            n_ctx_train: 0,
            adapters: cfg.adapters.keys().cloned().collect(),
            threads: 0,
        };
        let set = ReplicaSet {
            inner: Arc::new(SetInner {
                replicas,
                sessions: Mutex::new(HashMap::new()),
                next: AtomicU64::new(1),
                info,
                failovers: AtomicU64::new(0),
                probe,
                cooldown: Duration::from_millis(cfg.breaker_cooldown_ms),
            }),
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(probe_forever(
                Arc::downgrade(&set.inner),
                Duration::from_millis(cfg.health_interval_ms),
            ));
        }
        Ok(set)
    }

    /// Every replica's health and counters, in configuration order.
    pub fn status(&self) -> Vec<ReplicaStatus> {
        self.inner
            .replicas
            .iter()
            .map(|r| {
                let (computed, cached, generated) = r.engine.token_counts();
                ReplicaStatus {
                    url: r.url.clone(),
                    healthy: r.healthy(Instant::now()),
                    last_error: lock(&r.last_error).clone(),
                    sessions: r.sessions.load(Ordering::Relaxed),
                    turns: r.turns.load(Ordering::Relaxed),
                    failures: r.failures.load(Ordering::Relaxed),
                    tokens_computed: computed,
                    tokens_cached: cached,
                    tokens_generated: generated,
                }
            })
            .collect()
    }

    /// The replica (index into the configured list) a session runs on now.
    pub fn replica_of(&self, session: SessionId) -> Option<usize> {
        lock(&self.inner.sessions)
            .get(&session.0)
            .map(|r| r.replica)
    }

    /// Sessions moved to another replica after a replica fault, so far.
    pub fn failovers(&self) -> u64 {
        self.inner.failovers.load(Ordering::Relaxed)
    }

    /// One round of health probes over every replica (the background task runs this).
    pub async fn probe_all(&self) {
        probe_round(&self.inner).await;
    }

    /// The replicas to try for `key`, best first: healthy ones by rendezvous weight, minus
    /// those already tried.
    fn candidates(&self, key: u64, tried: &[usize]) -> Vec<usize> {
        let now = Instant::now();
        let mut order: Vec<(u64, usize)> = self
            .inner
            .replicas
            .iter()
            .enumerate()
            .filter(|(i, r)| !tried.contains(i) && r.healthy(now))
            .map(|(i, r)| (weight(key, &r.url), i))
            .collect();
        order.sort_unstable_by(|a, b| b.cmp(a));
        order.into_iter().map(|(_, i)| i).collect()
    }

    fn no_replica(&self, tried: &[usize], last: Option<&EngineError>) -> EngineError {
        let down: Vec<String> = self
            .inner
            .replicas
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let why = lock(&r.last_error).clone().unwrap_or_else(|| "down".into());
                if tried.contains(&i) {
                    format!("{} (tried: {why})", r.url)
                } else {
                    format!("{} ({why})", r.url)
                }
            })
            .collect();
        EngineError::Unavailable {
            backend: "openai replicas".into(),
            reason: format!(
                "no healthy replica left{}: {}",
                last.map(|e| format!(" after {e}")).unwrap_or_default(),
                down.join("; ")
            ),
        }
    }

    /// Opens the session's transcript on replica `i`.
    async fn open_on(
        &self,
        i: usize,
        transcript: Vec<ChatMessage>,
        session_adapter: Option<String>,
        max_tokens: Option<usize>,
    ) -> Result<SessionId, EngineError> {
        let r = &self.inner.replicas[i];
        let opened = r
            .engine
            .open(OpenSession {
                prefix: transcript,
                cache_prefix: true,
                session_adapter,
                max_tokens,
            })
            .await?;
        r.sessions.fetch_add(1, Ordering::Relaxed);
        Ok(opened.id)
    }

    /// Moves a session from replica `from` (its session `old` there) to replica `to`: the
    /// transcript so far becomes the new session's prefix there. Returns the new session.
    async fn move_session(
        &self,
        session: SessionId,
        from: usize,
        old: SessionId,
        to: usize,
    ) -> Result<SessionId, EngineError> {
        let (transcript, adapter, max_tokens) = {
            let map = lock(&self.inner.sessions);
            let s = map
                .get(&session.0)
                .ok_or(EngineError::UnknownSession(session.0))?;
            (
                s.transcript.clone(),
                s.session_adapter.clone(),
                s.max_tokens,
            )
        };
        let moved = self.open_on(to, transcript, adapter, max_tokens).await?;
        // The old session is client-side state only: closing it cannot fail for a reason
        // worth reporting.
        let _ = self.inner.replicas[from].engine.close(old).await;
        self.inner.failovers.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            session = session.0,
            from = %self.inner.replicas[from].url,
            to = %self.inner.replicas[to].url,
            "session failed over"
        );
        if let Some(s) = lock(&self.inner.sessions).get_mut(&session.0) {
            s.replica = to;
            s.inner = moved;
        }
        Ok(moved)
    }

    /// Marks a session free again (a turn ended, however).
    fn release(&self, session: SessionId) {
        if let Some(s) = lock(&self.inner.sessions).get_mut(&session.0) {
            s.busy = false;
        }
    }
}

async fn probe_forever(set: Weak<SetInner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = set.upgrade() else { return };
        probe_round(&inner).await;
        drop(inner);
    }
}

async fn probe_round(inner: &Arc<SetInner>) {
    // Concurrently: one slow replica must not hold back the verdict on the others.
    let mut probes = tokio::task::JoinSet::new();
    for i in 0..inner.replicas.len() {
        let inner = inner.clone();
        probes.spawn(async move {
            let r = &inner.replicas[i];
            match probe(&inner.probe, &r.url).await {
                Ok(()) => r.mark_up(),
                // Down until a probe succeeds: the probes run, so no time-based return.
                Err(why) => r.mark_down(format!("health probe: {why}"), PROBED_DOWN),
            }
        });
    }
    while probes.join_next().await.is_some() {}
}

/// How long a replica the probe found down stays down without a successful probe.
const PROBED_DOWN: Duration = Duration::from_secs(24 * 3600);

/// `GET {base}/models`: a healthy OpenAI-compatible server lists its models.
async fn probe(client: &reqwest::Client, base: &str) -> Result<(), String> {
    let url = format!("{}/models", base.trim_end_matches('/'));
    let resp = client.get(&url).send().await.map_err(|e| {
        if e.is_timeout() {
            "timed out".to_string()
        } else if e.is_connect() {
            "connection failed".to_string()
        } else {
            "request failed".to_string()
        }
    })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|_| "the model list is not JSON".to_string())?;
    if body.get("data").is_some_and(|d| d.is_array()) {
        Ok(())
    } else {
        Err("the reply is not an OpenAI model list".into())
    }
}

#[async_trait]
impl Engine for ReplicaSet {
    fn info(&self) -> &ModelInfo {
        &self.inner.info
    }

    async fn open(&self, req: OpenSession) -> Result<Opened, EngineError> {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let Some(&first) = self.candidates(id, &[]).first() else {
            return Err(self.no_replica(&[], None));
        };
        let inner = self
            .open_on(
                first,
                req.prefix.clone(),
                req.session_adapter.clone(),
                req.max_tokens,
            )
            .await?;
        lock(&self.inner.sessions).insert(
            id,
            Routed {
                replica: first,
                inner,
                transcript: req.prefix,
                session_adapter: req.session_adapter,
                max_tokens: req.max_tokens,
                usage: TokenUsage::default(),
                turns: 0,
                busy: false,
            },
        );
        Ok(Opened {
            id: SessionId(id),
            usage: TokenUsage::default(),
            prefix_hit: false,
        })
    }

    async fn turn(&self, session: SessionId, turn: Turn) -> Result<TurnOutput, EngineError> {
        let start = Instant::now();
        // The session id is its hashing key.
        let key = session.0;
        let (mut replica, mut inner) = {
            let mut map = lock(&self.inner.sessions);
            let s = map
                .get_mut(&session.0)
                .ok_or(EngineError::UnknownSession(session.0))?;
            if s.busy {
                return Err(EngineError::SessionBusy(session.0));
            }
            s.busy = true;
            (s.replica, s.inner)
        };
        // A replica the probe marked down since the last turn: move before sending, rather
        // than wait for the turn to time out there.
        if !self.inner.replicas[replica].healthy(Instant::now()) {
            if let Some(&next) = self.candidates(key, &[replica]).first() {
                match self.move_session(session, replica, inner, next).await {
                    Ok(moved) => (replica, inner) = (next, moved),
                    Err(e) => {
                        self.release(session);
                        return Err(e);
                    }
                }
            }
        }
        let mut tried = vec![replica];
        let result = loop {
            let mut attempt = turn.clone();
            if let Some(d) = turn.deadline {
                let left = d.saturating_sub(start.elapsed());
                if left.is_zero() {
                    break Err(EngineError::DeadlineExceeded(d.as_millis() as u64));
                }
                attempt.deadline = Some(left);
            }
            let r = &self.inner.replicas[replica];
            match r.engine.turn(inner, attempt).await {
                Ok(out) => {
                    if out.generation.is_some() {
                        r.turns.fetch_add(1, Ordering::Relaxed);
                    }
                    break Ok(out);
                }
                Err(e) if is_replica_fault(&e) => {
                    r.failures.fetch_add(1, Ordering::Relaxed);
                    r.mark_down(e.to_string(), self.inner.cooldown);
                    let Some(&next) = self.candidates(key, &tried).first() else {
                        break Err(self.no_replica(&tried, Some(&e)));
                    };
                    let moved = match self.move_session(session, replica, inner, next).await {
                        Ok(id) => id,
                        Err(e) => break Err(e),
                    };
                    (replica, inner) = (next, moved);
                    tried.push(next);
                }
                Err(e) => break Err(e),
            }
        };
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                self.release(session);
                return Err(e);
            }
        };
        let mut map = lock(&self.inner.sessions);
        if let Some(s) = map.get_mut(&session.0) {
            s.transcript.extend(turn.messages);
            if let Some(g) = &out.generation {
                s.transcript
                    .push(ChatMessage::new("assistant", g.text.clone()));
            }
            s.usage += out.usage;
            s.turns += 1;
            s.busy = false;
        }
        Ok(out)
    }

    async fn trim(&self, session: SessionId, keep: usize) -> Result<(), EngineError> {
        let (replica, inner) = {
            let map = lock(&self.inner.sessions);
            let s = map
                .get(&session.0)
                .ok_or(EngineError::UnknownSession(session.0))?;
            (s.replica, s.inner)
        };
        self.inner.replicas[replica].engine.trim(inner, keep).await
    }

    async fn close(&self, session: SessionId) -> Result<SessionStats, EngineError> {
        let s = lock(&self.inner.sessions)
            .remove(&session.0)
            .ok_or(EngineError::UnknownSession(session.0))?;
        let on_replica = self.inner.replicas[s.replica].engine.close(s.inner).await?;
        Ok(SessionStats {
            usage: s.usage,
            turns: s.turns,
            tokens: on_replica.tokens,
        })
    }

    async fn stats(&self) -> Result<EngineStats, EngineError> {
        let mut total = EngineStats {
            sessions_open: lock(&self.inner.sessions).len(),
            ..Default::default()
        };
        for r in &self.inner.replicas {
            let s = r.engine.stats().await?;
            total.prefix_hits += s.prefix_hits;
            total.prefix_misses += s.prefix_misses;
            total.tokens_computed += s.tokens_computed;
            total.tokens_reused += s.tokens_reused;
            total.tokens_generated += s.tokens_generated;
            total.decode_calls += s.decode_calls;
        }
        Ok(total)
    }

    async fn count_tokens(&self, messages: Vec<ChatMessage>) -> Result<usize, EngineError> {
        self.inner.replicas[0].engine.count_tokens(messages).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The property the module's doc claims: losing a replica moves only the sessions that
    /// were on it; every other session keeps its replica (and its prefix cache).
    #[test]
    fn losing_a_replica_moves_only_its_own_sessions() {
        let cfg = RemoteConfig {
            replicas: (1..=3)
                .map(|p| format!("http://127.0.0.1:{p}/v1"))
                .collect(),
            ..RemoteConfig::openai("", "m")
        };
        let set = ReplicaSet::new(&cfg, None).unwrap();
        let mut on = [0usize; 3];
        for key in 0..3_000u64 {
            let before = set.candidates(key, &[])[0];
            on[before] += 1;
            let after = set.candidates(key, &[2])[0];
            if before != 2 {
                assert_eq!(
                    after, before,
                    "session {key} moved although its replica stayed"
                );
            } else {
                assert_ne!(after, 2);
            }
        }
        // And the sessions spread over all three (each gets roughly a third).
        assert!(on.iter().all(|&n| n > 800), "{on:?}");
    }
}
