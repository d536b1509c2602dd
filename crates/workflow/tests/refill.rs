//! A second workflow, from its file alone: medication refill requests run on the same code,
//! engine, guard, patient scope, red-flag floor and safety net as triage (issue 5: "a second,
//! different workflow file must run without code changes").

use careflow_core::{Disposition, PatientId, PatientMessage};
use careflow_engine::{EmbeddedEngine, Engine, EngineConfig};
use careflow_knowledge::{Guidelines, RuleSet};
use careflow_records::Records;
use careflow_workflow::{TriageRequest, TriageWorkflow, WorkflowConfig, WorkflowDef};
use std::path::Path;
use std::sync::Arc;

fn engine() -> Arc<dyn Engine> {
    let e: EmbeddedEngine = EngineConfig {
        threads: std::env::var("CAREFLOW_THREADS")
            .ok()
            .and_then(|v| v.parse().ok()),
        ..EngineConfig::for_model(careflow_engine::models::default_model_path())
    }
    .build()
    .expect("engine starts (run `careflow model pull smollm2-135m`)");
    Arc::new(e)
}

#[tokio::test]
async fn the_refill_workflow_runs_from_its_file_and_keeps_the_red_flag_floor() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::connect(&format!("sqlite://{}", dir.path().join("r.db").display()))
        .await
        .unwrap();
    records.init().await.unwrap();
    let zip = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/omop/Synthea27Nj_5.4.zip"
    );
    records
        .load_omop_zip(Path::new(zip), None, &|_, _| {})
        .await
        .unwrap();
    let patient = records.patients(1).await.unwrap()[0];
    // Loaded from the file on disk, as an operator would point to it.
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/workflows/medication_refill.toml"
    );
    let def = WorkflowDef::load(Path::new(file)).unwrap();
    let wf = TriageWorkflow::new(
        engine(),
        Some(records),
        RuleSet::embedded().unwrap(),
        Guidelines::embedded().unwrap(),
        WorkflowConfig {
            today: Some("2022-10-15".into()),
            ..Default::default()
        },
    )
    .unwrap()
    .with_definition(def)
    .unwrap();

    let o = wf
        .run(TriageRequest {
            message: PatientMessage::parse(
                "Could you please refill my metformin? I have one week of tablets left.",
            )
            .unwrap(),
            patient: Some(patient),
        })
        .await
        .unwrap();
    assert_eq!(o.workflow, "medication_refill");
    let steps: Vec<&str> = o.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        steps,
        ["plan", "medications", "check", "validate", "respond"]
    );
    // The plan's and the check's outputs follow the refill file's schemas, not triage's.
    let plan = &o.steps[0].output;
    assert!(
        plan["medicine"].is_string() && plan["mentions_symptoms"].is_boolean(),
        "{plan}"
    );
    let check = &o.steps[2].output;
    assert!(check["on_current_list"].is_boolean(), "{check}");
    // The record was read through the patient scope (model SQL or the fixed summary).
    assert!(o.record_summary.is_some());
    let sql = o.sql.as_ref().expect("the SQL sub-step ran");
    assert!(sql.sql_run.is_some() || sql.fallback_reason.is_some());
    // The reply field is the refill file's (`message`), with careflow's safety net.
    assert!(o
        .patient_reply
        .ends_with(careflow_workflow::prompts::SAFETY_NET));
    // One session: the shared prefix (the refill file's own) was computed once.
    assert_eq!(o.totals.submitted, o.totals.computed + o.totals.reused);

    // A refill request that reports a red flag is triaged at the rule's level.
    let o = wf
        .run(TriageRequest {
            message: PatientMessage::parse(
                "Please refill my inhaler. Also I have crushing chest pain spreading to my left arm right now.",
            )
            .unwrap(),
            patient: Some(PatientId(patient.0)),
        })
        .await
        .unwrap();
    assert_eq!(
        o.floor,
        Some(Disposition::EmergencyNow),
        "{:?}",
        o.rules_fired
    );
    assert_eq!(o.disposition, Disposition::EmergencyNow);
}
