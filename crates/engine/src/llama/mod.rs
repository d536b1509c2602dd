//! The embedded llama.cpp engine: a handle ([`EmbeddedEngine`]) and the thread it talks to.

mod sampler;
mod template;
mod worker;

use crate::api::*;
use crate::{EngineConfig, EngineError};
use async_trait::async_trait;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::oneshot;

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

pub(crate) enum Command {
    Open(OpenSession, Reply<Opened>, Instant),
    Turn(SessionId, Turn, Reply<TurnOutput>),
    Trim(SessionId, usize, Reply<()>),
    Close(SessionId, Reply<SessionStats>),
    Stats(Reply<EngineStats>),
    CountTokens(Vec<ChatMessage>, Reply<usize>),
    Shutdown,
}

/// A cloneable handle to the engine thread. The thread stops when the last handle is dropped.
#[derive(Clone)]
pub struct EmbeddedEngine {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Command>,
    info: ModelInfo,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Shutdown);
        if let Ok(mut t) = self.thread.lock() {
            if let Some(handle) = t.take() {
                let _ = handle.join();
            }
        }
    }
}

impl EmbeddedEngine {
    /// Loads the model (and adapters) on a new engine thread; returns once it is ready.
    pub fn start(config: EngineConfig) -> Result<Self, EngineError> {
        let (tx, info, thread) = worker::spawn(config)?;
        Ok(EmbeddedEngine {
            inner: Arc::new(Inner {
                tx,
                info,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(make(reply))
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }
}

#[async_trait]
impl Engine for EmbeddedEngine {
    fn info(&self) -> &ModelInfo {
        &self.inner.info
    }

    async fn open(&self, req: OpenSession) -> Result<Opened, EngineError> {
        self.call(|r| Command::Open(req, r, Instant::now())).await
    }

    async fn turn(&self, session: SessionId, turn: Turn) -> Result<TurnOutput, EngineError> {
        self.call(|r| Command::Turn(session, turn, r)).await
    }

    async fn trim(&self, session: SessionId, keep: usize) -> Result<(), EngineError> {
        self.call(|r| Command::Trim(session, keep, r)).await
    }

    async fn close(&self, session: SessionId) -> Result<SessionStats, EngineError> {
        self.call(|r| Command::Close(session, r)).await
    }

    async fn stats(&self) -> Result<EngineStats, EngineError> {
        self.call(Command::Stats).await
    }

    async fn count_tokens(&self, messages: Vec<ChatMessage>) -> Result<usize, EngineError> {
        self.call(|r| Command::CountTokens(messages, r)).await
    }
}
