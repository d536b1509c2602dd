//! OpenAI-compatible endpoints, so the standard `openai` clients work against careflow:
//! `GET /v1/models` (the small model and each of its adapters as a model) and
//! `POST /v1/chat/completions` (also `stream: true`). Any API key may call them.
//!
//! A completion is one engine session: the leading system messages are its prefix (taken
//! from the prefix cache when they were seen before), the rest one turn, generated and
//! closed. Naming an adapter as the model applies it to that turn only. The work goes
//! through the same bounded queue as triage, so chat cannot starve triage of the engine
//! without being refused first.
//!
//! `stream: true` streams for real: the engine sends each piece of text as it samples it
//! ([`Turn::stream`]) and it goes out as a `chat.completion.chunk` at once. A failure before
//! the first piece is still an HTTP status; after it, an `error` event ends the stream. A
//! client that disconnects stops the generation.

use crate::api_error::ApiError;
use crate::auth::random_hex;
use crate::queue::Ctx;
use crate::routes::triage::body_bytes;
use crate::state::AppState;
use crate::GatewayError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use careflow_engine::{
    ChatMessage, Constraint, Engine, EngineError, FinishReason, GenerateParams, OpenSession, Turn,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

const DEFAULT_MAX_TOKENS: usize = 256;
const MAX_CONTENT_CHARS: usize = 32_000;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub async fn models(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    st.authenticate(&headers).await?;
    let base = &st.info.model;
    let mut data =
        vec![json!({"id": base, "object": "model", "created": 0, "owned_by": "careflow"})];
    for a in &st.info.adapters {
        data.push(json!({
            "id": a, "object": "model", "created": 0, "owned_by": "careflow",
            "parent": base, "root": base,
        }));
    }
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<InMessage>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    response_format: Option<ResponseFormat>,
    #[serde(default)]
    n: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct InMessage {
    role: String,
    content: Content,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaSpec },
}

#[derive(Debug, Deserialize)]
struct JsonSchemaSpec {
    #[serde(default)]
    schema: Option<Value>,
}

/// A chat request checked and turned into engine terms.
struct ChatJob {
    model: String,
    adapter: Option<String>,
    prefix: Vec<ChatMessage>,
    turn: Vec<ChatMessage>,
    max_tokens: usize,
    constraint: Option<Constraint>,
    stream: bool,
    include_usage: bool,
}

struct ChatResult {
    text: String,
    piece_lens: Vec<usize>,
    finish: FinishReason,
    prompt_tokens: u64,
    cached_tokens: u64,
    completion_tokens: u64,
}

fn parse(st: &AppState, bytes: &[u8]) -> Result<ChatJob, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let req: ChatRequest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = crate::validate::path_field(e.path());
        let code = if e.inner().is_data() {
            "invalid_type"
        } else {
            "malformed_json"
        };
        ApiError::BadRequest {
            code,
            message: match &field {
                Some(f) => format!("{f}: {}", e.inner()),
                None => e.inner().to_string(),
            },
            field,
        }
    })?;
    let adapter = if req.model == st.info.model {
        None
    } else if st.info.adapters.contains(&req.model) {
        Some(req.model.clone())
    } else {
        return Err(ApiError::bad_field(
            "model_not_found",
            "model",
            format!(
                "model: `{}` is not served here (see GET /v1/models)",
                req.model
            ),
        ));
    };
    if req.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_field(
            "invalid_field",
            "n",
            "n: only 1 choice is supported",
        ));
    }
    let mut prefix = Vec::new();
    let mut turn = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        let text = match &m.content {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => {
                let mut t = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(s)) => t.push_str(s),
                        _ => {
                            let f = format!("{field}.content[{j}]");
                            return Err(ApiError::bad_field(
                                "invalid_field",
                                &f,
                                format!("{f}: only text parts are supported"),
                            ));
                        }
                    }
                }
                t
            }
        };
        if text.chars().count() > MAX_CONTENT_CHARS {
            let f = format!("{field}.content");
            return Err(ApiError::bad_field(
                "invalid_field",
                &f,
                format!("{f}: over {MAX_CONTENT_CHARS} characters"),
            ));
        }
        if let Some(c) = text
            .chars()
            .find(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
        {
            let f = format!("{field}.content");
            return Err(ApiError::bad_field(
                "invalid_field",
                &f,
                format!("{f}: contains a control character (U+{:04X})", c as u32),
            ));
        }
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => {
                let f = format!("{field}.role");
                return Err(ApiError::bad_field(
                    "invalid_field",
                    &f,
                    format!("{f}: `{other}` is not one of system, developer, user, assistant"),
                ));
            }
        };
        // Leading system messages are the cacheable prefix; the rest is the turn.
        if role == "system" && turn.is_empty() {
            prefix.push(ChatMessage::system(text));
        } else {
            turn.push(ChatMessage::new(role, text));
        }
    }
    if turn.is_empty() {
        return Err(ApiError::bad_field(
            "invalid_field",
            "messages",
            "messages: at least one user or assistant message is required",
        ));
    }
    let asked = req
        .max_completion_tokens
        .or(req.max_tokens)
        .map_or(DEFAULT_MAX_TOKENS, |n| n.min(usize::MAX as u64) as usize);
    if asked == 0 {
        return Err(ApiError::bad_field(
            "invalid_field",
            "max_tokens",
            "max_tokens: must be at least 1",
        ));
    }
    let constraint = match req.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => Some(Constraint::JsonSchema(json!({"type": "object"}))),
        Some(ResponseFormat::JsonSchema { json_schema }) => Some(Constraint::JsonSchema(
            json_schema
                .schema
                .unwrap_or_else(|| json!({"type": "object"})),
        )),
    };
    Ok(ChatJob {
        model: req.model,
        adapter,
        prefix,
        turn,
        // Past the server's cap the answer is cut, and `finish_reason: length` says so.
        max_tokens: asked.min(st.settings.chat_max_tokens),
        constraint,
        stream: req.stream.unwrap_or(false),
        include_usage: req
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    })
}

