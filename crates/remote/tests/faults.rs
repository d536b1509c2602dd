//! Faults: retries, timeouts, deadlines, broken bodies, the circuit breaker, key hygiene.

mod common;

use careflow_engine::{ChatMessage, Engine, EngineError, GenerateParams, OpenSession, Turn};
use careflow_remote::{AnthropicEngine, ApiKey, BreakerState, OpenAiEngine, RemoteConfig};
use common::{key, raw_server, Fault, Kind, Stub};
use std::time::{Duration, Instant};

fn ask() -> Turn {
    Turn {
        messages: vec![ChatMessage::user("sore throat since yesterday")],
        generate: Some(GenerateParams::text(16)),
        ..Default::default()
    }
}

fn with_deadline(ms: u64) -> Turn {
    Turn {
        deadline: Some(Duration::from_millis(ms)),
        ..ask()
    }
}

fn status(code: u16) -> Fault {
    Fault::Status(
        code,
        vec![],
        format!(r#"{{"error":{{"message":"stub status {code}"}}}}"#),
    )
}

async fn one_turn(engine: &dyn Engine, turn: Turn) -> Result<String, EngineError> {
    let s = engine.open(OpenSession::default()).await?;
    let out = engine.turn(s.id, turn).await;
    engine.close(s.id).await?;
    Ok(out?.generation.map(|g| g.text).unwrap_or_default())
}

#[tokio::test]
async fn rate_limit_429_honours_retry_after_then_succeeds() {
    let stub = Stub::start(Kind::OpenAi, &["m"]).await;
    stub.push(Fault::Status(
        429,
        vec![("retry-after", "1".into())],
        r#"{"error":{"message":"rate limited"}}"#.into(),
    ));
    let engine = OpenAiEngine::new(&stub.config("m"), key()).unwrap();
    let start = Instant::now();
    let text = one_turn(&engine, ask()).await.unwrap();
    let waited = start.elapsed();
    assert_eq!(text, "ok sore throat since yesterday");
    assert_eq!(stub.calls(), 2);
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?}"
    );
    assert!(waited < Duration::from_millis(1900), "waited {waited:?}");
}

#[tokio::test]
async fn server_error_500_then_success_is_retried() {
    let stub = Stub::start(Kind::OpenAi, &["m"]).await;
    stub.push(status(500));
    let engine = OpenAiEngine::new(&stub.config("m"), key()).unwrap();
    assert_eq!(
        one_turn(&engine, ask()).await.unwrap(),
        "ok sore throat since yesterday"
    );
    assert_eq!(stub.calls(), 2);
}

#[tokio::test]
async fn anthropic_overloaded_529_is_retried() {
    let stub = Stub::start(Kind::Anthropic, &["c"]).await;
    stub.push(Fault::Status(
        529,
        vec![],
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#.into(),
    ));
    stub.push(status(502));
    let engine = AnthropicEngine::new(&stub.config("c"), key()).unwrap();
    assert_eq!(
        one_turn(&engine, ask()).await.unwrap(),
        "ok sore throat since yesterday"
    );
    assert_eq!(stub.calls(), 3);
}

