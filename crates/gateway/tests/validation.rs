//! Bodies the gateway refuses, each over a real HTTP connection, each naming its field.

mod common;

use careflow_gateway::NoopService;
use common::{error_of, start};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_400_naming_the_field() {
    let s = start(Arc::new(NoopService::new()), |_| {}).await;
    let token = s.issuer.token(1);
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        ("cut off", "{\"message\": \"hi\"", "malformed_json", None),
        (
            "cut off in a value",
            "{\"message\": \"hi",
            "malformed_json",
            Some("message"),
        ),
        ("not json", "hello", "malformed_json", None),
        ("not an object", "[\"hi\"]", "invalid_type", None),
        (
            "wrong type",
            "{\"message\": 42}",
            "invalid_type",
            Some("message"),
        ),
        (
            "wrong type workflow",
            "{\"message\": \"hi\", \"workflow\": 1}",
            "invalid_type",
            Some("workflow"),
        ),
        (
            "unknown field",
            "{\"message\": \"hi\", \"urgent\": true}",
            "unknown_field",
            Some("urgent"),
        ),
        (
            "identity in body",
            "{\"message\": \"hi\", \"patient_id\": 2}",
            "identity_in_body",
            Some("patient_id"),
        ),
        (
            "escaped control character",
            "{\"message\": \"chest pain\\u0007\"}",
            "invalid_message",
            Some("message"),
        ),
        (
            "raw control character",
            "{\"message\": \"chest\u{1}pain\"}",
            "malformed_json",
            Some("message"),
        ),
        (
            "empty message",
            "{\"message\": \"   \"}",
            "invalid_message",
            Some("message"),
        ),
        ("missing message", "{}", "missing_field", Some("message")),
        (
            "another workflow",
            "{\"message\": \"hi\", \"workflow\": \"refills\"}",
            "invalid_field",
            Some("workflow"),
        ),
    ];
    for (what, body, code, field) in cases {
        let r = s
            .triage_raw(&s.portal, Some(&token), body.to_string(), None)
            .await;
        let (status, e) = error_of(r).await;
        assert_eq!(status, 400, "{what}: {e}");
        assert_eq!(e["code"].as_str(), Some(*code), "{what}: {e}");
        assert_eq!(e["field"].as_str(), *field, "{what}: {e}");
        if let Some(f) = field {
            assert!(e["message"].as_str().unwrap().starts_with(f), "{what}: {e}");
        }
    }
    let long = format!("{{\"message\": \"{}\"}}", "a".repeat(4001));
    let (status, e) = error_of(s.triage_raw(&s.portal, Some(&token), long, None).await).await;
    assert_eq!((status, e["field"].as_str()), (400, Some("message")), "{e}");
    // A bad Idempotency-Key header is named too.
    let r = s
        .triage_raw(
            &s.portal,
            Some(&token),
            "{\"message\": \"hi\"}".into(),
            Some("has space"),
        )
        .await;
    let (status, e) = error_of(r).await;
    assert_eq!(
        (status, e["field"].as_str()),
        (400, Some("Idempotency-Key")),
        "{e}"
    );
    // Nothing of it was accepted.
    assert!(s.store.requests().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_413_and_a_non_json_one_415() {
    let s = start(Arc::new(NoopService::new()), |c| c.body_limit_bytes = 4096).await;
    let token = s.issuer.token(1);
    let big = format!("{{\"message\": \"{}\"}}", "a".repeat(8000));
    let (status, e) = error_of(s.triage_raw(&s.portal, Some(&token), big, None).await).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (413, Some("body_too_large")),
        "{e}"
    );
    let r = s
        .client
        .post(s.url("/v1/triage"))
        .bearer_auth(&s.portal)
        .header("x-patient-token", &token)
        .header("content-type", "text/plain")
        .body("{\"message\": \"hi\"}")
        .send()
        .await
        .unwrap();
    let (status, e) = error_of(r).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_bodies_name_their_fields_too() {
    let s = start(Arc::new(NoopService::new()), |_| {}).await;
    let cases = [
        (r#"{"model": "noop", "messages": "hi"}"#, "messages"),
        (
            r#"{"model": "noop", "messages": [{"role": "user", "content": 3}]}"#,
            "messages[0].content",
        ),
        (
            r#"{"model": "noop", "messages": [{"role": "robot", "content": "hi"}]}"#,
            "messages[0].role",
        ),
        (
            r#"{"model": "noop", "messages": [{"role": "user", "content": "a\u0000b"}]}"#,
            "messages[0].content",
        ),
        (
            r#"{"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}"#,
            "model",
        ),
        (
            r#"{"model": "noop", "messages": [{"role": "system", "content": "hi"}]}"#,
            "messages",
        ),
    ];
    for (body, field) in cases {
        let r = s
            .client
            .post(s.url("/v1/chat/completions"))
            .bearer_auth(&s.clinician)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, e) = error_of(r).await;
        assert_eq!(
            (status, e["field"].as_str()),
            (400, Some(field)),
            "{body}: {e}"
        );
    }
}