fn engine_error(e: EngineError) -> GatewayError {
    match e {
        EngineError::DeadlineExceeded(ms) => GatewayError::DeadlineExceeded(ms),
        EngineError::Overloaded { .. } => GatewayError::Overloaded {
            retry_after: std::time::Duration::from_secs(1),
        },
        EngineError::ContextOverflow { .. } | EngineError::InvalidInput(_) => {
            GatewayError::Invalid {
                field: "messages".into(),
                reason: e.to_string(),
            }
        }
        EngineError::Constraint(_) => GatewayError::Invalid {
            field: "response_format".into(),
            reason: e.to_string(),
        },
        other => GatewayError::Service(other.to_string()),
    }
}

async fn complete(
    engine: Arc<dyn Engine>,
    job: &ChatJob,
    ctx: &Ctx,
    stream: Option<mpsc::UnboundedSender<String>>,
) -> Result<ChatResult, GatewayError> {
    let opened = engine
        .open(OpenSession {
            cache_prefix: !job.prefix.is_empty(),
            prefix: job.prefix.clone(),
            session_adapter: None,
            max_tokens: None,
        })
        .await
        .map_err(engine_error)?;
    let remaining = ctx.deadline.saturating_duration_since(Instant::now());
    let out = engine
        .turn(
            opened.id,
            Turn {
                messages: job.turn.clone(),
                adapter: job.adapter.clone(),
                generate: Some(GenerateParams {
                    max_tokens: job.max_tokens,
                    constraint: job.constraint.clone(),
                }),
                return_logits: false,
                deadline: Some(remaining),
                stream,
            },
        )
        .await;
    // Closed whatever the turn did: an open session holds KV cells.
    if let Err(e) = engine.close(opened.id).await {
        tracing::warn!(error = %e, "closing a chat session failed");
    }
    let out = out.map_err(engine_error)?;
    let g = out
        .generation
        .ok_or_else(|| GatewayError::Service("the engine generated nothing".into()))?;
    Ok(ChatResult {
        text: g.text,
        piece_lens: g.piece_lens,
        finish: g.finish,
        prompt_tokens: opened.usage.submitted + out.usage.submitted,
        cached_tokens: opened.usage.reused + out.usage.reused,
        completion_tokens: out.usage.generated,
    })
}

