//! One logical call to a remote server: breaker check, attempts with retries, deadline, and
//! error classification. Protocol details (paths, bodies, headers) come from the caller.

use crate::breaker::{Breaker, Outcome};
use crate::retry::{is_retryable_status, parse_retry_after, parse_retry_after_ms, RetryPolicy};
use crate::secret::{scrub, ApiKey};
use careflow_engine::EngineError;
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// The turn's deadline: when it ends, and its length for the error message.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    pub budget: Duration,
}

impl Deadline {
    fn exceeded(&self) -> EngineError {
        EngineError::DeadlineExceeded(self.budget.as_millis() as u64)
    }
}

/// Why one attempt failed.
enum AttemptError {
    /// Worth another attempt (429, 5xx, 529, timeout, connection or body transfer failure).
    Transient {
        what: String,
        retry_after: Option<Duration>,
        /// The attempt ran out of time (as opposed to the server answering with an error).
        timed_out: bool,
    },
    /// Will fail the same way again; the outcome says whether it reflects on the server.
    Final(EngineError, Outcome),
}

pub struct Transport {
    backend: &'static str,
    client: reqwest::Client,
    endpoint: reqwest::Url,
    key: Option<ApiKey>,
    timeout: Duration,
    policy: RetryPolicy,
    pub breaker: Breaker,
    /// HTTP requests sent, retries included.
    pub requests: AtomicU64,
}

impl std::fmt::Debug for Transport {
    // Written out so that no field holding the key (the client's default headers) is printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("backend", &self.backend)
            .field("endpoint", &self.endpoint.path())
            .field("key", &self.key)
            .field("timeout", &self.timeout)
            .field("policy", &self.policy)
            .field("breaker", &self.breaker.state())
            .finish()
    }
}

pub struct TransportConfig {
    pub backend: &'static str,
    pub endpoint: reqwest::Url,
    /// Sent with every request. Values holding the key must be marked sensitive.
    pub headers: HeaderMap,
    pub key: Option<ApiKey>,
    pub timeout: Duration,
    pub policy: RetryPolicy,
    pub breaker: Breaker,
}

impl Transport {
    pub fn new(c: TransportConfig) -> Result<Self, EngineError> {
        let client = reqwest::Client::builder()
            .default_headers(c.headers)
            .connect_timeout(c.timeout)
            .build()
            .map_err(|e| EngineError::Config(format!("HTTP client: {}", chain(&e))))?;
        Ok(Transport {
            backend: c.backend,
            client,
            endpoint: c.endpoint,
            key: c.key,
            timeout: c.timeout,
            policy: c.policy,
            breaker: c.breaker,
            requests: AtomicU64::new(0),
        })
    }

    fn clean(&self, text: &str) -> String {
        scrub(text, self.key.as_ref())
    }

    fn unavailable(&self, reason: String) -> EngineError {
        EngineError::Unavailable {
            backend: self.backend.to_string(),
            reason: self.clean(&reason),
        }
    }

    pub fn bad_response(&self, reason: impl Into<String>) -> EngineError {
        EngineError::BadResponse {
            backend: self.backend.to_string(),
            reason: self.clean(&reason.into()),
        }
    }

    /// Posts `body` and reads the reply through `parse`, retrying transient failures.
    pub async fn call<T>(
        &self,
        body: &Value,
        deadline: Option<Deadline>,
        parse: impl Fn(Value) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let permit = self.breaker.acquire().map_err(|wait| {
            self.unavailable(format!(
                "circuit breaker open after {} consecutive failed calls; next trial in {} ms",
                self.breaker.threshold(),
                wait.as_millis()
            ))
        })?;
        let (result, outcome) = self.attempts(body, deadline, &parse).await;
        self.breaker.record(permit, outcome);
        result
    }

