//! The engine thread: owns the llama.cpp model, adapters and context, and schedules every
//! session's work into shared decode calls.
//!
//! Scheduling, one loop iteration:
//! 1. take commands; admit queued `open`s while a sequence and KV budget are free (evicting
//!    unused cached prefixes, least recently used first); fail those that waited too long;
//! 2. pick the next adapter group round-robin (an adapter applies to a whole decode call, so
//!    sessions that need different adapters cannot share one);
//! 3. fill one batch: one token for each generating session of the group, then prefill chunks
//!    shared fairly among the group's prefilling sessions (a smaller budget while anyone is
//!    generating, so a long prompt cannot stall the others' next token);
//! 4. decode, then sample each generating session from its row of logits.
//!
//! Invariant: a session's `tokens` are exactly the tokens in its KV sequence, position = index.
//! Tokens sampled but not yet decoded (the last generated token, the end-of-turn markup) wait in
//! `pending_tail` and are decoded at the start of the next turn.

use super::sampler::{Active, ConstraintCompiler};
use super::template::Templates;
use super::{Command, Reply};
use crate::api::*;
use crate::{EngineConfig, EngineError};
use careflow_core::TokenUsage;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{mpsc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// llama.cpp's backend initialises once per process; every engine shares it.
fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Backend(e.clone()))
}

pub(crate) fn spawn(
    config: EngineConfig,
) -> Result<(mpsc::Sender<Command>, ModelInfo, JoinHandle<()>), EngineError> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("careflow-engine".into())
        .spawn(move || run(config, rx, ready_tx))
        .map_err(|e| EngineError::Backend(format!("cannot start the engine thread: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok(info)) => Ok((tx, info, thread)),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(EngineError::Backend(
                "the engine thread died while starting".into(),
            ))
        }
    }
}

fn run(
    config: EngineConfig,
    rx: mpsc::Receiver<Command>,
    ready: mpsc::SyncSender<Result<ModelInfo, EngineError>>,
) {
    let loaded = (|| {
        let backend = backend()?;
        let path = &config.model;
        if !path.is_file() {
            return Err(EngineError::ModelNotFound(path.clone()));
        }
        crate::gguf::check_header(path).map_err(|reason| EngineError::ModelCorrupt {
            path: path.clone(),
            reason,
        })?;
        let mut model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|e| EngineError::ModelCorrupt {
                path: path.clone(),
                reason: format!("llama.cpp could not load it ({e})"),
            })?;
        let mut adapters = Vec::new();
        for a in &config.adapters {
            let fail = |reason: String| EngineError::AdapterLoad {
                name: a.name.clone(),
                path: a.path.clone(),
                reason,
            };
            if !a.path.is_file() {
                return Err(fail("file not found".into()));
            }
            crate::gguf::check_header(&a.path).map_err(fail)?;
            let adapter = model.lora_adapter_init(&a.path).map_err(|e| {
                fail(format!(
                    "llama.cpp refused it ({e}); is it an adapter for this base model?"
                ))
            })?;
            adapters.push((a.name.clone(), a.scale, adapter));
        }
        Ok((backend, model, adapters))
    })();
    let (backend, model, adapters) = match loaded {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let threads = config.threads();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(config.kv_cells as u32))
        .with_n_batch(config.batch_tokens as u32)
        .with_n_ubatch(config.batch_tokens as u32)
        .with_n_seq_max(config.max_sequences as u32)
        .with_kv_unified(true)
        .with_n_threads(threads as i32)
        .with_n_threads_batch(threads as i32);
    let ctx = match model.new_context(backend, params) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(EngineError::Backend(format!(
                "cannot create a context ({e}); lower kv_cells or max_sequences"
            ))));
            return;
        }
    };
    let templates = match Templates::from_model(&model) {
        Ok(t) => t,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let info = ModelInfo {
        name: config
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: config.model.display().to_string(),
        n_vocab: model.n_vocab() as usize,
        n_ctx_train: model.n_ctx_train() as usize,
        adapters: adapters.iter().map(|(n, _, _)| n.clone()).collect(),
        threads,
    };
    if ready.send(Ok(info)).is_err() {
        return;
    }
    let mut worker = Worker::new(config, &model, ctx, adapters, templates);
    worker.serve(rx);
}

struct Session {
    seq: i32,
    tokens: Vec<LlamaToken>,
    pending_tail: Vec<LlamaToken>,
    max_tokens: usize,
    /// KV cells reserved for this session (its limit minus any shared prefix).
    reserve: usize,
    prefix: Option<u64>,
    adapter: Option<usize>,
    busy: bool,
    stats: SessionStats,
}