#[tokio::test]
async fn persistent_503_gives_up_after_exactly_max_attempts() {
    let stub = Stub::start(Kind::OpenAi, &["m"]).await;
    stub.always(Some(status(503)));
    let mut cfg = stub.config("m");
    cfg.max_attempts = 4;
    let engine = OpenAiEngine::new(&cfg, key()).unwrap();
    let err = one_turn(&engine, ask()).await.unwrap_err();
    match &err {
        EngineError::Unavailable { backend, reason } => {
            assert_eq!(backend, "openai");
            assert!(
                reason.contains("4 attempt(s)")
                    && reason.contains("HTTP 503")
                    && reason.contains("stub status 503"),
                "{reason}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(stub.calls(), 4);
}

#[tokio::test]
async fn bad_request_400_fails_at_once_with_the_servers_message() {
    let stub = Stub::start(Kind::OpenAi, &["m"]).await;
    stub.push(Fault::Status(
        400,
        vec![],
        r#"{"error":{"message":"max_tokens is too large: 99999"}}"#.into(),
    ));
    let engine = OpenAiEngine::new(&stub.config("m"), key()).unwrap();
    let err = one_turn(&engine, ask()).await.unwrap_err();
    match &err {
        EngineError::Remote {
            status, message, ..
        } => {
            assert_eq!(*status, Some(400));
            assert_eq!(message, "max_tokens is too large: 99999");
        }
        other => panic!("expected Remote, got {other:?}"),
    }
    assert_eq!(stub.calls(), 1);
    assert!(err.to_string().contains("HTTP 400"), "{err}");
}

#[tokio::test]
async fn a_server_slower_than_the_timeout_is_retried_then_reported() {
    let stub = Stub::start(Kind::OpenAi, &["m"]).await;
    stub.always(Some(Fault::Sleep(Duration::from_millis(600))));
    let mut cfg = stub.config("m");
    cfg.timeout_ms = 100;
    cfg.max_attempts = 2;
    let engine = OpenAiEngine::new(&cfg, key()).unwrap();
    let start = Instant::now();
    let err = one_turn(&engine, ask()).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::Unavailable { reason, .. } if reason.contains("no complete response within 100 ms")),
        "{err}"
    );
    assert_eq!(stub.calls(), 2);
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );

    // A slow first answer, then a quick one: the retry succeeds.
    stub.always(None);
    stub.push(Fault::Sleep(Duration::from_millis(600)));
    assert!(one_turn(&engine, ask()).await.is_ok());
    assert_eq!(stub.calls(), 4);
}

#[tokio::test]
async fn a_deadline_shorter_than_the_backoff_fails_without_another_call() {
    let stub = Stub::start(Kind::OpenAi, &["m"]).await;
    stub.always(Some(Fault::Status(
        503,
        vec![("retry-after", "1".into())],
        "busy".into(),
    )));
    let engine = OpenAiEngine::new(&stub.config("m"), key()).unwrap();
    let start = Instant::now();
    let err = one_turn(&engine, with_deadline(200)).await.unwrap_err();
    assert!(matches!(err, EngineError::DeadlineExceeded(200)), "{err}");
    assert_eq!(stub.calls(), 1, "no retry that cannot finish in time");
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "failed at once: {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_deadline_cuts_a_slow_attempt_short() {
    let stub = Stub::start(Kind::OpenAi, &["m"]).await;
    stub.always(Some(Fault::Sleep(Duration::from_millis(800))));
    let engine = OpenAiEngine::new(&stub.config("m"), key()).unwrap(); // timeout 1000 ms
    let start = Instant::now();
    let err = one_turn(&engine, with_deadline(150)).await.unwrap_err();
    assert!(matches!(err, EngineError::DeadlineExceeded(150)), "{err}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(140) && took < Duration::from_millis(500),
        "{took:?}"
    );
    assert_eq!(stub.calls(), 1);
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_is_a_typed_error() {
    let (url, calls) = raw_server(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{\"choices\":[{\"message\":",
    )
    .await;
    let mut cfg = RemoteConfig::openai(url, "m");
    cfg.max_attempts = 2;
    cfg.backoff_base_ms = 5;
    let engine = OpenAiEngine::new(&cfg, None).unwrap();
    let err = one_turn(&engine, ask()).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::Unavailable { reason, .. } if reason.contains("truncated")),
        "{err}"
    );
    assert_eq!(
        *calls.lock().unwrap(),
        2,
        "a cut transfer is transient: retried"
    );
}

