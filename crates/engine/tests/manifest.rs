//! Adapters loaded by manifest: the manifest's name, the refusal of an adapter trained for
//! another base model, and errors that name the file.

mod common;

use careflow_engine::manifest::{self, AdapterManifest, FORMAT};
use careflow_engine::{
    AdapterConfig, ChatMessage, Engine, EngineConfig, EngineError, OpenSession, Turn,
};
use std::path::{Path, PathBuf};

/// A real (synthetic) adapter for the test model with a manifest naming `base_sha256`.
fn adapter_with_manifest(dir: &Path, name: &str, base_sha256: &str) -> PathBuf {
    let gguf = dir.join(format!("{name}.gguf"));
    let spec = careflow_engine::gguf::lora_spec_for_model(&common::model_path(), 4, 7).unwrap();
    careflow_engine::gguf::write_lora(&gguf, &spec).unwrap();
    let m = serde_json::json!({
        "format": FORMAT,
        "name": name,
        "step": "plan",
        "mode": "alora",
        "adapter_file": format!("{name}.gguf"),
        "base_model": {"sha256": base_sha256, "file": "some-base.gguf", "size": 1},
        "dataset": {"file": "plan.jsonl", "sha256": "00", "examples": 8},
        "hyperparameters": {"rank": 4},
        "metrics": {"train_loss_last": 0.5},
        "alora_invocation_tokens": [1, 4093, 198],
    });
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    path
}

fn config(adapters: Vec<AdapterConfig>) -> EngineConfig {
    EngineConfig {
        threads: Some(common::test_threads()),
        kv_cells: 2048,
        max_sequences: 4,
        session_max_tokens: 1024,
        adapters,
        ..EngineConfig::for_model(common::model_path())
    }
}

fn model_sha() -> String {
    manifest::file_sha256(&common::model_path()).unwrap()
}

#[test]
fn the_model_sha256_is_the_registry_s_and_is_cached() {
    let path = common::model_path();
    let t = std::time::Instant::now();
    let sha = manifest::file_sha256(&path).unwrap();
    let first = t.elapsed();
    if path == careflow_engine::models::default_model_path() {
        let known = careflow_engine::models::find("smollm2-135m").unwrap();
        assert_eq!(sha, known.sha256);
    }
    let t = std::time::Instant::now();
    assert_eq!(manifest::file_sha256(&path).unwrap(), sha);
    assert!(
        t.elapsed() < first / 10 + std::time::Duration::from_millis(2),
        "{:?} vs {first:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_loads_by_its_manifest_and_changes_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let path = adapter_with_manifest(dir.path(), "plan-v1", &model_sha());
    let a = AdapterConfig::from_manifest(&path).unwrap();
    assert_eq!(a.name, "plan-v1");
    let m = AdapterManifest::load(&path).unwrap();
    assert_eq!(m.alora_invocation_tokens, Some(vec![1, 4093, 198]));
    assert_eq!(m.adapter_path(&path), dir.path().join("plan-v1.gguf"));

    let engine = config(vec![a]).build().unwrap();
    assert_eq!(engine.info().adapters, vec!["plan-v1".to_string()]);
    let mut logits = Vec::new();
    for adapter in [None, Some("plan-v1".to_string())] {
        let s = engine
            .open(OpenSession {
                prefix: vec![ChatMessage::system("You are careflow.")],
                ..Default::default()
            })
            .await
            .unwrap();
        let out = engine
            .turn(
                s.id,
                Turn {
                    messages: vec![ChatMessage::user("PLAN. I have a headache.")],
                    adapter,
                    return_logits: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        engine.close(s.id).await.unwrap();
        logits.push(out.logits.unwrap());
    }
    let diff = logits[0]
        .iter()
        .zip(&logits[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff > 1e-3,
        "the adapter did not change the logits ({diff})"
    );
}

#[test]
fn an_adapter_for_another_base_is_refused_naming_both_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let other = "ab".repeat(32);
    let path = adapter_with_manifest(dir.path(), "plan", &other);
    let served = model_sha();
    // By manifest, and by the GGUF path with the manifest beside it.
    for given in [path.clone(), dir.path().join("plan.gguf")] {
        let err = config(vec![AdapterConfig {
            name: "plan".into(),
            path: given,
            scale: 1.0,
        }])
        .build()
        .err()
        .expect("refused");
        match &err {
            EngineError::AdapterBaseMismatch {
                name,
                manifest,
                trained_on,
                served: s,
                ..
            } => {
                assert_eq!(name, "plan");
                assert_eq!(manifest, &path);
                assert!(trained_on.starts_with(&other), "{trained_on}");
                assert_eq!(s, &served);
            }
            other => panic!("expected AdapterBaseMismatch, got {other}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(&other) && text.contains(&served),
            "the message names both: {text}"
        );
        assert!(text.contains("plan.json"), "{text}");
    }
}

#[test]
fn a_broken_manifest_or_a_missing_adapter_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    std::fs::write(&path, "{\"format\": \"careflow-adapter/1\", \"name\": ").unwrap();
    let err = config(vec![AdapterConfig {
        name: "broken".into(),
        path: path.clone(),
        scale: 1.0,
    }])
    .build()
    .err()
    .expect("refused");
    assert!(
        matches!(&err, EngineError::AdapterLoad { reason, .. } if reason.contains("broken.json")),
        "{err}"
    );
    assert!(AdapterConfig::from_manifest(&path).is_err());

    let ok = adapter_with_manifest(dir.path(), "gone", &model_sha());
    std::fs::remove_file(dir.path().join("gone.gguf")).unwrap();
    let err = config(vec![AdapterConfig::from_manifest(&ok).unwrap()])
        .build()
        .err()
        .expect("refused");
    assert!(
        matches!(&err, EngineError::AdapterLoad { path, reason, .. }
            if path.ends_with("gone.gguf") && reason.contains("gone.json")),
        "{err}"
    );
}

#[test]
fn manifests_in_a_directory_are_listed_and_a_stray_json_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    adapter_with_manifest(dir.path(), "analyze", &model_sha());
    adapter_with_manifest(dir.path(), "plan", &model_sha());
    std::fs::write(dir.path().join("notes.json"), "[]").unwrap();
    let found = manifest::list(dir.path()).unwrap();
    let names: Vec<String> = found
        .iter()
        .map(|(_, m)| m.as_ref().map(|m| m.name.clone()).unwrap_or_default())
        .collect();
    assert_eq!(names, vec!["analyze", "", "plan"]);
    assert!(found[1].1.as_ref().unwrap_err().contains("notes.json"));
}