struct Prefix {
    seq: i32,
    tokens: Vec<LlamaToken>,
    /// Live sessions forked from (or waiting for) this prefix.
    refs: usize,
    last_used: u64,
    ready: bool,
    /// Sessions waiting for the prefix to be computed: (session, reply, whether it caused it).
    waiters: Vec<(u64, Reply<Opened>, bool)>,
}

struct PendingOpen {
    req: OpenSession,
    adapter: Option<usize>,
    tokens: Vec<LlamaToken>,
    reply: Reply<Opened>,
    since: Instant,
}

enum Target {
    Session(u64),
    Prefix(u64),
}

enum Done {
    Turn(Reply<TurnOutput>),
    /// Prefill of a session opened without the prefix cache.
    Open(Reply<Opened>),
    /// Prefill of a cached prefix; its waiters are answered on completion.
    Prefix,
}

struct Gen {
    max_tokens: usize,
    constraint: Active,
    tokens: Vec<LlamaToken>,
    logprobs: Vec<f32>,
    /// Sampled, to be decoded in the next batch.
    next: Option<LlamaToken>,
    /// The final sampled token, never decoded because generation stopped after it.
    undecoded: Option<LlamaToken>,
    /// Where the text goes as it is sampled, and bytes of a character not yet complete.
    stream: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    unsent: Vec<u8>,
}

impl Gen {
    /// Sends the whole characters of `unsent` (all of it, lossily, when `flush`). Returns
    /// false when the receiver is gone.
    fn send_text(&mut self, flush: bool) -> bool {
        let Some(tx) = &self.stream else {
            return true;
        };
        let n = match std::str::from_utf8(&self.unsent) {
            Ok(_) => self.unsent.len(),
            // A character cut at the end: keep its first bytes for the next token.
            Err(e) if e.error_len().is_none() && !flush => e.valid_up_to(),
            Err(_) => self.unsent.len(),
        };
        if n == 0 {
            return !tx.is_closed();
        }
        let text = String::from_utf8_lossy(&self.unsent[..n]).into_owned();
        self.unsent.drain(..n);
        tx.send(text).is_ok()
    }
}

struct Job {
    target: Target,
    seq: i32,
    adapter: Option<usize>,
    feed: Vec<LlamaToken>,
    fed: usize,
    /// Position of the next token written to the sequence.
    pos: usize,
    gen: Option<Gen>,
    return_logits: bool,
    logits: Option<Vec<f32>>,
    usage: TokenUsage,
    started: Instant,
    deadline: Option<(Instant, Duration)>,
    done: Done,
}

impl Job {
    fn reply_closed(&self) -> bool {
        match &self.done {
            Done::Turn(r) => r.is_closed(),
            Done::Open(r) => r.is_closed(),
            Done::Prefix => false,
        }
    }
}

enum Entry {
    Prefill {
        job: usize,
        n: usize,
        row: Option<i32>,
    },
    Gen {
        job: usize,
        row: i32,
    },
}

struct Worker<'m> {
    config: EngineConfig,
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    adapters: Vec<(String, f32, LlamaLoraAdapter)>,
    active_adapter: Option<usize>,
    templates: Templates,
    constraints: ConstraintCompiler,
    batch: LlamaBatch<'static>,
    free_seqs: Vec<i32>,
    sessions: HashMap<u64, Session>,
    prefixes: HashMap<u64, Prefix>,
    pending: VecDeque<PendingOpen>,
    jobs: Vec<Job>,
    next_session: u64,
    tick: u64,
    group_cursor: usize,
    stats: EngineStats,
}

type Fail = (usize, EngineError);

impl<'m> Worker<'m> {
    fn new(
        config: EngineConfig,
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        adapters: Vec<(String, f32, LlamaLoraAdapter)>,
        templates: Templates,
    ) -> Self {
        let batch = LlamaBatch::new(config.batch_tokens, 1);
        let free_seqs = (0..config.max_sequences as i32).rev().collect();
        let stats = EngineStats {
            kv_cells_total: config.kv_cells,
            ..Default::default()
        };
        Worker {
            config,
            model,
            ctx,
            adapters,
            active_adapter: None,
            templates,
            constraints: ConstraintCompiler::default(),
            batch,
            free_seqs,
            sessions: HashMap::new(),
            prefixes: HashMap::new(),
            pending: VecDeque::new(),
            jobs: Vec::new(),
            next_session: 1,
            tick: 0,
            group_cursor: 0,
            stats,
        }
    }

