//! Remote backend configuration: plain data (serde), checked and turned into a running engine by
//! [`RemoteConfig::build`]. The API key is not part of it: the config names the environment
//! variable that holds the key, so a config file can be shared, logged and committed.

use crate::anthropic::AnthropicEngine;
use crate::openai::OpenAiEngine;
use crate::replicas::ReplicaSet;
use crate::secret::ApiKey;
use careflow_engine::{Engine, EngineError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Which wire protocol the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RemoteKind {
    /// OpenAI chat completions: OpenAI itself, vLLM, SGLang, llama.cpp's server...
    #[default]
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
}

impl RemoteKind {
    pub fn label(self) -> &'static str {
        match self {
            RemoteKind::Openai => "openai",
            RemoteKind::Anthropic => "anthropic",
        }
    }
    fn default_key_env(self) -> &'static str {
        match self {
            RemoteKind::Openai => "OPENAI_API_KEY",
            RemoteKind::Anthropic => "ANTHROPIC_API_KEY",
        }
    }
    fn default_base_url(self) -> &'static str {
        match self {
            RemoteKind::Openai => "https://api.openai.com/v1",
            RemoteKind::Anthropic => "https://api.anthropic.com",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteConfig {
    pub kind: RemoteKind,
    /// OpenAI: up to and including the version segment (`http://vllm:8000/v1`); the client posts
    /// to `{base_url}/chat/completions`. Anthropic: the host (`https://api.anthropic.com`); the
    /// client posts to `{base_url}/v1/messages`. Empty: the provider's public endpoint.
    pub base_url: String,
    /// The model name sent when a turn names no adapter.
    pub model: String,
    /// The environment variable holding the API key (`OPENAI_API_KEY` / `ANTHROPIC_API_KEY`
    /// when unset). An OpenAI-compatible server without auth (a local vLLM) needs no key.
    pub api_key_env: Option<String>,
    /// Adapter name -> served model name. vLLM serves each LoRA adapter under its own model
    /// name (`--lora-modules name=path`), so selecting an adapter is choosing the model field.
    pub adapters: BTreeMap<String, String>,
    /// Limit of one HTTP attempt, connection to last body byte.
    pub timeout_ms: u64,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Backoff: the n-th retry waits a random time in `[0, min(backoff_max_ms, backoff_base_ms * 2^n)]`.
    pub backoff_base_ms: u64,
    /// Also caps a server's `Retry-After`.
    pub backoff_max_ms: u64,
    /// Consecutive failed calls (after their retries) that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before it lets one trial call through.
    pub breaker_cooldown_ms: u64,
    /// Ask an OpenAI-compatible server for per-token logprobs (the workflow's confidence
    /// signal). Anthropic has none; ignored there.
    pub logprobs: bool,
    /// OpenAI only: base URLs of several replicas serving the same model (vLLM pods behind no
    /// session-aware router). Each request's session is pinned to one of them, health-probed,
    /// and failed over; see [`crate::replicas`]. Leave `base_url` empty when set.
    pub replicas: Vec<String>,
    /// How often each replica is probed (`GET {base}/models`).
    pub health_interval_ms: u64,
    /// A probe slower than this marks the replica down.
    pub health_timeout_ms: u64,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            kind: RemoteKind::Openai,
            base_url: String::new(),
            model: String::new(),
            api_key_env: None,
            adapters: BTreeMap::new(),
            timeout_ms: 60_000,
            max_attempts: 4,
            backoff_base_ms: 500,
            backoff_max_ms: 20_000,
            breaker_failures: 5,
            breaker_cooldown_ms: 30_000,
            logprobs: true,
            replicas: Vec::new(),
            health_interval_ms: 5_000,
            health_timeout_ms: 2_000,
        }
    }
}

impl RemoteConfig {
    pub fn openai(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        RemoteConfig {
            kind: RemoteKind::Openai,
            base_url: base_url.into(),
            model: model.into(),
            ..Default::default()
        }
    }

    pub fn anthropic(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        RemoteConfig {
            kind: RemoteKind::Anthropic,
            base_url: base_url.into(),
            model: model.into(),
            logprobs: false,
            ..Default::default()
        }
    }

    /// The environment variable the key is read from.
    pub fn key_env(&self) -> &str {
        self.api_key_env
            .as_deref()
            .unwrap_or_else(|| self.kind.default_key_env())
    }

