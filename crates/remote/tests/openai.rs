//! The OpenAI-compatible backend against a stand-in vLLM/OpenAI server.

mod common;

use careflow_engine::{
    ChatMessage, Constraint, Engine, EngineError, FinishReason, GenerateParams, OpenSession, Turn,
};
use careflow_remote::{OpenAiEngine, RemoteConfig};
use common::{key, Kind, Stub, KEY};
use serde_json::json;
use std::collections::BTreeMap;

fn prefix() -> Vec<ChatMessage> {
    vec![ChatMessage::system(
        "You triage patient portal messages. Answer with one disposition and short reasons.",
    )]
}

fn ask(text: &str, params: GenerateParams) -> Turn {
    Turn {
        messages: vec![ChatMessage::user(text)],
        generate: Some(params),
        ..Default::default()
    }
}

#[tokio::test]
async fn openai_happy_path_text_usage_auth_and_logprobs() {
    let stub = Stub::start(Kind::OpenAi, &["base-model"]).await;
    let engine = OpenAiEngine::new(&stub.config("base-model"), key()).unwrap();

    let s = engine
        .open(OpenSession {
            prefix: prefix(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(s.usage.submitted, 0, "open sends nothing");
    assert_eq!(stub.calls(), 0);
    let out = engine
        .turn(
            s.id,
            ask("my cough is three days old", GenerateParams::text(64)),
        )
        .await
        .unwrap();
    let g = out.generation.unwrap();
    assert_eq!(g.text, "ok my cough is three days old");
    assert_eq!(g.finish, FinishReason::Stop);
    // Logprobs line up with the text, byte for byte.
    assert_eq!(g.logprobs.len(), g.piece_lens.len());
    assert_eq!(g.piece_lens.iter().sum::<usize>(), g.text.len());
    assert!(g.logprobs.iter().all(|&lp| (lp + 0.25).abs() < 1e-6));
    // First call: nothing cached yet.
    assert!(out.usage.submitted > 0);
    assert_eq!(out.usage.reused, 0);
    assert_eq!(out.usage.computed, out.usage.submitted);
    assert_eq!(out.usage.generated, 7);

    let seen = stub.last();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.headers["authorization"].to_str().unwrap(),
        format!("Bearer {KEY}")
    );
    assert_eq!(seen.body["model"], "base-model");
    assert_eq!(seen.body["temperature"], 0);
    assert_eq!(seen.body["max_tokens"], 64);
    assert_eq!(seen.body["logprobs"], true);
    assert_eq!(seen.body["messages"][0]["role"], "system");
    assert_eq!(
        seen.body["messages"][1]["content"],
        "my cough is three days old"
    );
    assert!(seen.body.get("response_format").is_none());

    // A second session with the same prefix: the server's prefix cache reports cached tokens,
    // which careflow counts as reused, not computed.
    let s2 = engine
        .open(OpenSession {
            prefix: prefix(),
            ..Default::default()
        })
        .await
        .unwrap();
    let out2 = engine
        .turn(s2.id, ask("rash on both arms", GenerateParams::text(64)))
        .await
        .unwrap();
    let prefix_words =
        "system: You triage patient portal messages. Answer with one disposition and short reasons."
            .split_whitespace()
            .count() as u64;
    assert_eq!(
        out2.usage.reused,
        prefix_words + 1,
        "prefix plus the `user:` word"
    );
    assert_eq!(
        out2.usage.computed,
        out2.usage.submitted - out2.usage.reused
    );
    let stats = engine.stats().await.unwrap();
    assert_eq!(stats.prefix_hits, 1);
    assert_eq!(stats.prefix_misses, 1);
    assert_eq!(stats.tokens_reused, out2.usage.reused);
    assert_eq!(stats.decode_calls, 2);
    assert_eq!(stats.sessions_open, 2);
}

#[tokio::test]
async fn openai_max_tokens_reports_length() {
    let stub = Stub::start(Kind::OpenAi, &["m"]).await;
    let engine = OpenAiEngine::new(&stub.config("m"), key()).unwrap();
    let s = engine.open(OpenSession::default()).await.unwrap();
    let out = engine
        .turn(s.id, ask("one two three four", GenerateParams::text(2)))
        .await
        .unwrap();
    let g = out.generation.unwrap();
    assert_eq!(g.text, "ok one");
    assert_eq!(g.finish, FinishReason::Length);
}

#[tokio::test]
async fn openai_json_schema_goes_as_response_format_and_adapter_picks_the_model() {
    let stub = Stub::start(Kind::OpenAi, &["base-model", "careflow-clinical"]).await;
    let mut cfg = stub.config("base-model");
    cfg.adapters = BTreeMap::from([("clinical".to_string(), "careflow-clinical".to_string())]);
    let engine = OpenAiEngine::new(&cfg, key()).unwrap();
    let answer =
        json!({"disposition": "urgent_same_day", "reasons": ["fever over 39 C for 3 days"]});
    stub.set_answer(answer.clone());
    let schema = json!({
        "type": "object",
        "properties": {"disposition": {"type": "string"}, "reasons": {"type": "array", "items": {"type": "string"}}},
        "required": ["disposition", "reasons"],
        "additionalProperties": false,
    });

    let s = engine
        .open(OpenSession {
            prefix: prefix(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut turn = ask(
        "fever for three days",
        GenerateParams::json(128, schema.clone()),
    );
    turn.adapter = Some("clinical".into());
    let out = engine.turn(s.id, turn).await.unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&out.generation.unwrap().text).unwrap();
    assert_eq!(parsed, answer);

    let seen = stub.last().body;
    assert_eq!(
        seen["model"], "careflow-clinical",
        "the adapter's served model name"
    );
    assert_eq!(
        seen["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "step", "schema": schema, "strict": true}})
    );

    // A turn without an adapter goes back to the base model.
    engine
        .turn(s.id, ask("thanks", GenerateParams::text(8)))
        .await
        .unwrap();
    assert_eq!(stub.last().body["model"], "base-model");
}

#[tokio::test]
async fn openai_session_adapter_and_gbnf_as_guided_grammar() {
    let stub = Stub::start(Kind::OpenAi, &["base", "sql-lora"]).await;
    let mut cfg = stub.config("base");
    cfg.adapters = BTreeMap::from([("sql".to_string(), "sql-lora".to_string())]);
    cfg.logprobs = false;
    let engine = OpenAiEngine::new(&cfg, key()).unwrap();
    let s = engine
        .open(OpenSession {
            session_adapter: Some("sql".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let grammar = r#"root ::= "yes" | "no""#.to_string();
    let out = engine
        .turn(
            s.id,
            ask(
                "is it urgent?",
                GenerateParams {
                    max_tokens: 4,
                    constraint: Some(Constraint::Gbnf(grammar.clone())),
                },
            ),
        )
        .await
        .unwrap();
    let g = out.generation.unwrap();
    assert_eq!(g.text, "yes");
    assert!(g.logprobs.is_empty(), "logprobs off in the config");
    let seen = stub.last().body;
    assert_eq!(seen["model"], "sql-lora");
    assert_eq!(seen["guided_grammar"], grammar);
    assert!(seen.get("logprobs").is_none());
}

#[tokio::test]
async fn unknown_adapter_is_refused_without_a_call() {
    let stub = Stub::start(Kind::OpenAi, &["base"]).await;
    let mut cfg = stub.config("base");
    cfg.adapters = BTreeMap::from([("clinical".to_string(), "clinical-lora".to_string())]);
    let engine = OpenAiEngine::new(&cfg, key()).unwrap();
    let err = engine
        .open(OpenSession {
            session_adapter: Some("nope".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::UnknownAdapter(a, known) if a == "nope" && known == "clinical"),
        "{err}"
    );
    let s = engine.open(OpenSession::default()).await.unwrap();
    let mut turn = ask("hello", GenerateParams::text(8));
    turn.adapter = Some("sql".into());
    let err = engine.turn(s.id, turn).await.unwrap_err();
    assert!(matches!(err, EngineError::UnknownAdapter(..)), "{err}");
    assert_eq!(stub.calls(), 0);
}

#[tokio::test]
async fn a_model_the_server_does_not_serve_is_a_remote_404() {
    let stub = Stub::start(Kind::OpenAi, &["base"]).await;
    let engine = OpenAiEngine::new(&stub.config("missing-model"), key()).unwrap();
    let s = engine.open(OpenSession::default()).await.unwrap();
    let err = engine
        .turn(s.id, ask("hi", GenerateParams::text(8)))
        .await
        .unwrap_err();
    match &err {
        EngineError::Remote {
            backend,
            status,
            message,
        } => {
            assert_eq!(backend, "openai");
            assert_eq!(*status, Some(404));
            assert!(message.contains("missing-model"), "{message}");
        }
        other => panic!("expected Remote, got {other:?}"),
    }
    assert_eq!(stub.calls(), 1, "a 404 is not retried");
}

#[tokio::test]
async fn info_names_model_url_and_adapters_without_credentials() {
    let mut cfg = RemoteConfig::openai("https://user:hunter22@vllm.internal:8000/v1/", "base");
    cfg.adapters = BTreeMap::from([
        ("clinical".to_string(), "c".to_string()),
        ("sql".to_string(), "s".to_string()),
    ]);
    let engine = cfg.build_with_key(None).unwrap();
    let info = engine.info();
    assert_eq!(info.name, "base");
    assert_eq!(info.path, "https://vllm.internal:8000/v1");
    assert_eq!(info.adapters, vec!["clinical", "sql"]);
    assert_eq!(info.n_vocab, 0);
}

#[tokio::test]
async fn a_key_variable_named_in_the_config_must_be_set() {
    let mut cfg = RemoteConfig::openai("http://127.0.0.1:9/v1", "base");
    cfg.api_key_env = Some("CAREFLOW_REMOTE_TEST_SURELY_UNSET_OPENAI_KEY".into());
    let Err(err) = cfg.build() else {
        panic!("built without the named key")
    };
    assert!(
        matches!(&err, EngineError::Config(m) if m.contains("CAREFLOW_REMOTE_TEST_SURELY_UNSET_OPENAI_KEY")),
        "{err}"
    );
}
