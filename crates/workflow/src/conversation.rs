//! How the steps of one request reach the engine.

use careflow_core::TokenUsage;
use careflow_engine::{
    ChatMessage, Engine, GenerateParams, Generation, OpenSession, SessionId, Turn,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

use crate::WorkflowError;

/// How a request's steps are sent to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Each step opens a fresh sequence and re-sends the whole transcript (an API agent).
    Stateless,
    /// One session per request; steps append; the shared prefix is computed per request.
    Stateful,
    /// One session per request, forked from the shared prefix computed once per process.
    StatefulPrefixCache,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Stateless => "stateless",
            Mode::Stateful => "stateful",
            Mode::StatefulPrefixCache => "stateful+prefix_cache",
        }
    }
}

/// A request's conversation with the engine.
pub struct Conversation {
    engine: Arc<dyn Engine>,
    mode: Mode,
    prefix: Vec<ChatMessage>,
    prefix_tokens: u64,
    transcript: Vec<ChatMessage>,
    session: Option<SessionId>,
    /// Tokens the request's transcript holds (prefix included).
    transcript_tokens: u64,
}

impl Conversation {
    pub fn new(engine: Arc<dyn Engine>, mode: Mode, prefix: Vec<ChatMessage>) -> Self {
        Conversation {
            engine,
            mode,
            prefix,
            prefix_tokens: 0,
            transcript: Vec::new(),
            session: None,
            transcript_tokens: 0,
        }
    }

    /// Tokens of the shared prefix (known after the first step).
    pub fn prefix_tokens(&self) -> u64 {
        self.prefix_tokens
    }

    /// Tokens the transcript holds now, prefix included.
    pub fn transcript_tokens(&self) -> u64 {
        self.transcript_tokens
    }

    /// Appends `messages` (under `adapter`) and, with `generate`, produces the step's reply;
    /// returns it with the tokens this step cost.
    pub async fn step(
        &mut self,
        messages: Vec<ChatMessage>,
        adapter: Option<String>,
        generate: Option<GenerateParams>,
        deadline: Option<Duration>,
    ) -> Result<(Option<Generation>, TokenUsage), WorkflowError> {
        let mut usage = TokenUsage::default();
        let generation;
        match self.mode {
            // An API agent calls the model only for steps that generate; the others just
            // add to the transcript it will re-send.
            Mode::Stateless if generate.is_none() => {
                generation = None;
            }
            Mode::Stateless => {
                let opened = self
                    .engine
                    .open(OpenSession {
                        prefix: self.prefix.clone(),
                        cache_prefix: false,
                        ..Default::default()
                    })
                    .await?;
                self.prefix_tokens = opened.usage.submitted;
                usage += opened.usage;
                let mut all = self.transcript.clone();
                all.extend(messages.iter().cloned());
                let result = self
                    .engine
                    .turn(
                        opened.id,
                        Turn {
                            messages: all,
                            adapter,
                            generate,
                            deadline,
                            ..Default::default()
                        },
                    )
                    .await;
                let _ = self.engine.close(opened.id).await;
                let out = result?;
                usage += out.usage;
                generation = out.generation;
                self.transcript_tokens =
                    out.session_tokens as u64 + u64::from(generation.is_some());
            }
            Mode::Stateful | Mode::StatefulPrefixCache => {
                let id = match self.session {
                    Some(id) => id,
                    None => {
                        let opened = self
                            .engine
                            .open(OpenSession {
                                prefix: self.prefix.clone(),
                                cache_prefix: self.mode == Mode::StatefulPrefixCache,
                                ..Default::default()
                            })
                            .await?;
                        self.prefix_tokens = opened.usage.submitted;
                        usage += opened.usage;
                        self.session = Some(opened.id);
                        opened.id
                    }
                };
                let out = self
                    .engine
                    .turn(
                        id,
                        Turn {
                            messages: messages.clone(),
                            adapter,
                            generate,
                            deadline,
                            ..Default::default()
                        },
                    )
                    .await?;
                usage += out.usage;
                generation = out.generation;
                // The reply's last token waits in the session's tail until the next turn.
                self.transcript_tokens =
                    out.session_tokens as u64 + u64::from(generation.is_some());
            }
        }
        self.transcript.extend(messages);
        if let Some(g) = &generation {
            self.transcript
                .push(ChatMessage::new("assistant", g.text.clone()));
        }
        Ok((generation, usage))
    }

    /// Releases the engine session.
    pub async fn close(&mut self) {
        if let Some(id) = self.session.take() {
            let _ = self.engine.close(id).await;
        }
    }
}
