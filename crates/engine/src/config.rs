//! Engine configuration: plain data, checked and turned into a running engine by [`EngineConfig::build`].

use crate::{EmbeddedEngine, EngineError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// A LoRA adapter to load at start-up (GGUF LoRA format). `path` is the `.gguf` file, or its
/// manifest (`.json`, written by `careflow distill train`): the adapter is then loaded by
/// manifest and refused when it was trained for another base model (see [`crate::manifest`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdapterConfig {
    pub name: String,
    pub path: PathBuf,
    #[serde(default = "one")]
    pub scale: f32,
}

fn one() -> f32 {
    1.0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Path of the GGUF model.
    pub model: PathBuf,
    /// Threads for decoding. Never more than the cores that are free: ggml's threads spin at
    /// barriers and collapse 10-100x when another process competes for a core.
    /// `None`: all available cores.
    pub threads: Option<usize>,
    /// Total KV cells (unified across sessions; forked prefixes share cells).
    pub kv_cells: usize,
    /// Sequences in the context: sessions plus cached prefixes.
    pub max_sequences: usize,
    /// Default token limit of one session.
    pub session_max_tokens: usize,
    /// At most this many prefixes stay cached (LRU beyond it, or when the KV budget needs room).
    pub prefix_cache_entries: usize,
    /// Tokens per decode call.
    pub batch_tokens: usize,
    /// Prefill tokens per scheduler step while other sessions are generating: bounds how long a
    /// long prompt can hold back everyone else's next token.
    pub prefill_chunk: usize,
    /// How long an `open` may wait for a free sequence or KV budget before it fails as overloaded.
    pub admission_timeout_ms: u64,
    pub adapters: Vec<AdapterConfig>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            model: PathBuf::new(),
            threads: None,
            kv_cells: 32768,
            max_sequences: 16,
            session_max_tokens: 4096,
            prefix_cache_entries: 4,
            batch_tokens: 512,
            prefill_chunk: 128,
            admission_timeout_ms: 60_000,
            adapters: Vec::new(),
        }
    }
}

impl EngineConfig {
    pub fn for_model(model: impl Into<PathBuf>) -> Self {
        EngineConfig {
            model: model.into(),
            ..Default::default()
        }
    }

    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }

    pub fn admission_timeout(&self) -> Duration {
        Duration::from_millis(self.admission_timeout_ms)
    }

    /// Checks the numbers fit together.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |m: String| Err(EngineError::Config(m));
        if self.max_sequences < 1 || self.max_sequences > 256 {
            return bad(format!(
                "max_sequences: {} is outside 1..=256",
                self.max_sequences
            ));
        }
        if self.session_max_tokens < 16 || self.session_max_tokens > self.kv_cells {
            return bad(format!(
                "session_max_tokens: {} must be between 16 and kv_cells ({})",
                self.session_max_tokens, self.kv_cells
            ));
        }
        if self.batch_tokens < 8 || self.prefill_chunk < 1 || self.prefill_chunk > self.batch_tokens
        {
            return bad(format!(
                "batch_tokens ({}) must be >= 8 and prefill_chunk ({}) between 1 and batch_tokens",
                self.batch_tokens, self.prefill_chunk
            ));
        }
        if self.threads == Some(0) {
            return bad("threads: must be at least 1".into());
        }
        let mut names = std::collections::HashSet::new();
        for a in &self.adapters {
            if !names.insert(a.name.as_str()) {
                return bad(format!("adapters: name `{}` appears twice", a.name));
            }
        }
        Ok(())
    }

    /// Starts the embedded engine: loads the model and adapters on the engine thread. Adapters
    /// given by manifest (or with one beside them) are checked against the model first.
    pub fn build(mut self) -> Result<EmbeddedEngine, EngineError> {
        self.validate()?;
        self.adapters = crate::manifest::resolve_adapters(&self.model, &self.adapters)?;
        EmbeddedEngine::start(self)
    }
}
