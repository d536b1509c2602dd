//! Anthropic's Messages API (`POST {base_url}/v1/messages`): the frontier tier.
//!
//! Mapping careflow's transcript onto it:
//! - the session prefix's system messages become the top-level `system` blocks, and the
//!   prefix's last block carries `cache_control: ephemeral`, so the stable prefix is written to
//!   Anthropic's prompt cache once and read back on every later call;
//! - system messages after the prefix are sent as user text in place (moving them into
//!   `system` would change the cached prefix and their position in the conversation);
//! - consecutive messages of one role are merged into one message of several text blocks:
//!   the API requires user and assistant to alternate, and careflow appends several user
//!   messages in a row;
//! - a JSON-schema constraint becomes one forced tool, `answer`, whose input is the reply.
//!
//! There are no logprobs, so `Generation.logprobs` is empty.

use crate::config::RemoteConfig;
use crate::engine::{bad, join, Protocol, RemoteEngine, Reply, Request};
use crate::secret::ApiKey;
use careflow_core::TokenUsage;
use careflow_engine::{Constraint, EngineError, FinishReason, GenerateParams, Generation};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use serde_json::{json, Value};

pub const API_VERSION: &str = "2023-06-01";
const TOOL: &str = "answer";

/// The Anthropic wire format.
#[derive(Debug, Clone)]
pub struct Anthropic;

/// An engine for Anthropic's Messages API.
pub type AnthropicEngine = RemoteEngine<Anthropic>;

impl RemoteEngine<Anthropic> {
    /// Anthropic needs a key; `None` is accepted so that a test server or an authenticating
    /// proxy can be used, and then no `x-api-key` header is sent.
    pub fn new(cfg: &RemoteConfig, key: Option<ApiKey>) -> Result<Self, EngineError> {
        Self::with_protocol(cfg, key, Anthropic)
    }
}

impl Protocol for Anthropic {
    const BACKEND: &'static str = "anthropic";

    fn endpoint(base: &url::Url) -> Result<reqwest::Url, EngineError> {
        join(base, "v1/messages")
    }

    fn headers(key: Option<&ApiKey>) -> Result<HeaderMap, EngineError> {
        let mut h = HeaderMap::new();
        if let Some(k) = key {
            let mut v = HeaderValue::from_str(k.expose()).map_err(|_| {
                EngineError::Config("api key: contains characters not allowed in a header".into())
            })?;
            v.set_sensitive(true);
            h.insert("x-api-key", v);
        }
        h.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(h)
    }

    fn body(&self, req: &Request<'_>) -> Result<Value, EngineError> {
        let t = req.transcript;
        let prefix_len = req.prefix_len.min(t.len());
        // The cache breakpoint: the prefix's last message that will become a block.
        let mark = t[..prefix_len].iter().rposition(|m| !m.content.is_empty());
        let mut system: Vec<Value> = Vec::new();
        let mut messages: Vec<Value> = Vec::new();
        for (i, m) in t.iter().enumerate() {
            // The API refuses empty text blocks.
            if m.content.is_empty() {
                continue;
            }
            let mut block = json!({"type": "text", "text": m.content});
            if Some(i) == mark {
                block["cache_control"] = json!({"type": "ephemeral"});
            }
            if m.role == "system" && i < prefix_len {
                system.push(block);
                continue;
            }
            let role = if m.role == "assistant" {
                "assistant"
            } else {
                "user"
            };
            match messages.last_mut() {
                Some(last) if last["role"] == role => {
                    if let Some(blocks) = last["content"].as_array_mut() {
                        blocks.push(block);
                    }
                }
                _ => messages.push(json!({"role": role, "content": [block]})),
            }
        }
        if messages.is_empty() {
            return Err(EngineError::InvalidInput(
                "the Anthropic backend needs at least one non-system message to answer".into(),
            ));
        }
        let mut body = json!({
            "model": req.model,
            "max_tokens": req.params.max_tokens,
            "temperature": 0,
            "messages": messages,
        });
        if !system.is_empty() {
            body["system"] = Value::Array(system);
        }
        match &req.params.constraint {
            Some(Constraint::JsonSchema(schema)) => {
                if schema.get("type").is_some_and(|t| t != "object") {
                    return Err(EngineError::Constraint(
                        "the Anthropic backend needs a JSON schema of type object (tool input)"
                            .into(),
                    ));
                }
                body["tools"] = json!([{
                    "name": TOOL,
                    "description": "Give the answer, as the input of this tool.",
                    "input_schema": schema,
                }]);
                body["tool_choice"] = json!({"type": "tool", "name": TOOL});
            }
            Some(Constraint::Gbnf(_)) => {
                return Err(EngineError::Constraint(
                    "GBNF grammars are not supported by the Anthropic backend; use a JSON schema"
                        .into(),
                ))
            }
            None => {}
        }
        Ok(body)
    }

    fn parse(&self, v: Value, params: &GenerateParams) -> Result<Reply, EngineError> {
        let content = v
            .get("content")
            .ok_or_else(|| bad::<Self>("missing `content`"))?
            .as_array()
            .ok_or_else(|| bad::<Self>("`content` is not an array"))?;
        let finish = match v.get("stop_reason").and_then(Value::as_str) {
            Some("max_tokens") => FinishReason::Length,
            _ => FinishReason::Stop,
        };
        let text_blocks = || -> String {
            content
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .collect()
        };
        let json_mode = matches!(params.constraint, Some(Constraint::JsonSchema(_)));
        let tool_input = content
            .iter()
            .find(|b| b["type"] == "tool_use" && b["name"] == TOOL)
            .map(|b| b.get("input"));
        let text = match (json_mode, tool_input) {
            (false, _) => text_blocks(),
            (true, Some(Some(input))) => input.to_string(),
            (true, Some(None)) => {
                return Err(bad::<Self>("the `answer` tool_use block has no `input`"))
            }
            // Cut off before the tool call was complete: return what there is, marked as such.
            (true, None) if finish == FinishReason::Length => text_blocks(),
            (true, None) => {
                return Err(bad::<Self>(
                    "no `tool_use` block named `answer` in `content`",
                ))
            }
        };
        let usage = v
            .get("usage")
            .ok_or_else(|| bad::<Self>("missing `usage`"))?;
        let count = |k: &str| usage.get(k).and_then(Value::as_u64);
        let input =
            count("input_tokens").ok_or_else(|| bad::<Self>("missing `usage.input_tokens`"))?;
        let output =
            count("output_tokens").ok_or_else(|| bad::<Self>("missing `usage.output_tokens`"))?;
        let written = count("cache_creation_input_tokens").unwrap_or(0);
        let read = count("cache_read_input_tokens").unwrap_or(0);
        Ok(Reply {
            generation: Generation {
                text,
                tokens: Vec::new(),
                piece_lens: Vec::new(),
                logprobs: Vec::new(),
                finish,
            },
            usage: TokenUsage {
                submitted: input + written + read,
                // Writing the cache is a full prefill (and billed above the base rate).
                computed: input + written,
                reused: read,
                generated: output,
                micros: 0,
            },
        })
    }
}
