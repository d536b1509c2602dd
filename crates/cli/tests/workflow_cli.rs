//! Workflow files, the cost ledger and their errors, through the real binary.

mod common;

use common::careflow;

fn repo(path: &str) -> String {
    format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_broken_workflow_file_is_named_with_its_step_and_field_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("data/workflows/medication_refill.toml")).unwrap();
    let broken = text.replacen("proposal = \"check\"", "proposal = \"chekc\"", 1);
    assert_ne!(text, broken);
    let path = dir.path().join("refill.toml");
    std::fs::write(&path, broken).unwrap();
    let started = std::time::Instant::now();
    let out = careflow(
        &[
            "triage",
            "--workflow",
            path.to_str().unwrap(),
            "refill my inhaler please",
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refill.toml"), "{err}");
    assert!(err.contains("step `validate`"), "{err}");
    assert!(
        err.contains("field `proposal`") && err.contains("chekc"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // Refused before a model was loaded, and nothing was written.
    assert!(started.elapsed().as_secs() < 5);
    assert!(!dir.path().join("careflow.db").exists());
}

#[test]
fn a_second_workflow_runs_from_its_file_and_every_triage_lands_in_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let out = careflow(
        &[
            "triage",
            "--json",
            "--workflow",
            &repo("data/workflows/medication_refill.toml"),
            "Could you refill my lisinopril? Nothing else has changed.",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["workflow"], "medication_refill");
    let steps: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["plan", "medications", "check", "validate", "respond"]
    );
    let cost = v["cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0, "priced on the small tier");

    // The ledger has the request, and `careflow cost` projects from it.
    let out = careflow(&["cost", "--from-ledger", "--json"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["ledger"]["requests"], 1);
    assert_eq!(c["ledger"]["entries"], 5);
    let recorded = c["ledger"]["per_request"]["cost_usd"].as_f64().unwrap();
    assert!((recorded - cost).abs() < 1e-9, "{recorded} vs {cost}");
    assert_eq!(c["ledger"]["by_tier"][0]["tier"], "local_small");
}
