//! OpenAI chat completions (`POST {base_url}/chat/completions`): OpenAI itself, vLLM (LoRA
//! adapters served as model names, automatic prefix caching), and other compatible servers.

use crate::config::RemoteConfig;
use crate::engine::{bad, join, Protocol, RemoteEngine, Reply, Request};
use crate::secret::ApiKey;
use careflow_core::TokenUsage;
use careflow_engine::{Constraint, EngineError, FinishReason, GenerateParams, Generation};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde_json::{json, Value};

/// The OpenAI wire format.
#[derive(Debug, Clone)]
pub struct OpenAi {
    logprobs: bool,
}

/// An engine for an OpenAI-compatible server.
pub type OpenAiEngine = RemoteEngine<OpenAi>;

impl RemoteEngine<OpenAi> {
    /// `key: None` sends no `Authorization` header (a local vLLM without `--api-key`).
    pub fn new(cfg: &RemoteConfig, key: Option<ApiKey>) -> Result<Self, EngineError> {
        Self::with_protocol(
            cfg,
            key,
            OpenAi {
                logprobs: cfg.logprobs,
            },
        )
    }
}

impl Protocol for OpenAi {
    const BACKEND: &'static str = "openai";

    fn endpoint(base: &url::Url) -> Result<reqwest::Url, EngineError> {
        join(base, "chat/completions")
    }

    fn headers(key: Option<&ApiKey>) -> Result<HeaderMap, EngineError> {
        let mut h = HeaderMap::new();
        if let Some(k) = key {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", k.expose())).map_err(|_| {
                EngineError::Config("api key: contains characters not allowed in a header".into())
            })?;
            v.set_sensitive(true);
            h.insert(AUTHORIZATION, v);
        }
        Ok(h)
    }

    fn body(&self, req: &Request<'_>) -> Result<Value, EngineError> {
        let messages: Vec<Value> = req
            .transcript
            .iter()
            .map(|m| json!({"role": m.role, "content": m.content}))
            .collect();
        let mut body = json!({
            "model": req.model,
            "messages": messages,
            "max_tokens": req.params.max_tokens,
            // Triage must be reproducible: the same message gets the same answer.
            "temperature": 0,
        });
        if self.logprobs {
            body["logprobs"] = json!(true);
        }
        match &req.params.constraint {
            Some(Constraint::JsonSchema(schema)) => {
                body["response_format"] = json!({
                    "type": "json_schema",
                    "json_schema": {"name": "step", "schema": schema, "strict": true},
                });
            }
            // vLLM's extension; OpenAI itself refuses the field (a 400 the caller sees).
            Some(Constraint::Gbnf(grammar)) => body["guided_grammar"] = json!(grammar),
            None => {}
        }
        Ok(body)
    }

    fn parse(&self, v: Value, _params: &GenerateParams) -> Result<Reply, EngineError> {
        let choices = v
            .get("choices")
            .ok_or_else(|| bad::<Self>("missing `choices`"))?
            .as_array()
            .ok_or_else(|| bad::<Self>("`choices` is not an array"))?;
        let choice = choices
            .first()
            .ok_or_else(|| bad::<Self>("`choices` is empty"))?;
        let message = choice
            .get("message")
            .ok_or_else(|| bad::<Self>("missing `choices[0].message`"))?;
        let text = match message.get("content").and_then(Value::as_str) {
            Some(t) => t.to_string(),
            None => {
                if let Some(r) = message.get("refusal").and_then(Value::as_str) {
                    return Err(EngineError::Remote {
                        backend: Self::BACKEND.into(),
                        status: Some(200),
                        message: format!("the model refused: {r}"),
                    });
                }
                return Err(bad::<Self>("missing `choices[0].message.content`"));
            }
        };
        let finish = match choice.get("finish_reason").and_then(Value::as_str) {
            Some("length") => FinishReason::Length,
            _ => FinishReason::Stop,
        };
        let (piece_lens, logprobs) = token_logprobs(choice, &text);
        let usage = v
            .get("usage")
            .ok_or_else(|| bad::<Self>("missing `usage`"))?;
        let count = |path: &str| usage.pointer(path).and_then(Value::as_u64);
        let prompt =
            count("/prompt_tokens").ok_or_else(|| bad::<Self>("missing `usage.prompt_tokens`"))?;
        let completion = count("/completion_tokens")
            .ok_or_else(|| bad::<Self>("missing `usage.completion_tokens`"))?;
        let cached = count("/prompt_tokens_details/cached_tokens")
            .unwrap_or(0)
            .min(prompt);
        Ok(Reply {
            generation: Generation {
                text,
                tokens: Vec::new(),
                piece_lens,
                logprobs,
                finish,
            },
            usage: TokenUsage {
                submitted: prompt,
                computed: prompt - cached,
                reused: cached,
                generated: completion,
                micros: 0,
            },
        })
    }
}

/// Per-token logprobs and byte lengths from `choices[0].logprobs.content`. The workflow maps
/// byte spans of the text to tokens with these, so when they do not add up to the text (a
/// server that omits or mangles them) none are returned rather than misleading ones.
fn token_logprobs(choice: &Value, text: &str) -> (Vec<usize>, Vec<f32>) {
    let Some(items) = choice
        .pointer("/logprobs/content")
        .and_then(Value::as_array)
    else {
        return (Vec::new(), Vec::new());
    };
    let mut lens = Vec::with_capacity(items.len());
    let mut lps = Vec::with_capacity(items.len());
    for item in items {
        // `bytes` is exact when a token splits a UTF-8 character; `token` is then lossy.
        let len = match item.get("bytes").and_then(Value::as_array) {
            Some(b) => b.len(),
            None => match item.get("token").and_then(Value::as_str) {
                Some(t) => t.len(),
                None => return (Vec::new(), Vec::new()),
            },
        };
        let Some(lp) = item.get("logprob").and_then(Value::as_f64) else {
            return (Vec::new(), Vec::new());
        };
        lens.push(len);
        lps.push(lp as f32);
    }
    if lens.iter().sum::<usize>() != text.len() {
        tracing::warn!("token logprobs do not cover the reply text; dropping them");
        return (Vec::new(), Vec::new());
    }
    (lens, lps)
}