#[tokio::test]
async fn a_connection_closed_mid_chunked_body_is_a_typed_error() {
    let (url, calls) = raw_server(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n10\r\n{\"choices\":[{\"me\r\n",
    )
    .await;
    let mut cfg = RemoteConfig::openai(url, "m");
    cfg.max_attempts = 1;
    let engine = OpenAiEngine::new(&cfg, None).unwrap();
    let err = one_turn(&engine, ask()).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::Unavailable { reason, .. } if reason.contains("truncated")),
        "{err}"
    );
    assert_eq!(*calls.lock().unwrap(), 1);
}

#[tokio::test]
async fn a_body_ended_early_without_length_is_truncated_json() {
    // No length and no chunking: the body ends when the connection closes, so only the JSON
    // parser can tell it is cut.
    let (url, _) = raw_server(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"choices\":[{\"message\":",
    )
    .await;
    let engine = OpenAiEngine::new(&RemoteConfig::openai(url, "m"), None).unwrap();
    let err = one_turn(&engine, ask()).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::BadResponse { reason, .. } if reason.contains("truncated JSON")),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_json_and_missing_fields_name_what_was_wrong() {
    let stub = Stub::start(Kind::OpenAi, &["m"]).await;
    let engine = OpenAiEngine::new(&stub.config("m"), key()).unwrap();
    let cases = [
        ("<html>502 from a proxy</html>", "not valid JSON"),
        (
            r#"{"id":"x","object":"chat.completion"}"#,
            "missing `choices`",
        ),
        (r#"{"choices":[]}"#, "`choices` is empty"),
        (
            r#"{"choices":[{"message":{"role":"assistant"}}]}"#,
            "missing `choices[0].message.content`",
        ),
        (
            r#"{"choices":[{"message":{"role":"assistant","content":"hi"}}]}"#,
            "missing `usage`",
        ),
    ];
    for (body, want) in cases {
        let before = stub.calls();
        stub.push(Fault::Body(body.into()));
        let err = one_turn(&engine, ask()).await.unwrap_err();
        assert!(
            matches!(&err, EngineError::BadResponse { backend, reason } if backend == "openai" && reason.contains(want)),
            "{body}: {err}"
        );
        assert_eq!(
            stub.calls(),
            before + 1,
            "not retried: the same body would come back"
        );
    }
    // A refusal is not a malformed reply.
    stub.push(Fault::Body(r#"{"choices":[{"message":{"role":"assistant","content":null,"refusal":"I can't help with that."}}]}"#.into()));
    let err = one_turn(&engine, ask()).await.unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");

    let stub = Stub::start(Kind::Anthropic, &["c"]).await;
    let engine = AnthropicEngine::new(&stub.config("c"), key()).unwrap();
    for (body, want) in [
        (
            r#"{"type":"message","role":"assistant"}"#,
            "missing `content`",
        ),
        (
            r#"{"type":"message","content":[{"type":"text","text":"hi"}]}"#,
            "missing `usage`",
        ),
    ] {
        stub.push(Fault::Body(body.into()));
        let err = one_turn(&engine, ask()).await.unwrap_err();
        assert!(
            matches!(&err, EngineError::BadResponse { reason, .. } if reason.contains(want)),
            "{body}: {err}"
        );
    }
    stub.push(Fault::Body(r#"{"content":[{"type":"text","text":"no tool"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}"#.into()));
    let json_turn = Turn {
        generate: Some(GenerateParams::json(
            16,
            serde_json::json!({"type": "object"}),
        )),
        ..ask()
    };
    let err = one_turn(&engine, json_turn).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("no `tool_use` block named `answer`"),
        "{err}"
    );
}

#[tokio::test]
async fn circuit_breaker_opens_fails_fast_half_opens_and_closes() {
    let stub = Stub::start(Kind::OpenAi, &["m"]).await;
    let mut cfg = stub.config("m");
    cfg.max_attempts = 2;
    cfg.breaker_failures = 2;
    cfg.breaker_cooldown_ms = 300;
    let engine = OpenAiEngine::new(&cfg, key()).unwrap();
    let clone = engine.clone();
    stub.always(Some(status(503)));

    assert!(one_turn(&engine, ask()).await.is_err());
    assert_eq!(
        engine.breaker_state(),
        BreakerState::Closed,
        "one failed call is not enough"
    );
    assert!(one_turn(&clone, ask()).await.is_err());
    assert_eq!(stub.calls(), 4, "two calls of two attempts");
    assert_eq!(
        engine.breaker_state(),
        BreakerState::Open,
        "shared by clones"
    );

    // Open: fail fast, no request reaches the server.
    let start = Instant::now();
    let err = one_turn(&clone, ask()).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(50));
    assert!(
        matches!(&err, EngineError::Unavailable { reason, .. } if reason.contains("circuit breaker open")),
        "{err}"
    );
    assert_eq!(stub.calls(), 4);

    // Half-open after the cooldown: one trial; its failure opens the breaker again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(engine.breaker_state(), BreakerState::HalfOpen);
    assert!(one_turn(&engine, ask()).await.is_err());
    assert_eq!(stub.calls(), 6);
    assert_eq!(engine.breaker_state(), BreakerState::Open);
    assert!(one_turn(&engine, ask()).await.is_err());
    assert_eq!(stub.calls(), 6, "fails fast again");

    // The server recovers: the next trial succeeds and closes the breaker.
    stub.always(None);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        one_turn(&engine, ask()).await.unwrap(),
        "ok sore throat since yesterday"
    );
    assert_eq!(engine.breaker_state(), BreakerState::Closed);
    assert_eq!(stub.calls(), 7);
}

#[tokio::test]
async fn client_errors_do_not_open_the_breaker() {
    let stub = Stub::start(Kind::OpenAi, &["m"]).await;
    let mut cfg = stub.config("m");
    cfg.breaker_failures = 1;
    let engine = OpenAiEngine::new(&cfg, key()).unwrap();
    stub.push(Fault::Status(400, vec![], "bad".into()));
    assert!(one_turn(&engine, ask()).await.is_err());
    assert_eq!(
        engine.breaker_state(),
        BreakerState::Closed,
        "the server is up; the request was wrong"
    );
}

#[tokio::test]
async fn the_key_never_appears_in_debug_output_or_errors() {
    const SECRET: &str = "sk-live-SECRET-9f8e7d6c5b4a";
    let k = ApiKey::new(SECRET);
    assert_eq!(format!("{k:?}"), "ApiKey(<redacted>)");

    // OpenAI echoes the key it rejects; Anthropic's stand-in does too.
    for kind in [Kind::OpenAi, Kind::Anthropic] {
        let stub = Stub::start(kind, &["m"]).await;
        let cfg = stub.config("m");
        let engine = cfg.build_with_key(Some(k.clone())).unwrap();
        let err = one_turn(engine.as_ref(), ask()).await.unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(
            matches!(
                err,
                EngineError::Remote {
                    status: Some(401),
                    ..
                }
            ),
            "{shown}"
        );
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(
            shown.contains("<redacted>"),
            "the server's message is kept, minus the key: {shown}"
        );
        assert_eq!(stub.calls(), 1, "401 is not retried");
        let typed = OpenAiEngine::new(&cfg, Some(k.clone())).unwrap();
        assert!(!format!("{typed:?} {cfg:?}").contains(SECRET));
    }

    // Nothing listening: connection errors, retried, then reported without the key.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut cfg = RemoteConfig::openai(format!("http://127.0.0.1:{port}/v1"), "m");
    cfg.max_attempts = 2;
    cfg.backoff_base_ms = 5;
    let engine = OpenAiEngine::new(&cfg, Some(k)).unwrap();
    let err = one_turn(&engine, ask()).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(matches!(err, EngineError::Unavailable { .. }), "{shown}");
    assert!(shown.contains("request failed"), "{shown}");
    assert!(!shown.contains(SECRET));
    assert_eq!(engine.requests_sent(), 2);
}