    fn serve(&mut self, rx: mpsc::Receiver<Command>) {
        loop {
            if self.jobs.is_empty() {
                let next = if self.pending.is_empty() {
                    rx.recv().map_err(|_| ())
                } else {
                    match rx.recv_timeout(Duration::from_millis(50)) {
                        Ok(c) => Ok(c),
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            self.admit();
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => Err(()),
                    }
                };
                match next {
                    Ok(Command::Shutdown) | Err(()) => return self.shutdown(),
                    Ok(cmd) => self.handle(cmd),
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(Command::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => {
                        return self.shutdown()
                    }
                    Ok(cmd) => self.handle(cmd),
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            self.admit();
            self.step();
        }
    }

    fn shutdown(&mut self) {
        for job in self.jobs.drain(..) {
            match job.done {
                Done::Turn(r) => drop(r.send(Err(EngineError::Stopped))),
                Done::Open(r) => drop(r.send(Err(EngineError::Stopped))),
                Done::Prefix => {}
            }
        }
        for p in self.pending.drain(..) {
            let _ = p.reply.send(Err(EngineError::Stopped));
        }
        for (_, prefix) in self.prefixes.drain() {
            for (_, r, _) in prefix.waiters {
                let _ = r.send(Err(EngineError::Stopped));
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Open(req, reply, since) => match self.prepare_open(&req) {
                Ok((adapter, tokens)) => self.pending.push_back(PendingOpen {
                    req,
                    adapter,
                    tokens,
                    reply,
                    since,
                }),
                Err(e) => drop(reply.send(Err(e))),
            },
            Command::Turn(id, turn, reply) => {
                if let Err((reply, e)) = self.start_turn(id, turn, reply) {
                    let _ = reply.send(Err(e));
                }
            }
            Command::Trim(id, keep, reply) => {
                let _ = reply.send(self.trim(id, keep));
            }
            Command::Close(id, reply) => {
                let _ = reply.send(self.close(id));
            }
            Command::Stats(reply) => {
                let mut s = self.stats.clone();
                s.sessions_open = self.sessions.len();
                s.sessions_queued = self.pending.len();
                s.prefix_entries = self.prefixes.len();
                s.kv_cells_reserved = self.reserved_cells();
                let _ = reply.send(Ok(s));
            }
            Command::CountTokens(messages, reply) => {
                let n = self
                    .templates
                    .tokenize(self.model, &messages, false, true)
                    .map(|t| t.len());
                let _ = reply.send(n);
            }
            Command::Shutdown => {}
        }
    }

    fn adapter_index(&self, name: Option<&str>) -> Result<Option<usize>, EngineError> {
        let Some(name) = name else { return Ok(None) };
        self.adapters
            .iter()
            .position(|(n, _, _)| n == name)
            .map(Some)
            .ok_or_else(|| {
                let known: Vec<&str> = self.adapters.iter().map(|(n, _, _)| n.as_str()).collect();
                EngineError::UnknownAdapter(
                    name.to_string(),
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    },
                )
            })
    }

    fn session_limit(&self, req: &OpenSession) -> usize {
        req.max_tokens
            .unwrap_or(self.config.session_max_tokens)
            .min(self.config.kv_cells)
            .min(self.model.n_ctx_train() as usize)
    }

    fn prepare_open(
        &mut self,
        req: &OpenSession,
    ) -> Result<(Option<usize>, Vec<LlamaToken>), EngineError> {
        let adapter = self.adapter_index(req.session_adapter.as_deref())?;
        let tokens = self
            .templates
            .tokenize(self.model, &req.prefix, false, true)?;
        let limit = self.session_limit(req);
        if tokens.len() >= limit {
            return Err(EngineError::ContextOverflow {
                needed: tokens.len(),
                limit,
            });
        }
        Ok((adapter, tokens))
    }

    fn reserved_cells(&self) -> usize {
        self.sessions.values().map(|s| s.reserve).sum::<usize>()
            + self
                .prefixes
                .values()
                .map(|p| p.tokens.len())
                .sum::<usize>()
    }

    fn prefix_key(tokens: &[LlamaToken], adapter: Option<usize>) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        adapter.hash(&mut h);
        for t in tokens {
            t.0.hash(&mut h);
        }
        h.finish()
    }

    /// Drops the least recently used prefix that no session holds. Returns false if none.
    fn evict_one_prefix(&mut self) -> bool {
        let victim = self
            .prefixes
            .iter()
            .filter(|(_, p)| p.ready && p.refs == 0)
            .min_by_key(|(_, p)| p.last_used)
            .map(|(k, _)| *k);
        let Some(key) = victim else { return false };
        if let Some(p) = self.prefixes.remove(&key) {
            let _ = self.ctx.kv_cache_seq_rm(p.seq, None, None);
            self.free_seqs.push(p.seq);
            self.stats.prefix_evictions += 1;
        }
        true
    }

    /// Admits queued opens in order while resources allow; fails those that waited too long.
    fn admit(&mut self) {
        let timeout = self.config.admission_timeout();
        while let Some(front) = self.pending.front() {
            if front.reply.is_closed() {
                self.pending.pop_front();
                continue;
            }
            let limit = self.session_limit(&front.req);
            let since = front.since;
            let cached = front.req.cache_prefix && !front.tokens.is_empty();
            let key = Self::prefix_key(&front.tokens, front.adapter);
            let present = cached && self.prefixes.contains_key(&key);
            let seqs_needed = 1 + usize::from(cached && !present);
            let prefix_len = front.tokens.len();
            let cells_needed = if cached {
                limit - prefix_len + if present { 0 } else { prefix_len }
            } else {
                limit
            };
            let fits = |w: &Self| {
                w.free_seqs.len() >= seqs_needed
                    && w.reserved_cells() + cells_needed <= w.config.kv_cells
            };
            let mut ok = fits(self);
            while !ok && self.evict_one_prefix() {
                ok = fits(self);
            }
            // Eviction may have removed the very prefix we counted on; re-plan next round.
            if ok && present && !self.prefixes.contains_key(&key) {
                continue;
            }
            if ok {
                let Some(p) = self.pending.pop_front() else {
                    break;
                };
                self.open_admitted(p, limit, cached, key);
            } else if since.elapsed() > timeout {
                if let Some(p) = self.pending.pop_front() {
                    let _ = p.reply.send(Err(EngineError::Overloaded {
                        waited_ms: p.since.elapsed().as_millis() as u64,
                    }));
                }
            } else {
                break;
            }
        }
        // Requests behind the head also time out.
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].since.elapsed() > timeout {
                if let Some(p) = self.pending.remove(i) {
                    let _ = p.reply.send(Err(EngineError::Overloaded {
                        waited_ms: p.since.elapsed().as_millis() as u64,
                    }));
                }
            } else {
                i += 1;
            }
        }
    }

