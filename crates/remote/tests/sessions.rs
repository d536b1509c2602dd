//! Client-side sessions: the whole transcript goes with every generation, usage adds up.

mod common;

use careflow_engine::{
    ChatMessage, Engine, EngineError, GenerateParams, OpenSession, SessionId, Turn,
};
use careflow_remote::{AnthropicEngine, OpenAiEngine};
use common::{key, Fault, Kind, Stub};
use serde_json::json;

fn turn(messages: &[&str], generate: bool) -> Turn {
    Turn {
        messages: messages.iter().map(|m| ChatMessage::user(*m)).collect(),
        generate: generate.then(|| GenerateParams::text(32)),
        ..Default::default()
    }
}

fn open_with_prefix() -> OpenSession {
    OpenSession {
        prefix: vec![ChatMessage::system("triage prefix")],
        cache_prefix: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn openai_second_turn_resends_the_whole_transcript_and_usage_sums_on_close() {
    let stub = Stub::start(Kind::OpenAi, &["m"]).await;
    let engine = OpenAiEngine::new(&stub.config("m"), key()).unwrap();
    let s = engine.open(open_with_prefix()).await.unwrap();
    let a = engine
        .turn(s.id, turn(&["first question"], true))
        .await
        .unwrap();
    let b = engine
        .turn(s.id, turn(&["second question"], true))
        .await
        .unwrap();

    let sent = &stub.last().body["messages"];
    assert_eq!(
        sent,
        &json!([
            {"role": "system", "content": "triage prefix"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "ok first question"},
            {"role": "user", "content": "second question"},
        ])
    );
    // The server cached the first prompt, so everything before the first reply is reused.
    assert_eq!(
        b.usage.reused, 6,
        "`system: triage prefix user: first question` came from cache"
    );
    let stats = engine.close(s.id).await.unwrap();
    assert_eq!(stats.turns, 2);
    let mut sum = a.usage;
    sum += b.usage;
    assert_eq!(stats.usage, sum);
    assert_eq!(
        stats.tokens,
        (b.usage.submitted + b.usage.generated) as usize,
        "the server's count"
    );
    assert!(matches!(
        engine.close(s.id).await,
        Err(EngineError::UnknownSession(_))
    ));
}

#[tokio::test]
async fn a_turn_without_generate_makes_no_call_and_rides_with_the_next() {
    let stub = Stub::start(Kind::Anthropic, &["c"]).await;
    let engine = AnthropicEngine::new(&stub.config("c"), key()).unwrap();
    let s = engine.open(open_with_prefix()).await.unwrap();
    let out = engine
        .turn(s.id, turn(&["records: allergy to penicillin"], false))
        .await
        .unwrap();
    assert!(out.generation.is_none());
    assert_eq!(out.usage.submitted, 0);
    assert!(out.session_tokens > 0, "estimated");
    assert_eq!(stub.calls(), 0);

    engine.turn(s.id, turn(&["what now?"], true)).await.unwrap();
    assert_eq!(stub.calls(), 1);
    let body = stub.last().body;
    let blocks = body["messages"][0]["content"].as_array().unwrap();
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(blocks[0]["text"], "records: allergy to penicillin");
    assert_eq!(blocks[1]["text"], "what now?");
    let stats = engine.close(s.id).await.unwrap();
    assert_eq!(stats.turns, 2);
}

#[tokio::test]
async fn a_failed_turn_leaves_the_transcript_unchanged() {
    let stub = Stub::start(Kind::OpenAi, &["m"]).await;
    let engine = OpenAiEngine::new(&stub.config("m"), key()).unwrap();
    let s = engine.open(open_with_prefix()).await.unwrap();
    stub.push(Fault::Status(400, vec![], "no".into()));
    assert!(engine
        .turn(s.id, turn(&["lost question"], true))
        .await
        .is_err());
    engine
        .turn(s.id, turn(&["retried question"], true))
        .await
        .unwrap();
    let sent = stub.last().body["messages"].clone();
    assert_eq!(sent.as_array().unwrap().len(), 2);
    assert_eq!(sent[1]["content"], "retried question");
    let stats = engine.close(s.id).await.unwrap();
    assert_eq!(stats.turns, 1);
}

#[tokio::test]
async fn trim_count_tokens_and_unknown_sessions() {
    let stub = Stub::start(Kind::OpenAi, &["m"]).await;
    let engine = OpenAiEngine::new(&stub.config("m"), key()).unwrap();
    // 4 bytes per token, rounded up: "user" + "twelve bytes" = 16 bytes.
    let n = engine
        .count_tokens(vec![ChatMessage::user("twelve bytes")])
        .await
        .unwrap();
    assert_eq!(n, 4);
    let s = engine.open(open_with_prefix()).await.unwrap();
    let out = engine.turn(s.id, turn(&["hello"], true)).await.unwrap();
    assert!(
        engine.trim(s.id, out.session_tokens).await.is_ok(),
        "nothing to cut"
    );
    let err = engine.trim(s.id, 1).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::InvalidInput(m) if m.contains("trim is not supported")),
        "{err}"
    );
    let err = engine
        .turn(SessionId(999), turn(&["x"], true))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::UnknownSession(999)));
    let err = engine
        .turn(
            s.id,
            Turn {
                return_logits: true,
                ..turn(&["x"], true)
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::InvalidInput(_)));
}

#[tokio::test]
async fn session_token_limit_is_checked_before_sending() {
    let stub = Stub::start(Kind::OpenAi, &["m"]).await;
    let engine = OpenAiEngine::new(&stub.config("m"), key()).unwrap();
    let s = engine
        .open(OpenSession {
            max_tokens: Some(20),
            ..open_with_prefix()
        })
        .await
        .unwrap();
    let err = engine
        .turn(s.id, turn(&["a long question"], true))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::ContextOverflow { limit: 20, .. }),
        "{err}"
    );
    assert_eq!(stub.calls(), 0);
}

#[tokio::test]
async fn concurrent_turns_on_one_session_are_refused() {
    let stub = Stub::start(Kind::OpenAi, &["m"]).await;
    stub.push(Fault::Sleep(std::time::Duration::from_millis(200)));
    let engine = OpenAiEngine::new(&stub.config("m"), key()).unwrap();
    let s = engine.open(open_with_prefix()).await.unwrap();
    let e2 = engine.clone();
    let slow = tokio::spawn(async move { e2.turn(s.id, turn(&["slow"], true)).await });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let err = engine.turn(s.id, turn(&["fast"], true)).await.unwrap_err();
    assert!(matches!(err, EngineError::SessionBusy(_)), "{err}");
    slow.await.unwrap().unwrap();
    engine.turn(s.id, turn(&["after"], true)).await.unwrap();
}