pub async fn chat(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    st.authenticate(&headers).await?;
    let body = body_bytes(&st, &headers, body)?;
    let job = parse(&st, &body)?;
    let engine = st.service.engine().ok_or(GatewayError::NoEngine)?;
    let slot = st.queue.reserve()?;
    let (tx, mut rx) = oneshot::channel();
    // Streaming: the engine sends the text as it samples it.
    let (piece_tx, piece_rx) = if job.stream {
        let (a, b) = mpsc::unbounded_channel();
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    let job = Arc::new(job);
    let work = job.clone();
    slot.send(
        Box::new(move |ctx| {
            Box::pin(async move {
                let result = if ctx.cancel.is_cancelled() {
                    Err(GatewayError::ShuttingDown)
                } else {
                    tokio::select! {
                        r = complete(engine, &work, &ctx, piece_tx) => r,
                        _ = ctx.cancel.cancelled() => Err(GatewayError::ShuttingDown),
                    }
                };
                let _ = tx.send(result);
            })
        }),
        received + st.settings.request_deadline,
    );
    let lost = || ApiError::Internal("the worker ended without an answer".into());
    let chunks = Chunks {
        id: format!("chatcmpl-{}", random_hex(12)?),
        created: unix_now(),
        model: job.model.clone(),
        include_usage: job.include_usage,
    };
    let Some(mut piece_rx) = piece_rx else {
        let result = rx.await.map_err(|_| lost())??;
        return Ok(Json(json!({
            "id": chunks.id,
            "object": "chat.completion",
            "created": chunks.created,
            "model": job.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": finish_label(result.finish),
                "logprobs": null,
            }],
            "usage": usage(&result),
        }))
        .into_response());
    };
    // Until the first piece, a failure is still an HTTP status (overload, a bad request the
    // engine found); after it, the stream has begun and an error becomes an error event.
    // `Err(Some(result))`: the turn ended first; `Err(None)`: the pieces ended without one.
    let first = tokio::select! {
        biased;
        r = &mut rx => Err(Some(r)),
        p = piece_rx.recv() => p.ok_or(None),
    };
    let first = match first {
        Ok(piece) => piece,
        // Finished before a piece arrived (or the engine does not stream): the whole text,
        // cut at token boundaries, as chunks.
        Err(ended) => {
            let result = match ended {
                Some(r) => r,
                None => rx.await,
            }
            .map_err(|_| lost())??;
            let mut events = vec![chunks.delta(json!({"role": "assistant", "content": ""}))];
            for piece in pieces(&result.text, &result.piece_lens) {
                events.push(chunks.delta(json!({ "content": piece })));
            }
            events.extend(chunks.end(&result));
            let sse: Vec<Result<Event, Infallible>> = events.into_iter().map(Ok).collect();
            return Ok(Sse::new(futures_util::stream::iter(sse)).into_response());
        }
    };
    let head = vec![
        Ok(chunks.delta(json!({"role": "assistant", "content": ""}))),
        Ok(chunks.delta(json!({ "content": first }))),
    ];
    // Then each piece as the engine sends it; when the pieces end, the result closes it.
    let tail = futures_util::stream::unfold(
        (
            piece_rx,
            Some(rx),
            std::collections::VecDeque::new(),
            chunks,
        ),
        |(mut pieces, mut result, mut queued, chunks)| async move {
            loop {
                if let Some(e) = queued.pop_front() {
                    return Some((Ok::<Event, Infallible>(e), (pieces, result, queued, chunks)));
                }
                if let Some(piece) = pieces.recv().await {
                    let e = chunks.delta(json!({ "content": piece }));
                    return Some((Ok(e), (pieces, result, queued, chunks)));
                }
                let rx = result.take()?;
                match rx.await {
                    Ok(Ok(r)) => queued.extend(chunks.end(&r)),
                    Ok(Err(e)) => queued.push_back(chunks.error(&e.to_string())),
                    Err(_) => queued.push_back(chunks.error("the worker ended without an answer")),
                }
            }
        },
    );
    use futures_util::StreamExt;
    Ok(Sse::new(futures_util::stream::iter(head).chain(tail)).into_response())
}

fn finish_label(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

fn usage(r: &ChatResult) -> Value {
    json!({
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "total_tokens": r.prompt_tokens + r.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": r.cached_tokens},
    })
}

/// The events of one streamed completion (OpenAI's `chat.completion.chunk` objects).
struct Chunks {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl Chunks {
    fn event(&self, choices: Value, usage: Option<Value>) -> Event {
        let mut v = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": choices,
        });
        if let Some(u) = usage {
            v["usage"] = u;
        }
        Event::default().data(v.to_string())
    }
    fn delta(&self, delta: Value) -> Event {
        self.event(
            json!([{"index": 0, "delta": delta, "finish_reason": null, "logprobs": null}]),
            None,
        )
    }
    /// The finish chunk, the usage chunk when asked for, and `[DONE]`.
    fn end(&self, r: &ChatResult) -> Vec<Event> {
        let mut v = vec![self.event(
            json!([{"index": 0, "delta": {}, "finish_reason": finish_label(r.finish), "logprobs": null}]),
            None,
        )];
        if self.include_usage {
            v.push(self.event(json!([]), Some(usage(r))));
        }
        v.push(Event::default().data("[DONE]"));
        v
    }
    /// A failure after the stream began: OpenAI's error object as an event, then the end.
    fn error(&self, message: &str) -> Event {
        Event::default()
            .data(json!({"error": {"message": message, "type": "server_error"}}).to_string())
    }
}

/// The text split at token boundaries, joining pieces until each ends on a character
/// boundary (a token can carry half of a multi-byte character).
fn pieces<'a>(text: &'a str, lens: &[usize]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let (mut start, mut end) = (0usize, 0usize);
    for len in lens {
        end = (end + len).min(text.len());
        if end > start && text.is_char_boundary(end) {
            out.push(&text[start..end]);
            start = end;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::pieces;

    #[test]
    fn pieces_never_split_a_character() {
        let text = "héllo";
        // "h", half of "é", the other half, "llo".
        assert_eq!(pieces(text, &[1, 1, 1, 3]), vec!["h", "é", "llo"]);
        assert_eq!(pieces("abc", &[1]), vec!["a", "bc"]);
        assert_eq!(pieces("", &[]), Vec::<&str>::new());
    }
}