    fn open_admitted(&mut self, p: PendingOpen, limit: usize, cached: bool, key: u64) {
        let Some(seq) = self.free_seqs.pop() else {
            let _ = p.reply.send(Err(EngineError::Overloaded { waited_ms: 0 }));
            return;
        };
        let id = self.next_session;
        self.next_session += 1;
        let shared = if cached { p.tokens.len() } else { 0 };
        self.sessions.insert(
            id,
            Session {
                seq,
                tokens: Vec::new(),
                pending_tail: Vec::new(),
                max_tokens: limit,
                reserve: limit - shared,
                prefix: cached.then_some(key),
                adapter: p.adapter,
                busy: true,
                stats: SessionStats::default(),
            },
        );
        if p.tokens.is_empty() {
            if let Some(s) = self.sessions.get_mut(&id) {
                s.busy = false;
            }
            let _ = p.reply.send(Ok(Opened {
                id: SessionId(id),
                usage: TokenUsage::default(),
                prefix_hit: false,
            }));
            return;
        }
        if !cached {
            let n = p.tokens.len() as u64;
            self.jobs.push(Job {
                target: Target::Session(id),
                seq,
                adapter: p.adapter,
                feed: p.tokens,
                fed: 0,
                pos: 0,
                gen: None,
                return_logits: false,
                logits: None,
                usage: TokenUsage {
                    submitted: n,
                    ..Default::default()
                },
                started: Instant::now(),
                deadline: None,
                done: Done::Open(p.reply),
            });
            return;
        }
        self.tick += 1;
        let tick = self.tick;
        if let Some(prefix) = self.prefixes.get_mut(&key) {
            prefix.refs += 1;
            prefix.last_used = tick;
            if prefix.ready {
                self.stats.prefix_hits += 1;
                self.fork(key, id, p.reply, false);
            } else {
                self.stats.prefix_hits += 1;
                prefix.waiters.push((id, p.reply, false));
            }
            return;
        }
        // Miss: compute the prefix into a sequence of its own, then fork it.
        self.stats.prefix_misses += 1;
        let Some(pseq) = self.free_seqs.pop() else {
            self.drop_session(id);
            let _ = p.reply.send(Err(EngineError::Overloaded { waited_ms: 0 }));
            return;
        };
        let n = p.tokens.len();
        self.prefixes.insert(
            key,
            Prefix {
                seq: pseq,
                tokens: p.tokens.clone(),
                refs: 1,
                last_used: tick,
                ready: false,
                waiters: vec![(id, p.reply, true)],
            },
        );
        self.jobs.push(Job {
            target: Target::Prefix(key),
            seq: pseq,
            adapter: p.adapter,
            feed: p.tokens,
            fed: 0,
            pos: 0,
            gen: None,
            return_logits: false,
            logits: None,
            usage: TokenUsage {
                submitted: n as u64,
                ..Default::default()
            },
            started: Instant::now(),
            deadline: None,
            done: Done::Prefix,
        });
    }