    async fn attempts<T>(
        &self,
        body: &Value,
        deadline: Option<Deadline>,
        parse: &impl Fn(Value) -> Result<T, EngineError>,
    ) -> (Result<T, EngineError>, Outcome) {
        let max = self.policy.max_attempts.max(1);
        let mut last = String::new();
        for attempt in 0..max {
            let mut limit = self.timeout;
            let mut cut_by_deadline = false;
            if let Some(d) = deadline {
                let left = d.at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let outcome = if attempt == 0 {
                        Outcome::Unknown
                    } else {
                        Outcome::Failed
                    };
                    return (Err(d.exceeded()), outcome);
                }
                if left < limit {
                    limit = left;
                    cut_by_deadline = true;
                }
            }
            match self.attempt(body, limit, parse).await {
                Ok(v) => return (Ok(v), Outcome::Healthy),
                Err(AttemptError::Final(e, outcome)) => return (Err(e), outcome),
                Err(AttemptError::Transient {
                    what,
                    retry_after,
                    timed_out,
                }) => {
                    if let (true, true, Some(d)) = (timed_out, cut_by_deadline, deadline) {
                        // The turn's deadline, not the server, ended this attempt.
                        let outcome = if attempt == 0 {
                            Outcome::Unknown
                        } else {
                            Outcome::Failed
                        };
                        return (Err(d.exceeded()), outcome);
                    }
                    tracing::debug!(backend = self.backend, attempt = attempt + 1, %what, "attempt failed");
                    last = what;
                    if attempt + 1 == max {
                        break;
                    }
                    let wait = self.policy.delay(attempt, retry_after);
                    if let Some(d) = deadline {
                        // Waiting past the deadline only to fail is worse than failing now.
                        if Instant::now() + wait >= d.at {
                            return (Err(d.exceeded()), Outcome::Failed);
                        }
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let reason = format!("{max} attempt(s) failed; last: {last}");
        (Err(self.unavailable(reason)), Outcome::Failed)
    }

    async fn attempt<T>(
        &self,
        body: &Value,
        limit: Duration,
        parse: &impl Fn(Value) -> Result<T, EngineError>,
    ) -> Result<T, AttemptError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let exchange = async {
            let resp = self
                .client
                .post(self.endpoint.clone())
                .json(body)
                .send()
                .await
                .map_err(|e| self.transport_error("request failed", &e))?;
            let status = resp.status().as_u16();
            let retry_after = retry_after(resp.headers());
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| self.transport_error("response body truncated or unreadable", &e))?;
            Ok((status, retry_after, bytes))
        };
        let (status, retry_after, bytes) = match tokio::time::timeout(limit, exchange).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(AttemptError::Transient {
                    what: format!("no complete response within {} ms", limit.as_millis()),
                    retry_after: None,
                    timed_out: true,
                })
            }
        };
        if (200..300).contains(&status) {
            let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
                let why = if e.is_eof() {
                    "response body is truncated JSON"
                } else {
                    "response body is not valid JSON"
                };
                AttemptError::Final(self.bad_response(format!("{why} ({e})")), Outcome::Failed)
            })?;
            return parse(value).map_err(|e| AttemptError::Final(e, Outcome::Failed));
        }
        let message = self.clean(&server_message(&bytes, status));
        if is_retryable_status(status) {
            return Err(AttemptError::Transient {
                what: format!("HTTP {status}: {message}"),
                retry_after,
                timed_out: false,
            });
        }
        // The server is up and says the request is wrong (bad request, auth, unknown model):
        // another attempt would get the same answer, and the breaker should not count it.
        Err(AttemptError::Final(
            EngineError::Remote {
                backend: self.backend.to_string(),
                status: Some(status),
                message,
            },
            Outcome::Healthy,
        ))
    }

    fn transport_error(&self, what: &str, e: &reqwest::Error) -> AttemptError {
        AttemptError::Transient {
            what: self.clean(&format!("{what}: {}", chain(e))),
            retry_after: None,
            timed_out: e.is_timeout(),
        }
    }
}

/// An error and its causes on one line ("error sending request: connection refused"), without
/// the URL (it may carry credentials).
fn chain(e: &reqwest::Error) -> String {
    let mut out = ReqwestNoUrl(e).to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// `reqwest::Error`'s message without its ` for url (...)` suffix.
struct ReqwestNoUrl<'a>(&'a reqwest::Error);

impl std::fmt::Display for ReqwestNoUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let full = self.0.to_string();
        match full.find(" for url (") {
            Some(i) => f.write_str(&full[..i]),
            None => f.write_str(&full),
        }
    }
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    get("retry-after-ms")
        .and_then(parse_retry_after_ms)
        .or_else(|| get("retry-after").and_then(|v| parse_retry_after(v, SystemTime::now())))
}

/// The server's own explanation: `error.message` (OpenAI, Anthropic), `message` (vLLM),
/// `detail` (FastAPI), else the start of the body.
fn server_message(bytes: &[u8], status: u16) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        let pick = [
            v.pointer("/error/message"),
            v.get("error").filter(|e| e.is_string()),
            v.get("message"),
            v.get("detail"),
        ];
        if let Some(m) = pick.into_iter().flatten().next() {
            return match m.as_str() {
                Some(s) => s.to_string(),
                None => m.to_string(),
            };
        }
    }
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no message")
            .to_string();
    }
    text.chars().take(300).collect()
}
