//! The triage workflow end to end, with the real model, the real rules and a real SQLite
//! records database.

use careflow_core::{Disposition, PatientId, PatientMessage};
use careflow_engine::{EmbeddedEngine, Engine, EngineConfig};
use careflow_knowledge::{Guidelines, RuleSet};
use careflow_records::Records;
use careflow_workflow::{
    Decision, Mode, TriageRequest, TriageWorkflow, WorkflowConfig, WorkflowError,
};
use std::sync::{Arc, OnceLock};

fn engine() -> Arc<dyn Engine> {
    static E: OnceLock<EmbeddedEngine> = OnceLock::new();
    let e = E.get_or_init(|| {
        let model = std::env::var("CAREFLOW_MODEL")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| careflow_engine::models::default_model_path());
        EngineConfig {
            threads: std::env::var("CAREFLOW_THREADS")
                .ok()
                .and_then(|v| v.parse().ok()),
            ..EngineConfig::for_model(model)
        }
        .build()
        .expect("engine starts (run `careflow model pull smollm2-135m`)")
    });
    Arc::new(e.clone())
}

fn workflow(mode: Mode, records: Option<Records>) -> TriageWorkflow {
    TriageWorkflow::new(
        engine(),
        records,
        RuleSet::embedded().unwrap(),
        Guidelines::embedded().unwrap(),
        WorkflowConfig {
            mode,
            today: Some("2024-06-01".into()),
            ..Default::default()
        },
    )
    .unwrap()
}

fn request(text: &str, patient: Option<i64>) -> TriageRequest {
    TriageRequest {
        message: PatientMessage::parse(text).unwrap(),
        patient: patient.map(PatientId),
    }
}

async fn records_with_sample() -> (tempfile::TempDir, Records) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let r = Records::connect(&url).await.unwrap();
    r.init().await.unwrap();
    let zip = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/omop/Synthea27Nj_5.4.zip"
    );
    r.load_omop_zip(std::path::Path::new(zip), None, &|_, _| {})
        .await
        .unwrap();
    (dir, r)
}

#[tokio::test]
async fn the_seed_message_runs_every_step_and_the_counters_add_up() {
    let wf = workflow(Mode::StatefulPrefixCache, None);
    let o = wf
        .run(request(
            "I've had sharp lower back pain for 3 days. Should I be worried?",
            None,
        ))
        .await
        .unwrap();
    let steps: Vec<&str> = o.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        steps,
        ["plan", "retrieve", "analyze", "validate", "respond"]
    );
    assert!(o.steps.iter().all(|s| s.tier == "small"));
    // Without a frontier tier nothing is escalated to one: the small tier or a clinician decides.
    assert!(["small", "human_review"].contains(&o.route.decided_by.as_str()));
    assert_eq!(
        o.route.decided_by == "human_review",
        o.decision == Decision::HumanReview
    );
    let sum: careflow_core::TokenUsage = o.steps.iter().map(|s| s.usage).sum();
    assert_eq!(sum.computed, o.totals.computed);
    assert_eq!(sum.generated, o.totals.generated);
    assert_eq!(o.totals.submitted, o.totals.computed + o.totals.reused);
    // No red flag in this message: it does not come out as an emergency.
    assert_eq!(o.floor, None);
    assert_ne!(o.disposition, Disposition::EmergencyNow);
    assert!(o.patient_reply.contains("careflow"));
    assert!(!o.patient_reply.is_empty());
    // The JSON a script reads has a top-level disposition.
    let v = serde_json::to_value(&o).unwrap();
    assert!(v["disposition"]
        .as_str()
        .unwrap()
        .parse::<Disposition>()
        .is_ok());
}

#[tokio::test]
async fn the_second_request_reuses_the_shared_prefix_and_computes_only_its_own_tokens() {
    let wf = workflow(Mode::StatefulPrefixCache, None);
    wf.warm().await.unwrap();
    let o = wf
        .run(request("My throat is sore since Monday.", None))
        .await
        .unwrap();
    assert!(o.prefix_tokens > 200, "prefix {}", o.prefix_tokens);
    assert_eq!(
        o.totals.reused, o.prefix_tokens,
        "the prefix is forked, not computed"
    );
    let work = o.totals.computed + o.totals.generated;
    let new = o.transcript_tokens - o.prefix_tokens;
    assert!(
        work as f64 <= new as f64 * 1.05,
        "work {work} vs new tokens {new}: something was computed twice"
    );

    // The same request, stateless, recomputes the prefix and transcript at each generating step.
    let stateless = workflow(Mode::Stateless, None)
        .run(request("My throat is sore since Monday.", None))
        .await
        .unwrap();
    assert!(stateless.totals.computed > 3 * o.prefix_tokens);
    assert!(stateless.totals.computed > 3 * o.totals.computed);
}

#[tokio::test]
async fn a_red_flag_floor_holds_whatever_the_model_says() {
    let wf = workflow(Mode::StatefulPrefixCache, None);
    let o = wf
        .run(request(
            "My lower back hurts and since this morning I can't control my bladder and it's numb between my legs.",
            None,
        ))
        .await
        .unwrap();
    assert_eq!(o.floor, Some(Disposition::EmergencyNow));
    assert_eq!(o.disposition, Disposition::EmergencyNow);
    assert!(o.rules_fired.iter().any(|r| r.id.contains("cauda")));
    if o.proposed != Some(Disposition::EmergencyNow) {
        assert_ne!(
            o.decision,
            Decision::Accept,
            "a raised floor is never a plain accept"
        );
        assert!(o.notes.iter().any(|n| n.contains("raised")));
    }
}

#[tokio::test]
async fn the_record_of_the_named_patient_is_read_and_an_unknown_patient_is_refused() {
    let (_dir, records) = records_with_sample().await;
    let patient = records.patients(1).await.unwrap()[0];
    let wf = workflow(Mode::StatefulPrefixCache, Some(records));
    let o = wf
        .run(request(
            "I have a mild headache since this morning.",
            Some(patient.0),
        ))
        .await
        .unwrap();
    let summary = o.record_summary.expect("the record was read");
    assert!(summary.contains("Age"), "{summary}");
    assert_eq!(o.patient_id, Some(patient.0));
    // The model wrote SQL; it either ran inside the patient's scope or fell back with a reason.
    let sql = o.sql.expect("the SQL step ran");
    match &sql.fallback_reason {
        None => assert!(sql.sql_run.as_deref().unwrap().contains("person_id")),
        Some(reason) => assert!(!reason.is_empty() && sql.sql_run.is_none()),
    }

    let err = wf
        .run(request("I have a mild headache.", Some(987_654_321)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, WorkflowError::UnknownPatient(987_654_321)),
        "{err}"
    );
}
