//! Distillation through the real binary: a tiny end-to-end run (the small model as its own
//! teacher, a handful of messages, one step, a few optimizer steps — the point is the pipeline,
//! not the quality), bad datasets, and adapters trained for another base.
//!
//! Needs the default model (`careflow model pull smollm2-135m`) and the training environment
//! (`CAREFLOW_WITH_TRAINING=1 scripts/setup.sh`; scripts/test.sh does both). Without the
//! training environment the end-to-end test fails, saying how to install it.

mod common;

use serde_json::Value;
use std::path::Path;
use std::process::Output;

const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

use common::careflow;

fn ok(out: &Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_tiny_distillation_trains_an_alora_adapter_that_the_engine_loads_uses_and_serves_on_the_shared_prefix(
) {
    let tmp = tempfile::tempdir().unwrap();
    let (traces, adapters) = (tmp.path().join("traces"), tmp.path().join("adapters"));

    // 0. The training environment first: without it, say how to install it before any work.
    let out = careflow(&["distill", "train", "--check-env"], tmp.path());
    assert!(
        out.status.success(),
        "the training environment is missing — run `CAREFLOW_WITH_TRAINING=1 scripts/setup.sh`:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 1. Traces: the small model is the teacher here (fast); the plan step's dataset only.
    let out = careflow(
        &[
            "distill",
            "generate",
            "--frontier",
            "smollm2-135m",
            "--synthetic",
            "6",
            "--seed",
            "3",
            "--steps",
            "plan",
            "--out",
            s(&traces),
            "--json",
        ],
        tmp.path(),
    );
    let g = ok(&out, "distill generate");
    assert_eq!(g["traces"]["run"], 6);
    let kept = g["steps"]["plan"]["kept"].as_u64().unwrap();
    assert!(kept >= 3, "too few plan examples: {g}");
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(traces.join("plan.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let msgs = first["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "system, the plan prompt, the plan answer");
    assert!(msgs[1]["content"].as_str().unwrap().starts_with("PLAN."));
    let answer: Value = serde_json::from_str(msgs[2]["content"].as_str().unwrap()).unwrap();
    assert!(answer.get("complexity").is_some(), "{answer}");
    assert!(!traces.join("analyze.jsonl").exists());

    // 2. One aLoRA adapter: rank 4, 10 optimizer steps of one example.
    let out = careflow(
        &[
            "distill",
            "train",
            "--data",
            s(&traces),
            "--out",
            s(&adapters),
            "--only",
            "plan",
            "--mode",
            "alora",
            "--steps",
            "10",
            "--rank",
            "4",
            "--batch",
            "1",
            "--lr",
            "1e-3",
            "--json",
        ],
        tmp.path(),
    );
    let t = ok(&out, "distill train");
    let a = &t["adapters"][0];
    assert_eq!(a["step"], "plan");
    let check = &a["engine_check"];
    assert_eq!(check["loads"], true);
    assert!(
        check["logit_change"].as_f64().unwrap() > 1e-3,
        "the adapter does not change the plan step's logits: {check}"
    );
    assert_ne!(
        check["greedy_with_adapter"], check["greedy_without"],
        "the adapter does not change the plan step's output"
    );
    // llama.cpp with the exported GGUF adapter continues as HF + PEFT did (the q/k RoPE
    // permutation of lora_b is right).
    let probe = check["probe_tokens"].as_u64().unwrap();
    assert!(
        check["probe_match"].as_u64().unwrap() >= probe.min(8),
        "{check}"
    );
    assert!(a["metrics"]["tokens_per_s"].as_f64().unwrap() > 0.0);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(adapters.join("plan.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["base_model"]["sha256"], SMOLLM2_SHA256);
    assert_eq!(manifest["mode"], "alora");
    assert_eq!(manifest["dataset"]["examples"], kept);
    assert!(!manifest["alora_invocation_tokens"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(adapters.join("plan.gguf").is_file());

    // 3. The manifests, as operators see them.
    let l = ok(
        &careflow(
            &["adapters", "list", "--dir", s(&adapters), "--json"],
            tmp.path(),
        ),
        "adapters list",
    );
    assert_eq!(l["adapters"][0]["name"], "plan");
    assert_eq!(l["adapters"][0]["base_model"]["known_as"], "smollm2-135m");
    let out = careflow(
        &["adapters", "show", "plan", "--dir", s(&adapters)],
        tmp.path(),
    );
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(SMOLLM2_SHA256) && shown.contains("hyper.rank"),
        "{shown}"
    );

    // 4. Served through the workflow by manifest: the plan step under the adapter computes
    //    exactly the tokens it computes without it — the shared prefix and the step's prompt,
    //    nothing recomputed.
    let config = tmp.path().join("careflow.toml");
    std::fs::write(
        &config,
        format!(
            "[small]\nadapters = [{{ name = \"plan\", path = \"{}\" }}]\n[run.adapters]\nplan = \"plan\"\n",
            s(&adapters.join("plan.json"))
        ),
    )
    .unwrap();
    let message = "I've had a sore throat for 3 days. Should I be worried?";
    let base = ok(
        &careflow(&["triage", "--json", "--no-ledger", message], tmp.path()),
        "triage without the adapter",
    );
    let adapted = ok(
        &careflow(
            &[
                "triage",
                "--json",
                "--no-ledger",
                "--config",
                s(&config),
                message,
            ],
            tmp.path(),
        ),
        "triage with the plan adapter",
    );
    let plan = |o: &Value| {
        o["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == "plan")
            .unwrap()
            .clone()
    };
    assert_eq!(plan(&adapted)["adapter"], "plan");
    assert_eq!(plan(&base)["adapter"], Value::Null);
    assert_eq!(adapted["prefix_tokens"], base["prefix_tokens"]);
    for field in ["submitted", "computed", "reused"] {
        assert_eq!(
            plan(&adapted)["usage"][field],
            plan(&base)["usage"][field],
            "plan step {field}: with the adapter vs without"
        );
    }

    // 5. The agreement report runs on the held-in data (two examples, per step).
    let e = ok(
        &careflow(
            &[
                "distill",
                "eval",
                "--data",
                s(&traces),
                "--adapters",
                s(&adapters),
                "--limit",
                "2",
                "--no-workflow",
                "--json",
            ],
            tmp.path(),
        ),
        "distill eval",
    );
    assert_eq!(e["steps"][0]["step"], "plan");
    assert_eq!(e["steps"][0]["with_adapter"]["n"], 2);
    assert_eq!(e["steps"][0]["without_adapter"]["n"], 2);
}

#[test]
fn a_dataset_line_that_is_not_chat_json_is_named_before_any_training() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("traces");
    std::fs::create_dir_all(&data).unwrap();
    let good = r#"{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "PLAN."}, {"role": "assistant", "content": "{}"}]}"#;
    let cases = [
        ("{\"messages\": [", "not valid JSON"),
        (
            r#"{"messages": [{"role": "user", "content": "PLAN."}]}"#,
            "assistant",
        ),
        (r#"{"prompt": "x", "completion": "y"}"#, "messages"),
    ];
    for (bad, why) in cases {
        std::fs::write(
            data.join("plan.jsonl"),
            format!("{good}\n{good}\n{bad}\n{good}\n"),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let out = careflow(
            &[
                "distill",
                "train",
                "--data",
                s(&data),
                "--out",
                s(&tmp.path().join("a")),
            ],
            tmp.path(),
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("plan.jsonl:3:"), "{err}");
        assert!(err.contains(why), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            started.elapsed().as_secs() < 10,
            "checked before any training"
        );
    }
}

#[test]
fn an_adapter_trained_for_another_base_is_refused_naming_both_models() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("adapters");
    std::fs::create_dir_all(&dir).unwrap();
    let other = "ab".repeat(32);
    // The manifest is checked before llama.cpp reads the adapter file.
    std::fs::write(dir.join("plan.gguf"), b"GGUF\x03\0\0\0 not a real adapter").unwrap();
    std::fs::write(
        dir.join("plan.json"),
        serde_json::json!({
            "format": "careflow-adapter/1", "name": "plan", "step": "plan", "mode": "alora",
            "adapter_file": "plan.gguf",
            "base_model": {"sha256": other, "file": "qwen2.5-coder-0.5b-instruct.gguf"},
            "dataset": {"file": "plan.jsonl", "sha256": "00"},
        })
        .to_string(),
    )
    .unwrap();
    let config = tmp.path().join("careflow.toml");
    std::fs::write(
        &config,
        format!(
            "[small]\nadapters = [{{ name = \"plan\", path = \"{}\" }}]\n",
            s(&dir.join("plan.json"))
        ),
    )
    .unwrap();
    let out = careflow(
        &[
            "triage",
            "--no-ledger",
            "--config",
            s(&config),
            "I have a headache",
        ],
        tmp.path(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another base model"), "{err}");
    assert!(
        err.contains(&other) && err.contains(SMOLLM2_SHA256),
        "{err}"
    );
    assert!(err.contains("plan.json"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // `adapters list` shows which base each adapter is for.
    let out = careflow(&["adapters", "list", "--dir", s(&dir)], tmp.path());
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("unknown (abababababab)"), "{listed}");
}
