//! Client-side sessions. A remote server holds no transcript for us, so a session is the
//! transcript itself: `turn` appends to it and each generation sends all of it. The server's
//! prefix cache (vLLM automatic prefix caching, Anthropic prompt caching) is what keeps
//! re-sending cheap; the usage it reports shows how much was reused.
//!
//! A failed turn leaves the transcript as it was, so the caller may retry the same turn.

use careflow_core::TokenUsage;
use careflow_engine::{ChatMessage, EngineError, SessionId, SessionStats};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Token estimate for text we have not sent: about four bytes per token for English with
/// BPE vocabularies. Only an estimate; a server's count replaces it after each generation.
pub fn estimate_tokens(bytes: usize) -> usize {
    bytes.div_ceil(4)
}

pub fn message_bytes(messages: &[ChatMessage]) -> usize {
    messages
        .iter()
        .map(|m| m.role.len() + m.content.len())
        .sum()
}

#[derive(Debug)]
struct Session {
    transcript: Vec<ChatMessage>,
    prefix_len: usize,
    adapter: Option<String>,
    max_tokens: Option<usize>,
    usage: TokenUsage,
    turns: u64,
    /// Tokens of the transcript as the server counted them at the last generation
    /// (prompt + completion) ...
    counted_tokens: usize,
    /// ... and bytes appended since, estimated.
    pending_bytes: usize,
    busy: bool,
}

impl Session {
    fn tokens(&self) -> usize {
        self.counted_tokens + estimate_tokens(self.pending_bytes)
    }
}

/// What a turn needs to build its request.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub transcript: Vec<ChatMessage>,
    pub prefix_len: usize,
    pub adapter: Option<String>,
    pub max_tokens: Option<usize>,
    pub tokens: usize,
}

#[derive(Debug, Default)]
pub struct Sessions {
    next: AtomicU64,
    map: Mutex<HashMap<u64, Session>>,
}

/// Marks a session busy for the life of one turn; dropping it (turn finished, failed or its
/// future cancelled) frees the session again.
pub struct TurnGuard<'a> {
    sessions: &'a Sessions,
    id: u64,
}

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.sessions.lock().get_mut(&self.id) {
            s.busy = false;
        }
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn open(
        &self,
        prefix: Vec<ChatMessage>,
        adapter: Option<String>,
        max_tokens: Option<usize>,
    ) -> SessionId {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let pending_bytes = message_bytes(&prefix);
        let session = Session {
            prefix_len: prefix.len(),
            transcript: prefix,
            adapter,
            max_tokens,
            usage: TokenUsage::default(),
            turns: 0,
            counted_tokens: 0,
            pending_bytes,
            busy: false,
        };
        self.lock().insert(id, session);
        SessionId(id)
    }

    /// Claims the session for one turn and copies what the request needs.
    pub fn begin(&self, id: SessionId) -> Result<(TurnGuard<'_>, Snapshot), EngineError> {
        let mut map = self.lock();
        let s = map
            .get_mut(&id.0)
            .ok_or(EngineError::UnknownSession(id.0))?;
        if s.busy {
            return Err(EngineError::SessionBusy(id.0));
        }
        s.busy = true;
        let snap = Snapshot {
            transcript: s.transcript.clone(),
            prefix_len: s.prefix_len,
            adapter: s.adapter.clone(),
            max_tokens: s.max_tokens,
            tokens: s.tokens(),
        };
        drop(map);
        Ok((
            TurnGuard {
                sessions: self,
                id: id.0,
            },
            snap,
        ))
    }

    /// Records a finished turn: its messages, the reply (when it generated), the usage, and the
    /// server's token count of the whole transcript when it reported one. Returns the session's
    /// tokens now.
    pub fn commit(
        &self,
        id: SessionId,
        messages: Vec<ChatMessage>,
        reply: Option<ChatMessage>,
        usage: TokenUsage,
        counted: Option<usize>,
    ) -> Result<usize, EngineError> {
        let mut map = self.lock();
        let s = map
            .get_mut(&id.0)
            .ok_or(EngineError::UnknownSession(id.0))?;
        match counted {
            Some(n) => {
                s.counted_tokens = n;
                s.pending_bytes = 0;
            }
            None => s.pending_bytes += message_bytes(&messages),
        }
        s.transcript.extend(messages);
        s.transcript.extend(reply);
        s.usage += usage;
        s.turns += 1;
        Ok(s.tokens())
    }

    pub fn tokens(&self, id: SessionId) -> Result<usize, EngineError> {
        self.lock()
            .get(&id.0)
            .map(Session::tokens)
            .ok_or(EngineError::UnknownSession(id.0))
    }

    /// Removes the session. A turn still in flight on it fails with `UnknownSession` when it
    /// tries to record its result.
    pub fn close(&self, id: SessionId) -> Result<SessionStats, EngineError> {
        let s = self
            .lock()
            .remove(&id.0)
            .ok_or(EngineError::UnknownSession(id.0))?;
        Ok(SessionStats {
            usage: s.usage,
            turns: s.turns,
            tokens: s.tokens(),
        })
    }

    pub fn open_count(&self) -> usize {
        self.lock().len()
    }
}