    /// Forks a ready prefix into session `id`: the cells are shared, nothing is computed.
    fn fork(&mut self, key: u64, id: u64, reply: Reply<Opened>, computed_here: bool) {
        let Some(prefix) = self.prefixes.get(&key) else {
            let _ = reply.send(Err(EngineError::Backend("prefix vanished".into())));
            return;
        };
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if let Err(e) = self
            .ctx
            .kv_cache_seq_cp(prefix.seq, session.seq, None, None)
        {
            let _ = reply.send(Err(EngineError::Backend(e.to_string())));
            return;
        }
        session.tokens = prefix.tokens.clone();
        session.busy = false;
        let n = prefix.tokens.len() as u64;
        let usage = if computed_here {
            TokenUsage {
                submitted: n,
                computed: n,
                ..Default::default()
            }
        } else {
            self.stats.tokens_reused += n;
            TokenUsage {
                submitted: n,
                reused: n,
                ..Default::default()
            }
        };
        session.stats.usage += usage;
        let _ = reply.send(Ok(Opened {
            id: SessionId(id),
            usage,
            prefix_hit: !computed_here,
        }));
    }

    fn start_turn(
        &mut self,
        id: SessionId,
        turn: Turn,
        reply: Reply<TurnOutput>,
    ) -> Result<(), (Reply<TurnOutput>, EngineError)> {
        let adapter_name = turn.adapter.clone();
        let adapter = match self.adapter_index(adapter_name.as_deref()) {
            Ok(a) => a,
            Err(e) => return Err((reply, e)),
        };
        let Some(session) = self.sessions.get(&id.0) else {
            return Err((reply, EngineError::UnknownSession(id.0)));
        };
        if session.busy {
            return Err((reply, EngineError::SessionBusy(id.0)));
        }
        let at_start = session.tokens.is_empty() && session.pending_tail.is_empty();
        let body = match self.templates.tokenize(
            self.model,
            &turn.messages,
            turn.generate.is_some(),
            at_start,
        ) {
            Ok(t) => t,
            Err(e) => return Err((reply, e)),
        };
        let mut feed = session.pending_tail.clone();
        feed.extend(body);
        let max_gen = turn.generate.as_ref().map_or(0, |g| g.max_tokens);
        let needed = session.tokens.len() + feed.len() + max_gen;
        if needed > session.max_tokens {
            return Err((
                reply,
                EngineError::ContextOverflow {
                    needed,
                    limit: session.max_tokens,
                },
            ));
        }
        if feed.is_empty() {
            if turn.generate.is_some() || turn.return_logits {
                return Err((
                    reply,
                    EngineError::InvalidInput("the turn has no tokens to decode".into()),
                ));
            }
            let out = TurnOutput {
                usage: TokenUsage::default(),
                generation: None,
                logits: None,
                session_tokens: session.tokens.len(),
            };
            let _ = reply.send(Ok(out));
            return Ok(());
        }
        let gen = match &turn.generate {
            Some(g) => {
                if g.max_tokens == 0 {
                    return Err((
                        reply,
                        EngineError::InvalidInput("max_tokens must be at least 1".into()),
                    ));
                }
                match self.constraints.compile(self.model, g.constraint.as_ref()) {
                    Ok(c) => Some(Gen {
                        max_tokens: g.max_tokens,
                        constraint: c,
                        tokens: Vec::new(),
                        logprobs: Vec::new(),
                        next: None,
                        undecoded: None,
                        stream: turn.stream.clone(),
                        unsent: Vec::new(),
                    }),
                    Err(e) => return Err((reply, e)),
                }
            }
            None => None,
        };
        let adapter = adapter.or(session.adapter);
        let seq = session.seq;
        let pos = session.tokens.len();
        if let Some(s) = self.sessions.get_mut(&id.0) {
            s.busy = true;
            s.pending_tail.clear();
        }
        let now = Instant::now();
        self.jobs.push(Job {
            target: Target::Session(id.0),
            seq,
            adapter,
            usage: TokenUsage {
                submitted: feed.len() as u64,
                ..Default::default()
            },
            feed,
            fed: 0,
            pos,
            gen,
            return_logits: turn.return_logits,
            logits: None,
            started: now,
            deadline: turn.deadline.map(|d| (now + d, d)),
            done: Done::Turn(reply),
        });
        Ok(())
    }