    /// Checks the config; returns the parsed base URL (the provider's default when empty).
    pub fn validate(&self) -> Result<url::Url, EngineError> {
        let bad = |field: &str, why: String| EngineError::Config(format!("{field}: {why}"));
        let raw = if self.base_url.trim().is_empty() {
            self.kind.default_base_url()
        } else {
            self.base_url.trim()
        };
        // Never echo the URL back: it may carry credentials (`https://user:pass@host`).
        let url = url::Url::parse(raw).map_err(|e| bad("base_url", format!("not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad(
                "base_url",
                "must be an http:// or https:// URL with a host".into(),
            ));
        }
        if self.model.trim().is_empty() {
            return Err(bad("model", "must name the model to call".into()));
        }
        for (field, v) in [
            ("timeout_ms", self.timeout_ms),
            ("max_attempts", self.max_attempts as u64),
            ("backoff_base_ms", self.backoff_base_ms),
            ("backoff_max_ms", self.backoff_max_ms),
            ("breaker_failures", self.breaker_failures as u64),
            ("breaker_cooldown_ms", self.breaker_cooldown_ms),
        ] {
            if v == 0 {
                return Err(bad(field, "must be greater than 0".into()));
            }
        }
        if !self.replicas.is_empty() {
            if self.kind != RemoteKind::Openai {
                return Err(bad(
                    "replicas",
                    "only an OpenAI-compatible backend (kind = \"openai\") runs replicas".into(),
                ));
            }
            if !self.base_url.trim().is_empty() {
                return Err(bad(
                    "base_url",
                    "leave it empty when `replicas` lists the servers".into(),
                ));
            }
            for (field, v) in [
                ("health_interval_ms", self.health_interval_ms),
                ("health_timeout_ms", self.health_timeout_ms),
            ] {
                if v == 0 {
                    return Err(bad(field, "must be greater than 0".into()));
                }
            }
        }
        if self.backoff_max_ms < self.backoff_base_ms {
            return Err(bad(
                "backoff_max_ms",
                "must be at least backoff_base_ms".into(),
            ));
        }
        for (name, served) in &self.adapters {
            if name.trim().is_empty() || served.trim().is_empty() {
                return Err(bad(
                    "adapters",
                    "adapter and served model names must be non-empty".into(),
                ));
            }
        }
        if self
            .api_key_env
            .as_deref()
            .is_some_and(|v| v.trim().is_empty())
        {
            return Err(bad(
                "api_key_env",
                "must name an environment variable".into(),
            ));
        }
        Ok(url)
    }

    /// Builds the engine, reading the API key from [`RemoteConfig::key_env`]. A variable named
    /// in the config must be set, and Anthropic always needs one; an OpenAI-compatible server
    /// reached with the default variable unset gets no `Authorization` header (a local vLLM).
    pub fn build(&self) -> Result<Arc<dyn Engine>, EngineError> {
        let key = ApiKey::from_env(self.key_env());
        let required = self.api_key_env.is_some() || self.kind == RemoteKind::Anthropic;
        if key.is_none() && required {
            return Err(EngineError::Config(format!(
                "api_key_env: environment variable {} is not set",
                self.key_env()
            )));
        }
        self.build_with_key(key)
    }

    /// Builds the engine with an explicit key (tests, secrets managers).
    pub fn build_with_key(&self, key: Option<ApiKey>) -> Result<Arc<dyn Engine>, EngineError> {
        if !self.replicas.is_empty() {
            self.validate()?;
            return Ok(Arc::new(ReplicaSet::new(self, key)?));
        }
        Ok(match self.kind {
            RemoteKind::Openai => Arc::new(OpenAiEngine::new(self, key)?),
            RemoteKind::Anthropic => Arc::new(AnthropicEngine::new(self, key)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let ok = RemoteConfig::openai("http://127.0.0.1:8000/v1", "m");
        assert!(ok.validate().is_ok());
        let cases = [
            (
                RemoteConfig {
                    base_url: "ftp://x".into(),
                    ..ok.clone()
                },
                "base_url",
            ),
            (
                RemoteConfig {
                    base_url: "not a url".into(),
                    ..ok.clone()
                },
                "base_url",
            ),
            (
                RemoteConfig {
                    model: " ".into(),
                    ..ok.clone()
                },
                "model",
            ),
            (
                RemoteConfig {
                    timeout_ms: 0,
                    ..ok.clone()
                },
                "timeout_ms",
            ),
            (
                RemoteConfig {
                    max_attempts: 0,
                    ..ok.clone()
                },
                "max_attempts",
            ),
            (
                RemoteConfig {
                    breaker_failures: 0,
                    ..ok.clone()
                },
                "breaker_failures",
            ),
            (
                RemoteConfig {
                    backoff_max_ms: 1,
                    backoff_base_ms: 2,
                    ..ok.clone()
                },
                "backoff_max_ms",
            ),
        ];
        for (cfg, field) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err} should name {field}");
        }
    }

    #[test]
    fn url_credentials_are_not_echoed() {
        let cfg = RemoteConfig::openai("https://user:s3cret@[::1:bad/v1", "m");
        let err = cfg.validate().unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<RemoteConfig>(r#"{"kind":"openai","modle":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("modle"), "{err}");
        let cfg: RemoteConfig =
            serde_json::from_str(r#"{"kind":"anthropic","model":"claude","max_attempts":2}"#)
                .unwrap();
        assert_eq!(cfg.kind, RemoteKind::Anthropic);
        assert_eq!(cfg.key_env(), "ANTHROPIC_API_KEY");
    }
}
