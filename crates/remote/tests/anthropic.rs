//! The Anthropic backend against a stand-in Messages API.

mod common;

use careflow_engine::{
    ChatMessage, Constraint, Engine, EngineError, GenerateParams, OpenSession, Turn,
};
use careflow_remote::AnthropicEngine;
use common::{key, Kind, Stub, KEY};
use serde_json::json;

const MODEL: &str = "claude-frontier";

fn prefix() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("You triage patient portal messages."),
        ChatMessage::system(
            "Schema card: disposition is one of emergency_now, urgent_same_day, routine.",
        ),
    ]
}

fn user_turn(messages: &[&str], params: Option<GenerateParams>) -> Turn {
    Turn {
        messages: messages.iter().map(|m| ChatMessage::user(*m)).collect(),
        generate: params,
        ..Default::default()
    }
}

#[tokio::test]
async fn anthropic_happy_path_caches_the_system_prefix_and_merges_user_messages() {
    let stub = Stub::start(Kind::Anthropic, &[MODEL]).await;
    let engine = AnthropicEngine::new(&stub.config(MODEL), key()).unwrap();
    let s = engine
        .open(OpenSession {
            prefix: prefix(),
            ..Default::default()
        })
        .await
        .unwrap();
    // careflow appends several user messages in a row (message, records, guidelines).
    let out = engine
        .turn(
            s.id,
            user_turn(
                &["patient message: chest tightness", "records: none"],
                Some(GenerateParams::text(64)),
            ),
        )
        .await
        .unwrap();
    let g = out.generation.unwrap();
    assert_eq!(g.text, "ok records: none");
    assert!(
        g.logprobs.is_empty() && g.piece_lens.is_empty(),
        "no logprobs from Anthropic"
    );

    let seen = stub.last();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"].to_str().unwrap(), KEY);
    assert_eq!(
        seen.headers["anthropic-version"].to_str().unwrap(),
        "2023-06-01"
    );
    assert!(seen.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert!(seen.headers.get("authorization").is_none());
    let body = seen.body;
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["temperature"], 0);
    let system = body["system"].as_array().unwrap();
    assert_eq!(system.len(), 2);
    assert!(system[0].get("cache_control").is_none());
    assert_eq!(
        system[1]["cache_control"],
        json!({"type": "ephemeral"}),
        "breakpoint on the prefix's last block"
    );
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "two user messages merged into one");
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"].as_array().unwrap().len(), 2);

    // First call writes the cache: all input is computed.
    let u = out.usage;
    assert!(u.submitted > 0);
    assert_eq!(u.reused, 0);
    assert_eq!(u.computed, u.submitted);
    assert_eq!(u.generated, 3);

    // Another session with the same prefix reads it back.
    let s2 = engine
        .open(OpenSession {
            prefix: prefix(),
            ..Default::default()
        })
        .await
        .unwrap();
    let out2 = engine
        .turn(
            s2.id,
            user_turn(
                &["patient message: refill please"],
                Some(GenerateParams::text(64)),
            ),
        )
        .await
        .unwrap();
    let prefix_words = (prefix()
        .iter()
        .map(|m| format!("system: {}", m.content).split_whitespace().count())
        .sum::<usize>()) as u64;
    assert_eq!(out2.usage.reused, prefix_words);
    assert_eq!(out2.usage.computed, out2.usage.submitted - prefix_words);
}

#[tokio::test]
async fn anthropic_json_schema_forces_the_answer_tool() {
    let stub = Stub::start(Kind::Anthropic, &[MODEL]).await;
    let engine = AnthropicEngine::new(&stub.config(MODEL), key()).unwrap();
    let answer = json!({"disposition": "emergency_now", "reasons": ["crushing chest pain"]});
    stub.set_answer(answer.clone());
    let schema = json!({"type": "object", "properties": {"disposition": {"type": "string"}}, "required": ["disposition"]});
    let s = engine
        .open(OpenSession {
            prefix: prefix(),
            ..Default::default()
        })
        .await
        .unwrap();
    let out = engine
        .turn(
            s.id,
            user_turn(
                &["crushing chest pain"],
                Some(GenerateParams::json(256, schema.clone())),
            ),
        )
        .await
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&out.generation.unwrap().text).unwrap();
    assert_eq!(parsed, answer);
    let body = stub.last().body;
    assert_eq!(body["tools"][0]["name"], "answer");
    assert_eq!(body["tools"][0]["input_schema"], schema);
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "answer"})
    );
}

#[tokio::test]
async fn anthropic_history_alternates_and_later_system_messages_stay_in_place() {
    let stub = Stub::start(Kind::Anthropic, &[MODEL]).await;
    let engine = AnthropicEngine::new(&stub.config(MODEL), key()).unwrap();
    let s = engine
        .open(OpenSession {
            prefix: prefix(),
            ..Default::default()
        })
        .await
        .unwrap();
    engine
        .turn(
            s.id,
            user_turn(&["plan the steps"], Some(GenerateParams::text(16))),
        )
        .await
        .unwrap();
    let turn = Turn {
        messages: vec![
            ChatMessage::user("guideline: chest pain with sweating is an emergency"),
            ChatMessage::system("Now decide the disposition."),
        ],
        generate: Some(GenerateParams::text(16)),
        ..Default::default()
    };
    // The stand-in server refuses non-alternating roles with a 400, as the real API does.
    engine.turn(s.id, turn).await.unwrap();
    let body = stub.last().body;
    let roles: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(
        body["system"].as_array().unwrap().len(),
        2,
        "the prefix alone is the system prompt"
    );
    let last = body["messages"][2]["content"].as_array().unwrap();
    assert_eq!(last[1]["text"], "Now decide the disposition.");
    assert_eq!(
        body["messages"][1]["content"][0]["text"],
        "ok plan the steps"
    );
}

#[tokio::test]
async fn anthropic_refuses_gbnf_and_non_object_schemas_before_any_call() {
    let stub = Stub::start(Kind::Anthropic, &[MODEL]).await;
    let engine = AnthropicEngine::new(&stub.config(MODEL), key()).unwrap();
    let s = engine.open(OpenSession::default()).await.unwrap();
    let gbnf = GenerateParams {
        max_tokens: 8,
        constraint: Some(Constraint::Gbnf("root ::= \"a\"".into())),
    };
    let err = engine
        .turn(s.id, user_turn(&["x"], Some(gbnf)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Constraint(m) if m.contains("GBNF")),
        "{err}"
    );
    let arr = GenerateParams::json(8, json!({"type": "array"}));
    let err = engine
        .turn(s.id, user_turn(&["x"], Some(arr)))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Constraint(_)), "{err}");
    assert_eq!(stub.calls(), 0);
}

#[tokio::test]
async fn anthropic_build_requires_a_key_from_the_environment() {
    let stub = Stub::start(Kind::Anthropic, &[MODEL]).await;
    let mut cfg = stub.config(MODEL);
    cfg.api_key_env = Some("CAREFLOW_REMOTE_TEST_SURELY_UNSET_KEY".into());
    let Err(err) = cfg.build() else {
        panic!("built without a key")
    };
    let err = err.to_string();
    assert!(
        err.contains("CAREFLOW_REMOTE_TEST_SURELY_UNSET_KEY"),
        "{err}"
    );
}