    fn trim(&mut self, id: SessionId, keep: usize) -> Result<(), EngineError> {
        let session = self
            .sessions
            .get_mut(&id.0)
            .ok_or(EngineError::UnknownSession(id.0))?;
        if session.busy {
            return Err(EngineError::SessionBusy(id.0));
        }
        if keep > session.tokens.len() {
            return Err(EngineError::InvalidInput(format!(
                "cannot keep {keep} tokens of a session that holds {}",
                session.tokens.len()
            )));
        }
        self.ctx
            .kv_cache_seq_rm(session.seq, Some(keep as u32), None)
            .map_err(|e| EngineError::Backend(e.to_string()))?;
        session.tokens.truncate(keep);
        session.pending_tail.clear();
        Ok(())
    }

    fn close(&mut self, id: SessionId) -> Result<SessionStats, EngineError> {
        if !self.sessions.contains_key(&id.0) {
            return Err(EngineError::UnknownSession(id.0));
        }
        // A turn still running for this session is abandoned.
        if let Some(i) = self
            .jobs
            .iter()
            .position(|j| matches!(j.target, Target::Session(s) if s == id.0))
        {
            let job = self.jobs.remove(i);
            if let Done::Turn(r) = job.done {
                let _ = r.send(Err(EngineError::UnknownSession(id.0)));
            }
        }
        let session = self
            .drop_session(id.0)
            .ok_or(EngineError::UnknownSession(id.0))?;
        let mut stats = session.stats;
        stats.tokens = session.tokens.len();
        Ok(stats)
    }

    fn drop_session(&mut self, id: u64) -> Option<Session> {
        let session = self.sessions.remove(&id)?;
        let _ = self.ctx.kv_cache_seq_rm(session.seq, None, None);
        self.free_seqs.push(session.seq);
        if let Some(key) = session.prefix {
            if let Some(p) = self.prefixes.get_mut(&key) {
                p.refs = p.refs.saturating_sub(1);
            }
        }
        // Keep at most `prefix_cache_entries` prefixes.
        while self.prefixes.len() > self.config.prefix_cache_entries {
            if !self.evict_one_prefix() {
                break;
            }
        }
        Some(session)
    }

