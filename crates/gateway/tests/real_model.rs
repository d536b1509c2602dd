//! The real workflow on the embedded SmolLM2 model behind the gateway: a portal submission
//! for a synthetic patient and its read-back, then the OpenAI protocol with a standard
//! OpenAI client crate (async-openai): models, a completion, a stream. A few requests only.
//! Skipped (with a message) when the model is not in the cache (`careflow model pull`).

mod common;

use async_openai::config::OpenAIConfig;
use async_openai::types::{
    ChatCompletionRequestSystemMessageArgs, ChatCompletionRequestUserMessageArgs,
    CreateChatCompletionRequestArgs,
};
use careflow_engine::{models, EngineConfig};
use careflow_gateway::WorkflowService;
use careflow_knowledge::{Guidelines, RuleSet};
use careflow_records::Records;
use careflow_workflow::{TriageWorkflow, WorkflowConfig};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triage_and_the_openai_protocol_on_the_real_model() {
    let path = models::default_model_path();
    if !path.is_file() {
        println!(
            "skipped: {} is not cached (careflow model pull smollm2-135m)",
            path.display()
        );
        return;
    }
    let threads = std::env::var("CAREFLOW_THREADS")
        .ok()
        .and_then(|t| t.parse().ok());
    let engine = Arc::new(
        EngineConfig {
            threads,
            ..EngineConfig::for_model(&path)
        }
        .build()
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("careflow.db").display());
    let records = Records::connect(&db_url).await.unwrap();
    records.init().await.unwrap();
    records.synth(2, 7, &|_, _| {}).await.unwrap();
    let patient = records.patients(1).await.unwrap()[0];
    let workflow = TriageWorkflow::new(
        engine.clone(),
        Some(records),
        RuleSet::embedded().unwrap(),
        Guidelines::embedded().unwrap(),
        // Every case goes to human review (no frontier tier here): the portal's answer is held.
        WorkflowConfig {
            confidence_threshold: Some(0.99),
            ..WorkflowConfig::default()
        },
    )
    .unwrap();
    workflow.warm().await.unwrap();
    let ledger = careflow_ledger::Ledger::connect(&db_url).await.unwrap();
    let service = WorkflowService::new(Arc::new(workflow), engine.clone(), Some(ledger.clone()));
    let s = common::start_on(
        Arc::new(service),
        |c| c.request_deadline_ms = 300_000,
        dir,
        db_url,
    )
    .await;

    // Triage through the portal, for the patient in the token.
    let r = s
        .triage(
            patient.0,
            "I've had sharp lower back pain for 3 days. Should I be worried?",
        )
        .await;
    assert_eq!(r.status(), 200);
    let posted_text = r.text().await.unwrap();
    let posted: Value = serde_json::from_str(&posted_text).unwrap();
    let id = posted["request_id"].as_str().unwrap().to_string();
    // The portal's view: held for review, and nothing of the workflow's internals.
    assert_eq!(posted["decided_by"], "human_review", "{posted}");
    assert_eq!(posted["release"], "held_for_review");
    assert!(posted["patient_reply"].is_null() && posted["interim_reply"].is_string());
    assert!(posted.get("outcome").is_none(), "{posted}");
    // The clinician's view has the outcome, with the respond step's drafted answer.
    let full: Value = s
        .client
        .get(s.url(&format!("/v1/triage/{id}")))
        .bearer_auth(&s.clinician)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let outcome = &full["outcome"];
    for step in outcome["steps"].as_array().unwrap() {
        for v in step["output"]
            .as_object()
            .into_iter()
            .flat_map(|o| o.values())
        {
            // Free text (the drafted reply, reasons), not labels like a disposition.
            if let Some(text) = v.as_str().filter(|t| t.len() > 24 && t.contains(' ')) {
                assert!(
                    !posted_text.contains(&serde_json::to_string(text).unwrap()[1..text.len()]),
                    "a step's output reached the portal: {text}"
                );
            }
        }
    }
    assert_eq!(outcome["request_id"], id.as_str(), "one id everywhere");
    assert_eq!(outcome["patient_id"], patient.0);
    assert!(posted["disposition"].is_string());
    assert!(outcome["reasons"].is_array() && outcome["cited"].is_array());
    let steps = outcome["steps"].as_array().unwrap();
    assert!(steps.len() >= 4, "{steps:?}");
    assert!(steps.iter().all(|st| st["tier"].is_string()
        && st["usage"]["computed"].is_u64()
        && st["cost_usd"].is_number()));
    // Read back by the same patient; the audit row and the ledger carry the same id.
    let got: Value = s
        .client
        .get(s.url(&format!("/v1/triage/{id}")))
        .bearer_auth(&s.portal)
        .header("x-patient-token", s.issuer.token(patient.0))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["disposition"], posted["disposition"]);
    let audit = s.store.audit(&id).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        audit[0].disposition,
        posted["disposition"].as_str().unwrap()
    );
    assert!(
        audit[0].models.contains("smollm2") || audit[0].models.contains("SmolLM2"),
        "{}",
        audit[0].models
    );
    assert_eq!(ledger.entries(&id).await.unwrap().len(), steps.len());

    // The OpenAI protocol, with a standard client.
    let client = async_openai::Client::with_config(
        OpenAIConfig::new()
            .with_api_base(s.url("/v1"))
            .with_api_key(s.clinician.clone()),
    );
    let listed = client.models().list().await.unwrap();
    let model = listed.data[0].id.clone();
    let request = CreateChatCompletionRequestArgs::default()
        .model(model.clone())
        .max_tokens(12u32)
        .messages(vec![
            ChatCompletionRequestSystemMessageArgs::default()
                .content("You are a terse assistant.")
                .build()
                .unwrap()
                .into(),
            ChatCompletionRequestUserMessageArgs::default()
                .content("Say hello.")
                .build()
                .unwrap()
                .into(),
        ])
        .build()
        .unwrap();
    let response = client.chat().create(request.clone()).await.unwrap();
    assert_eq!(response.model, model);
    let whole = response.choices[0]
        .message
        .content
        .clone()
        .unwrap_or_default();
    assert!(response.choices[0]
        .message
        .content
        .as_deref()
        .is_some_and(|t| !t.is_empty()));
    let usage = response.usage.unwrap();
    assert!(
        usage.prompt_tokens > 0 && usage.completion_tokens > 0 && usage.completion_tokens <= 12
    );
    // The system prompt was seen before: its tokens come from the prefix cache.
    let mut stream = client.chat().create_stream(request).await.unwrap();
    let mut streamed = String::new();
    let mut finished = None;
    let mut content_chunks = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        for c in chunk.choices {
            if let Some(t) = c.delta.content {
                content_chunks += usize::from(!t.is_empty());
                streamed.push_str(&t);
            }
            if c.finish_reason.is_some() {
                finished = c.finish_reason;
            }
        }
    }
    assert!(!streamed.is_empty() && finished.is_some());
    // Token by token as the engine samples them, and the same greedy text as without streaming.
    assert!(content_chunks > 1, "{content_chunks} content chunks");
    assert_eq!(streamed, whole);
    // And cached tokens show in the usage of a raw request (the prefix is cached now).
    let raw: Value = s
        .client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&s.clinician)
        .json(&json!({
            "model": model, "max_tokens": 4,
            "messages": [{"role": "system", "content": "You are a terse assistant."}, {"role": "user", "content": "Say hello."}],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        raw["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 0,
        "{raw}"
    );
}
