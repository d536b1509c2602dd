//! The cascade end to end with two real local models: SmolLM2-135M as the small tier and
//! Qwen2.5-Coder-0.5B as the frontier tier (both through the embedded engine), the real rules,
//! the real prices file and a real SQLite ledger. Faults come from real parts too: an
//! OpenAI-compatible frontier on a port nobody listens on, a spent budget, a 1 ms deadline.

use careflow_core::{Disposition, PatientMessage};
use careflow_engine::{EmbeddedEngine, Engine, EngineConfig};
use careflow_knowledge::{Guidelines, RuleSet};
use careflow_ledger::{tiers, Ledger, Prices};
use careflow_workflow::{
    Budget, CascadeConfig, Decision, Mode, Tier, TriageRequest, TriageWorkflow, WorkflowConfig,
};
use std::sync::{Arc, OnceLock};

fn threads() -> Option<usize> {
    std::env::var("CAREFLOW_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
}

fn small_engine() -> Arc<dyn Engine> {
    static E: OnceLock<EmbeddedEngine> = OnceLock::new();
    let e = E.get_or_init(|| {
        EngineConfig {
            threads: threads(),
            ..EngineConfig::for_model(careflow_engine::models::default_model_path())
        }
        .build()
        .expect("small model (run `careflow model pull smollm2-135m`)")
    });
    Arc::new(e.clone())
}

fn frontier_engine() -> Arc<dyn Engine> {
    static E: OnceLock<EmbeddedEngine> = OnceLock::new();
    let e = E.get_or_init(|| {
        let model = careflow_engine::models::find("qwen2.5-coder-0.5b")
            .expect("qwen in the registry")
            .path();
        EngineConfig {
            threads: threads(),
            kv_cells: 8192,
            max_sequences: 4,
            ..EngineConfig::for_model(model)
        }
        .build()
        .expect("frontier model (run `careflow model pull qwen2.5-coder-0.5b`)")
    });
    Arc::new(e.clone())
}

fn priced(name: &str, engine: Arc<dyn Engine>, key: &str) -> Tier {
    let prices = Prices::embedded().unwrap();
    Tier::new(name, engine).priced(key, prices.tier(key).unwrap().clone())
}

/// The policy under test: the small model's answer stands at a label probability of 0.2 or
/// more when nothing conflicts; anything else escalates.
fn config() -> WorkflowConfig {
    WorkflowConfig {
        mode: Mode::StatefulPrefixCache,
        confidence_threshold: Some(0.2),
        ..Default::default()
    }
}

fn workflow(config: WorkflowConfig, frontier: Option<Tier>) -> TriageWorkflow {
    let wf = TriageWorkflow::new(
        small_engine(),
        None,
        RuleSet::embedded().unwrap(),
        Guidelines::embedded().unwrap(),
        config,
    )
    .unwrap()
    .with_small_tier(priced("small", small_engine(), tiers::LOCAL_SMALL));
    match frontier {
        Some(f) => wf.with_frontier(f),
        None => wf,
    }
}

fn request(text: &str) -> TriageRequest {
    TriageRequest {
        message: PatientMessage::parse(text).unwrap(),
        patient: None,
    }
}

const EASY: &str = "I have a mild cold with a runny nose since yesterday, no fever.";
/// SmolLM2 routes this to `admin`, which Validate refuses for a message with symptoms.
const FAILS_VALIDATION: &str = "I've had sharp lower back pain for 3 days. Should I be worried?";

#[tokio::test]
async fn easy_cases_stay_small_a_failed_validation_reaches_the_frontier_and_the_ledger_adds_up() {
    let frontier = priced("frontier", frontier_engine(), tiers::LOCAL_FRONTIER);
    let wf = workflow(config(), Some(frontier));
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::connect(&format!("sqlite://{}", dir.path().join("l.db").display()))
        .await
        .unwrap();

    // An easy message: accepted from the small tier, no frontier call, no frontier cost.
    let easy = wf.run(request(EASY)).await.unwrap();
    assert_eq!(easy.route.decided_by, "small", "{:?}", easy.route);
    assert!(!easy.route.escalated);
    assert_eq!(easy.decision, Decision::Accept);
    assert!(easy.steps.iter().all(|s| s.tier == "small"));
    ledger.record(&easy.ledger_entries()).await.unwrap();

    // A case that fails validation: the frontier decides, from a compact summary.
    let hard = wf.run(request(FAILS_VALIDATION)).await.unwrap();
    assert!(hard.route.escalated);
    assert!(
        hard.route
            .reasons
            .iter()
            .any(|r| r.contains("admin route proposed")),
        "{:?}",
        hard.route.reasons
    );
    let frontier_step = hard
        .steps
        .iter()
        .find(|s| s.step == "frontier")
        .expect("the frontier tier was called");
    assert_eq!(frontier_step.tier, "frontier");
    assert!(
        frontier_step.model.contains("qwen"),
        "{}",
        frontier_step.model
    );
    let handoff = hard
        .route
        .handoff
        .as_ref()
        .expect("a hand-off was recorded");
    assert!(handoff.summary.contains(FAILS_VALIDATION));
    assert!(handoff.summary.contains("Guideline passages:\n[back-"));
    // Compact: the frontier is sent the case, not the small session's transcript.
    assert!(
        handoff.tokens_submitted * 3 < handoff.transcript_tokens,
        "hand-off {} tokens vs transcript {}",
        handoff.tokens_submitted,
        handoff.transcript_tokens
    );
    assert!(!handoff.summary.contains("# Patient record tables"));
    // Who decided is recorded, and the outcome follows from it.
    match hard.route.decided_by.as_str() {
        "frontier" => {
            assert_eq!(hard.decision, Decision::Escalate);
            let answered: Disposition = handoff.answer["disposition"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(!hard.disposition.is_below(answered));
        }
        "human_review" => assert_eq!(hard.decision, Decision::HumanReview),
        other => panic!("decided by {other}"),
    }
    ledger.record(&hard.ledger_entries()).await.unwrap();

    // The ledger adds up: per step, per request, per tier.
    let step_sum: f64 = hard.steps.iter().map(|s| s.cost_usd).sum();
    assert!((step_sum - hard.cost_usd).abs() < 1e-12);
    let frontier_cost = frontier_step.cost_usd;
    assert!(
        frontier_cost > 0.0,
        "the frontier is priced like a flagship API"
    );
    let stored = ledger.entries(&hard.request_id).await.unwrap();
    assert_eq!(stored.len(), hard.steps.len());
    let stored_cost: f64 = stored.iter().map(|e| e.cost_usd).sum();
    assert!((stored_cost - hard.cost_usd).abs() < 1e-9);
    let spent = ledger
        .spent_since(Some(tiers::LOCAL_FRONTIER), 0)
        .await
        .unwrap();
    assert!(
        (spent - frontier_cost).abs() < 1e-9,
        "{spent} vs {frontier_cost}"
    );
    let summary = ledger.summary(0).await.unwrap();
    assert_eq!(summary.requests, 2);
    let total = easy.cost_usd + hard.cost_usd;
    assert!((summary.cost_usd - total).abs() < 1e-9, "{summary:?}");
    // The budget counted the frontier's spend.
    assert!((wf.budget().spent().unwrap() - frontier_cost).abs() < 1e-12);
}

#[tokio::test]
async fn an_unreachable_frontier_sends_the_case_to_human_review_with_the_reason() {
    // A real HTTP client against a port nobody listens on: connection refused, every time.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let remote = careflow_remote::RemoteConfig {
        max_attempts: 2,
        backoff_base_ms: 10,
        backoff_max_ms: 20,
        ..careflow_remote::RemoteConfig::openai(format!("http://127.0.0.1:{port}/v1"), "frontier")
    }
    .build_with_key(None)
    .unwrap();
    let wf = workflow(
        config(),
        Some(priced("frontier", remote, tiers::FLAGSHIP_API)),
    );
    let o = wf.run(request(FAILS_VALIDATION)).await.unwrap();
    assert_eq!(o.decision, Decision::HumanReview);
    assert_eq!(o.route.decided_by, "human_review");
    assert!(
        o.route.outcome.contains("frontier tier is unavailable"),
        "{}",
        o.route.outcome
    );
    assert!(o.notes.iter().any(|n| n.contains("sent to human review")));
    // The failed call is on the record, at no cost.
    let f = o.steps.iter().find(|s| s.step == "frontier").unwrap();
    assert!(f.output["error"].as_str().unwrap().contains("unavailable"));
    assert_eq!(f.cost_usd, 0.0);
    // Never silently accepted from the small model.
    assert_ne!(o.decision, Decision::Accept);
}

#[tokio::test]
async fn a_spent_budget_routes_to_human_review_not_to_silence() {
    let frontier = priced("frontier", frontier_engine(), tiers::LOCAL_FRONTIER);
    let wf = workflow(config(), Some(frontier)).with_budget(Arc::new(Budget::new(0.01, 0.0125)));
    let o = wf.run(request(FAILS_VALIDATION)).await.unwrap();
    assert_eq!(o.decision, Decision::HumanReview);
    assert!(o.route.escalated);
    assert!(
        o.route.outcome.contains("daily budget is spent"),
        "{}",
        o.route.outcome
    );
    assert!(
        o.steps.iter().all(|s| s.step != "frontier"),
        "no frontier call past the budget"
    );
    // The easy case is unaffected by the frontier's budget.
    let easy = wf.run(request(EASY)).await.unwrap();
    assert_eq!(easy.decision, Decision::Accept);
}

#[tokio::test]
async fn past_the_step_deadline_the_case_escalates_and_still_has_an_outcome() {
    let config = WorkflowConfig {
        step_deadline_ms: Some(1),
        cascade: CascadeConfig::default(),
        ..config()
    };
    let o = workflow(config, None).run(request(EASY)).await.unwrap();
    assert_eq!(o.decision, Decision::HumanReview);
    assert!(
        o.notes.iter().any(|n| n.contains("deadline")),
        "{:?}",
        o.notes
    );
    assert!(
        o.patient_reply.contains("careflow"),
        "the safety net is still there"
    );
}

#[tokio::test]
async fn a_transition_that_skips_validate_cannot_skip_the_decision() {
    // A workflow file whose plan always jumps straight to respond.
    let text = careflow_workflow::definition::TRIAGE_TOML.replacen(
        "on = [{ field = \"complexity\", equals = \"complex\", escalate = \"the plan marks the case complex\" }]",
        "on = [{ field = \"needs_record\", equals = true, goto = \"respond\" }, { field = \"needs_record\", equals = false, goto = \"respond\" }]",
        1,
    );
    assert_ne!(text, careflow_workflow::definition::TRIAGE_TOML);
    let def = careflow_workflow::WorkflowDef::parse(&text, "jump.toml").unwrap();
    let wf = workflow(config(), None).with_definition(def).unwrap();
    let o = wf.run(request(EASY)).await.unwrap();
    let steps: Vec<&str> = o.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(steps, ["plan", "respond"]);
    assert_eq!(o.decision, Decision::HumanReview);
    assert!(
        o.notes
            .iter()
            .any(|n| n.contains("reached before the validate step")),
        "{:?}",
        o.notes
    );
    assert!(o
        .patient_reply
        .ends_with(careflow_workflow::prompts::SAFETY_NET));
}