    /// One scheduler iteration: one decode call for one adapter group.
    fn step(&mut self) {
        self.expire_jobs();
        if self.jobs.is_empty() {
            return;
        }
        let mut groups: Vec<Option<usize>> = Vec::new();
        for j in &self.jobs {
            if !groups.contains(&j.adapter) {
                groups.push(j.adapter);
            }
        }
        groups.sort();
        self.group_cursor = (self.group_cursor + 1) % groups.len();
        let group = groups[self.group_cursor];

        self.batch.clear();
        let mut entries = Vec::new();
        let mut fails: Vec<Fail> = Vec::new();
        for (i, job) in self.jobs.iter().enumerate() {
            if job.adapter != group {
                continue;
            }
            if let Some(token) = job.gen.as_ref().and_then(|g| g.next) {
                let row = self.batch.n_tokens();
                if let Err(e) = self.batch.add(token, job.pos as i32, &[job.seq], true) {
                    fails.push((i, EngineError::Backend(e.to_string())));
                    continue;
                }
                entries.push(Entry::Gen { job: i, row });
            }
        }
        let generating = !entries.is_empty();
        let room = self.config.batch_tokens - self.batch.n_tokens() as usize;
        let mut budget = if generating {
            self.config.prefill_chunk.min(room)
        } else {
            room
        };
        let prefilling: Vec<usize> = self
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| j.adapter == group && j.fed < j.feed.len())
            .map(|(i, _)| i)
            .collect();
        let share = (budget / prefilling.len().max(1)).max(16);
        for i in prefilling {
            if budget == 0 {
                break;
            }
            let job = &self.jobs[i];
            let n = (job.feed.len() - job.fed).min(share).min(budget);
            let completes = job.fed + n == job.feed.len();
            let want_row = completes && (job.gen.is_some() || job.return_logits);
            let mut row = None;
            for k in 0..n {
                let last = k + 1 == n;
                if last && want_row {
                    row = Some(self.batch.n_tokens());
                }
                if let Err(e) = self.batch.add(
                    job.feed[job.fed + k],
                    (job.pos + k) as i32,
                    &[job.seq],
                    last && want_row,
                ) {
                    fails.push((i, EngineError::Backend(e.to_string())));
                    break;
                }
            }
            budget -= n;
            entries.push(Entry::Prefill { job: i, n, row });
        }
        if self.batch.n_tokens() == 0 {
            self.finish_failures(fails);
            return;
        }
        if self.active_adapter != group {
            let result = match group {
                Some(a) => {
                    let (_, scale, adapter) = &mut self.adapters[a];
                    self.ctx
                        .lora_adapter_set(adapter, *scale)
                        .map_err(|e| e.to_string())
                }
                None => match self.adapters.first_mut() {
                    Some((_, _, adapter)) => self
                        .ctx
                        .lora_adapter_remove(adapter)
                        .map_err(|e| e.to_string()),
                    None => Ok(()),
                },
            };
            if let Err(e) = result {
                for entry in &entries {
                    let (Entry::Prefill { job, .. } | Entry::Gen { job, .. }) = entry;
                    fails.push((*job, EngineError::Backend(format!("adapter switch: {e}"))));
                }
                self.finish_failures(fails);
                return;
            }
            self.active_adapter = group;
        }
        self.stats.decode_calls += 1;
        if entries.len() > 1 {
            self.stats.batched_decode_calls += 1;
        }
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            let err = match e {
                llama_cpp_2::DecodeError::NoKvCacheSlot => EngineError::KvExhausted,
                other => EngineError::Backend(other.to_string()),
            };
            for entry in &entries {
                let (Entry::Prefill { job, .. } | Entry::Gen { job, .. }) = entry;
                let j = &self.jobs[*job];
                // Drop whatever this failed call may have left in the sequence.
                let _ = self.ctx.kv_cache_seq_rm(j.seq, Some(j.pos as u32), None);
                fails.push((*job, clone_err(&err)));
            }
            self.finish_failures(fails);
            return;
        }
        for entry in entries {
            match entry {
                Entry::Prefill { job, n, row } => {
                    if fails.iter().any(|(f, _)| *f == job) {
                        continue;
                    }
                    let j = &mut self.jobs[job];
                    let fed = j.feed[j.fed..j.fed + n].to_vec();
                    j.fed += n;
                    j.pos += n;
                    j.usage.computed += n as u64;
                    self.stats.tokens_computed += n as u64;
                    if let Target::Session(id) = j.target {
                        if let Some(s) = self.sessions.get_mut(&id) {
                            s.tokens.extend(fed);
                        }
                    }
                    if let Some(row) = row {
                        let logits = self.ctx.get_logits_ith(row);
                        let j = &mut self.jobs[job];
                        if j.return_logits {
                            j.logits = Some(logits.to_vec());
                        }
                        if let Err(e) = sample(self.model, j, logits) {
                            fails.push((job, e));
                        }
                    }
                }
                Entry::Gen { job, row } => {
                    let j = &mut self.jobs[job];
                    let Some(token) = j.gen.as_mut().and_then(|g| g.next.take()) else {
                        continue;
                    };
                    j.pos += 1;
                    if let Target::Session(id) = j.target {
                        if let Some(s) = self.sessions.get_mut(&id) {
                            s.tokens.push(token);
                        }
                    }
                    let logits = self.ctx.get_logits_ith(row);
                    if let Err(e) = sample(self.model, &mut self.jobs[job], logits) {
                        fails.push((job, e));
                    }
                }
            }
        }
        self.finish_failures(fails);
        self.complete_finished();
    }

    fn expire_jobs(&mut self) {
        let mut fails = Vec::new();
        for (i, j) in self.jobs.iter().enumerate() {
            if j.reply_closed() {
                fails.push((i, EngineError::Stopped));
            } else if let Some((at, d)) = j.deadline {
                if Instant::now() > at {
                    fails.push((i, EngineError::DeadlineExceeded(d.as_millis() as u64)));
                }
            }
        }
        self.finish_failures(fails);
    }

    /// Answers failed jobs and leaves their sessions usable (tokens == KV cells).
    fn finish_failures(&mut self, mut fails: Vec<Fail>) {
        if fails.is_empty() {
            return;
        }
        fails.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
        fails.dedup_by_key(|(i, _)| *i);
        for (i, err) in fails {
            let job = self.jobs.remove(i);
            match job.target {
                Target::Session(id) => {
                    if let Some(s) = self.sessions.get_mut(&id) {
                        s.busy = false;
                        s.stats.usage += job.usage;
                    }
                }
                Target::Prefix(key) => {
                    if let Some(p) = self.prefixes.remove(&key) {
                        let _ = self.ctx.kv_cache_seq_rm(p.seq, None, None);
                        self.free_seqs.push(p.seq);
                        for (sid, r, _) in p.waiters {
                            self.drop_session(sid);
                            let _ = r.send(Err(clone_err(&err)));
                        }
                    }
                }
            }
            match job.done {
                Done::Turn(r) => drop(r.send(Err(err))),
                Done::Open(r) => {
                    if let Target::Session(id) = job.target {
                        self.drop_session(id);
                    }
                    drop(r.send(Err(err)))
                }
                Done::Prefix => {}
            }
        }
    }

    fn complete_finished(&mut self) {
        let mut i = 0;
        while i < self.jobs.len() {
            let j = &self.jobs[i];
            let prefill_done = j.fed == j.feed.len();
            let gen_done = j.gen.as_ref().is_none_or(|g| g.next.is_none());
            if !(prefill_done && gen_done) {
                i += 1;
                continue;
            }
            let job = self.jobs.remove(i);
            self.complete(job);
        }
    }

    fn complete(&mut self, mut job: Job) {
        job.usage.micros = job.started.elapsed().as_micros() as u64;
        match (job.target, job.done) {
            (Target::Prefix(key), Done::Prefix) => {
                let waiters = match self.prefixes.get_mut(&key) {
                    Some(p) => {
                        p.ready = true;
                        std::mem::take(&mut p.waiters)
                    }
                    None => Vec::new(),
                };
                for (sid, reply, first) in waiters {
                    self.fork(key, sid, reply, first);
                }
            }
            (Target::Session(id), Done::Open(reply)) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.busy = false;
                    s.stats.usage += job.usage;
                }
                let _ = reply.send(Ok(Opened {
                    id: SessionId(id),
                    usage: job.usage,
                    prefix_hit: false,
                }));
            }
            (Target::Session(id), Done::Turn(reply)) => {
                let undecoded = job.gen.as_ref().and_then(|g| g.undecoded);
                if let Some(g) = job.gen.as_mut() {
                    g.send_text(true);
                }
                let generation = job.gen.map(|g| {
                    let pieces: Vec<Vec<u8>> = g
                        .tokens
                        .iter()
                        .map(|t| self.model.vocab().token_to_piece(*t, false, None))
                        .collect();
                    let text = String::from_utf8_lossy(&pieces.concat()).into_owned();
                    let finish = if g.tokens.len() >= g.max_tokens {
                        FinishReason::Length
                    } else {
                        FinishReason::Stop
                    };
                    Generation {
                        text,
                        tokens: g.tokens.iter().map(|t| t.0).collect(),
                        piece_lens: pieces.iter().map(Vec::len).collect(),
                        logprobs: g.logprobs,
                        finish,
                    }
                });
                job.usage.generated = generation.as_ref().map_or(0, |g| g.tokens.len() as u64);
                self.stats.tokens_generated += job.usage.generated;
                let Some(s) = self.sessions.get_mut(&id) else {
                    let _ = reply.send(Err(EngineError::UnknownSession(id)));
                    return;
                };
                if generation.is_some() {
                    // Close the assistant turn. A final token that was sampled but not decoded
                    // goes first; both are decoded at the start of the next turn.
                    s.pending_tail.extend(undecoded);
                    s.pending_tail
                        .extend_from_slice(&self.templates.end_of_turn);
                }
                s.busy = false;
                s.stats.usage += job.usage;
                s.stats.turns += 1;
                let _ = reply.send(Ok(TurnOutput {
                    usage: job.usage,
                    generation,
                    logits: job.logits,
                    session_tokens: s.tokens.len(),
                }));
            }
            _ => {}
        }
    }
}

