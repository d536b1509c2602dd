//! A stand-in server for the two protocols, bound to 127.0.0.1:0.
//!
//! It behaves like the real services where careflow depends on it: it checks authentication
//! headers, refuses unknown models (vLLM: 404) and malformed Messages requests (Anthropic: 400
//! when roles do not alternate, a text block is empty, `max_tokens` is missing), and it
//! simulates both prefix caches so usage is realistic: vLLM reuses the longest prompt prefix it
//! has seen; Anthropic reuses the prefix up to a `cache_control` block when an identical one
//! was written before. Tokens are whitespace-separated words of `role: content`.
//! Tests script faults (statuses, sleeps, raw bodies) ahead of the normal handling.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use careflow_remote::{ApiKey, RemoteConfig, RemoteKind};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const KEY: &str = "sk-test-0123456789abcdef";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OpenAi,
    Anthropic,
}

/// A scripted deviation for one call.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status, extra headers and body.
    Status(u16, Vec<(&'static str, String)>, String),
    /// Sleep, then answer normally.
    Sleep(Duration),
    /// 200 with this raw body.
    Body(String),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

pub struct Inner {
    kind: Kind,
    key: String,
    models: Vec<String>,
    calls: Mutex<Vec<Seen>>,
    faults: Mutex<VecDeque<Fault>>,
    always: Mutex<Option<Fault>>,
    answer: Mutex<Value>,
    cache: Mutex<Vec<Vec<String>>>,
}

#[derive(Clone)]
pub struct Stub {
    pub base_url: String,
    st: Arc<Inner>,
}

impl Stub {
    pub async fn start(kind: Kind, models: &[&str]) -> Stub {
        let st = Arc::new(Inner {
            kind,
            key: KEY.to_string(),
            models: models.iter().map(|m| m.to_string()).collect(),
            calls: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            always: Mutex::new(None),
            answer: Mutex::new(json!({"disposition": "routine", "reasons": ["stub"]})),
            cache: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(st.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let base_url = match kind {
            Kind::OpenAi => format!("http://{addr}/v1"),
            Kind::Anthropic => format!("http://{addr}"),
        };
        Stub { base_url, st }
    }

    pub fn calls(&self) -> usize {
        self.st.calls.lock().unwrap().len()
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.st.calls.lock().unwrap().clone()
    }
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the server saw no request")
    }
    pub fn push(&self, f: Fault) {
        self.st.faults.lock().unwrap().push_back(f);
    }
    pub fn always(&self, f: Option<Fault>) {
        *self.st.always.lock().unwrap() = f;
    }
    pub fn set_answer(&self, v: Value) {
        *self.st.answer.lock().unwrap() = v;
    }

    /// A config for this server with small timeouts, so fault tests stay fast.
    pub fn config(&self, model: &str) -> RemoteConfig {
        RemoteConfig {
            kind: match self.st.kind {
                Kind::OpenAi => RemoteKind::Openai,
                Kind::Anthropic => RemoteKind::Anthropic,
            },
            base_url: self.base_url.clone(),
            model: model.to_string(),
            timeout_ms: 1000,
            max_attempts: 3,
            backoff_base_ms: 5,
            backoff_max_ms: 2000,
            breaker_failures: 100,
            breaker_cooldown_ms: 200,
            logprobs: self.st.kind == Kind::OpenAi,
            adapters: BTreeMap::new(),
            api_key_env: None,
            replicas: Vec::new(),
            health_interval_ms: 3_600_000,
            health_timeout_ms: 500,
        }
    }
}

pub fn key() -> Option<ApiKey> {
    Some(ApiKey::new(KEY))
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn error(status: u16, kind: Kind, message: &str) -> Response {
    let body = match kind {
        Kind::OpenAi => json!({"error": {"message": message, "type": "invalid_request_error"}}),
        Kind::Anthropic => {
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
        }
    };
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

async fn handle(
    State(st): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    st.calls.lock().unwrap().push(Seen {
        path: uri.path().to_string(),
        headers: headers.clone(),
        body: value.clone(),
    });
    let fault = st
        .faults
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| st.always.lock().unwrap().clone());
    match fault {
        Some(Fault::Status(code, hs, body)) => {
            let mut r = (StatusCode::from_u16(code).unwrap(), body).into_response();
            for (k, v) in hs {
                r.headers_mut().insert(k, v.parse().unwrap());
            }
            return r;
        }
        Some(Fault::Body(b)) => {
            return ([("content-type", "application/json")], b).into_response();
        }
        Some(Fault::Sleep(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    match st.kind {
        Kind::OpenAi => openai(&st, uri.path(), &headers, &value),
        Kind::Anthropic => anthropic(&st, uri.path(), &headers, &value),
    }
}

fn openai(st: &Inner, path: &str, h: &HeaderMap, v: &Value) -> Response {
    let k = Kind::OpenAi;
    if path == "/v1/models" {
        let data: Vec<Value> = st
            .models
            .iter()
            .map(|m| json!({"id": m, "object": "model"}))
            .collect();
        return axum::Json(json!({"object": "list", "data": data})).into_response();
    }
    if path != "/v1/chat/completions" {
        return error(404, k, "Not Found");
    }
    let auth = h
        .get("authorization")
        .and_then(|a| a.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {}", st.key) {
        // OpenAI echoes (part of) the key it was given.
        let given = auth.trim_start_matches("Bearer ");
        return error(401, k, &format!("Incorrect API key provided: {given}."));
    }
    let model = v["model"].as_str().unwrap_or("");
    if !st.models.iter().any(|m| m == model) {
        return error(404, k, &format!("The model `{model}` does not exist."));
    }
    let Some(messages) = v["messages"].as_array() else {
        return error(400, k, "messages: field required");
    };
    let mut prompt = Vec::new();
    for m in messages {
        let (Some(role), Some(content)) = (m["role"].as_str(), m["content"].as_str()) else {
            return error(400, k, "each message needs a role and a string content");
        };
        prompt.extend(words(&format!("{role}: {content}")));
    }
    let cached = {
        let mut cache = st.cache.lock().unwrap();
        let best = cache
            .iter()
            .map(|p| p.iter().zip(&prompt).take_while(|(a, b)| a == b).count())
            .max()
            .unwrap_or(0);
        cache.push(prompt.clone());
        best
    };
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    let text = if v["response_format"]["type"] == "json_schema" {
        st.answer.lock().unwrap().to_string()
    } else if v.get("guided_grammar").is_some() {
        "yes".to_string()
    } else {
        format!("ok {last_user}")
    };
    let max = v["max_tokens"].as_u64().unwrap_or(u64::MAX) as usize;
    let mut pieces: Vec<String> = Vec::new();
    for (i, w) in text.split(' ').enumerate() {
        pieces.push(if i == 0 {
            w.to_string()
        } else {
            format!(" {w}")
        });
    }
    let finish = if pieces.len() > max { "length" } else { "stop" };
    pieces.truncate(max);
    let text: String = pieces.concat();
    let logprobs = if v["logprobs"] == true {
        json!({"content": pieces.iter().map(|p| json!({
            "token": p, "logprob": -0.25, "bytes": p.as_bytes(), "top_logprobs": []
        })).collect::<Vec<_>>()})
    } else {
        Value::Null
    };
    axum::Json(json!({
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": logprobs,
            "finish_reason": finish,
        }],
        "usage": {
            "prompt_tokens": prompt.len(),
            "completion_tokens": pieces.len(),
            "total_tokens": prompt.len() + pieces.len(),
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }))
    .into_response()
}

fn anthropic(st: &Inner, path: &str, h: &HeaderMap, v: &Value) -> Response {
    let k = Kind::Anthropic;
    if path != "/v1/messages" {
        return error(404, k, "Not Found");
    }
    let hv = |n: &str| {
        h.get(n)
            .and_then(|a| a.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    if hv("x-api-key") != st.key {
        let body = json!({"type": "error", "error": {"type": "authentication_error",
            "message": format!("invalid x-api-key: {}", hv("x-api-key"))}});
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    if hv("anthropic-version").is_empty() {
        return error(400, k, "anthropic-version: header is required");
    }
    if !hv("content-type").starts_with("application/json") {
        return error(400, k, "content-type must be application/json");
    }
    if v["max_tokens"].as_u64().is_none() {
        return error(400, k, "max_tokens: Field required");
    }
    let model = v["model"].as_str().unwrap_or("");
    if !st.models.iter().any(|m| m == model) {
        return error(404, k, &format!("model: {model}"));
    }
    // Blocks in cache order: system, then messages.
    let mut blocks: Vec<(Vec<String>, bool)> = Vec::new();
    if let Some(system) = v.get("system") {
        let Some(sys) = system.as_array() else {
            return error(400, k, "system: expected an array of text blocks here");
        };
        for b in sys {
            let Some(t) = b["text"].as_str().filter(|t| !t.is_empty()) else {
                return error(400, k, "system: text content blocks must be non-empty");
            };
            blocks.push((
                words(&format!("system: {t}")),
                b.get("cache_control").is_some(),
            ));
        }
    }
    let Some(messages) = v["messages"].as_array().filter(|m| !m.is_empty()) else {
        return error(400, k, "messages: at least one message is required");
    };
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        let want = if i % 2 == 0 { "user" } else { "assistant" };
        if role != want {
            return error(400, k, &format!(
                "messages: roles must alternate between \"user\" and \"assistant\" (message {i} is {role:?})"
            ));
        }
        let Some(content) = m["content"].as_array() else {
            return error(400, k, "content: expected an array of blocks");
        };
        for b in content {
            let Some(t) = b["text"].as_str().filter(|t| !t.is_empty()) else {
                return error(400, k, "messages: text content blocks must be non-empty");
            };
            blocks.push((
                words(&format!("{role}: {t}")),
                b.get("cache_control").is_some(),
            ));
        }
    }
    let total: usize = blocks.iter().map(|b| b.0.len()).sum();
    let (mut written, mut read) = (0, 0);
    if let Some(cut) = blocks.iter().rposition(|b| b.1) {
        let prefix: Vec<String> = blocks[..=cut].iter().flat_map(|b| b.0.clone()).collect();
        let mut cache = st.cache.lock().unwrap();
        if cache.contains(&prefix) {
            read = prefix.len();
        } else {
            written = prefix.len();
            cache.push(prefix);
        }
    }
    let tools = v["tools"].as_array().cloned().unwrap_or_default();
    let forced = v["tool_choice"]["type"] == "tool";
    let (content, stop, out_tokens) = if forced {
        let name = v["tool_choice"]["name"].as_str().unwrap_or("");
        if !tools
            .iter()
            .any(|t| t["name"] == name && t["input_schema"].is_object())
        {
            return error(400, k, "tool_choice: tool not found in tools");
        }
        let input = st.answer.lock().unwrap().clone();
        let n = words(&input.to_string()).len();
        (
            json!([{"type": "tool_use", "id": "toolu_stub", "name": name, "input": input}]),
            "tool_use",
            n,
        )
    } else {
        let last = messages.last().unwrap();
        let text = last["content"]
            .as_array()
            .and_then(|c| c.last())
            .and_then(|b| b["text"].as_str())
            .unwrap_or("");
        let reply = format!("ok {text}");
        let n = words(&reply).len();
        (json!([{"type": "text", "text": reply}]), "end_turn", n)
    };
    axum::Json(json!({
        "id": "msg_stub",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": {
            "input_tokens": total - written - read,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "output_tokens": out_tokens,
        },
    }))
    .into_response()
}

/// A raw HTTP/1.1 server that answers every request with `response` (status line, headers
/// and a possibly short body) and then closes the connection. Returns its base URL and a call
/// counter.
pub async fn raw_server(response: &'static str) -> (String, Arc<Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(Mutex::new(0usize));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let c = c.clone();
            tokio::spawn(async move {
                // Read the request head and its body (Content-Length) before answering.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = find(&buf, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                *c.lock().unwrap() += 1;
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/v1"), count)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