/// Samples the next token of a generating job from `logits`, or marks it finished.
fn sample(model: &LlamaModel, job: &mut Job, logits: &[f32]) -> Result<(), EngineError> {
    let Some(gen) = job.gen.as_mut() else {
        return Ok(());
    };
    if gen.tokens.len() >= gen.max_tokens || gen.constraint.finished() {
        gen.next = None;
        return Ok(());
    }
    let pick = gen.constraint.pick(logits)?;
    if model.vocab().is_eog(pick.token) {
        gen.next = None;
        return Ok(());
    }
    gen.constraint.accept(pick.token)?;
    gen.tokens.push(pick.token);
    gen.logprobs.push(pick.logprob);
    let mut listening = true;
    if gen.stream.is_some() {
        gen.unsent
            .extend(model.vocab().token_to_piece(pick.token, false, None));
        listening = gen.send_text(false);
    }
    // Decode it next round only if more may follow; otherwise it waits in the session's tail.
    // A stream whose receiver is gone ends the generation: nobody will read the rest.
    let more = listening && gen.tokens.len() < gen.max_tokens && !gen.constraint.finished();
    if more {
        gen.next = Some(pick.token);
    } else {
        gen.undecoded = Some(pick.token);
    }
    Ok(())
}

fn clone_err(e: &EngineError) -> EngineError {
    match e {
        EngineError::KvExhausted => EngineError::KvExhausted,
        other => EngineError::Backend(other.to_string()),
    }
}
