//! `careflow cost` as an operator runs it: the real binary, a real ledger, real files. No
//! model is needed.

mod common;

use std::process::{Command, Output};

use careflow_core::TokenUsage;
use careflow_ledger::{now_ms, Ledger, LedgerEntry, Prices};

use common::careflow;

fn ok_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

fn flagship(strategies: &serde_json::Value) -> &serde_json::Value {
    strategies
        .as_array()
        .expect("strategies is a list")
        .iter()
        .find(|s| s["tier"] == "flagship_api")
        .expect("a flagship_api strategy")
}

#[test]
fn the_stated_volume_reproduces_250m_tokens_a_day_and_about_60k_a_month_on_a_flagship_api() {
    let dir = tempfile::tempdir().unwrap();
    let v = ok_json(&careflow(&["cost", "--json"], dir.path()));
    assert_eq!(v["volume"]["tokens_per_day"], 250_000_000);
    assert_eq!(v["ledger"], serde_json::Value::Null);
    let f = flagship(&v["strategies"]);
    let month = f["usd_per_month"].as_f64().unwrap();
    assert!((52_000.0..=70_000.0).contains(&month), "{month}");
    assert_eq!(f["tokens_per_day"], 250_000_000);
    let tiers: Vec<&str> = v["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tier"].as_str().unwrap())
        .collect();
    assert_eq!(tiers, ["flagship_api", "managed_small", "self_hosted"]);
    let gpu = &v["strategies"][2];
    assert_eq!(gpu["gpus"], 1);
    assert!(gpu["usd_per_month"].as_f64().unwrap() < 1_000.0);
    let factors: Vec<u64> = f["scaling"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["factor"].as_u64().unwrap())
        .collect();
    assert_eq!(factors, [1, 10, 100]);

    // The table for people says the same.
    let out = careflow(&["cost"], dir.path());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("250,000,000 tokens/day"), "{text}");
    assert!(
        text.contains("flagship API") && text.contains("self-hosted"),
        "{text}"
    );

    // Other volumes scale.
    let v = ok_json(&careflow(
        &["cost", "--json", "--requests-per-day", "100000"],
        dir.path(),
    ));
    assert_eq!(v["volume"]["tokens_per_day"], 500_000_000);
}

#[test]
fn from_ledger_projects_the_measured_tokens_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let prices = Prices::embedded().unwrap();
    let now = now_ms();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let ledger = Ledger::connect(&url).await.unwrap();
        for r in 0..3 {
            let request_id = format!("req-{r}");
            let entries: Vec<LedgerEntry> = ["plan", "retrieve", "analyze", "validate", "respond"]
                .iter()
                .enumerate()
                .map(|(i, step)| {
                    let usage = TokenUsage {
                        submitted: 1_000 + 200 * i as u64,
                        computed: if i == 0 { 1_000 } else { 200 },
                        reused: if i == 0 {
                            0
                        } else {
                            1_000 + 200 * (i as u64 - 1)
                        },
                        generated: 60,
                        micros: 500_000,
                    };
                    LedgerEntry {
                        request_id: request_id.clone(),
                        at_ms: now - 60_000 + i as i64,
                        workflow: "triage".into(),
                        step: (*step).into(),
                        tier: "local_small".into(),
                        model: "smollm2-135m".into(),
                        adapter: None,
                        cost_usd: prices.cost("local_small", &usage).unwrap(),
                        usage,
                        decision: None,
                    }
                })
                .collect();
            ledger.record(&entries).await.unwrap();
        }
        ledger.close().await;
    });

    let v = ok_json(&careflow(
        &["cost", "--from-ledger", "--database", &url, "--json"],
        dir.path(),
    ));
    let m = &v["ledger"];
    assert_eq!(m["requests"], 3);
    assert_eq!(m["per_request"]["computed"], 1_800.0);
    assert_eq!(m["per_request"]["reused"], 5_200.0);
    assert_eq!(m["per_request"]["generated"], 300.0);
    let p = &m["projection"];
    assert_eq!(p["requests_per_day"], 50_000);
    assert!(p["recorded_usd_per_month"].as_f64().unwrap() > 0.0);
    let stateful = flagship(&p["strategies"])["usd_per_month"]
        .as_f64()
        .unwrap();
    let stateless = p["stateless_flagship"]["usd_per_month"].as_f64().unwrap();
    assert!(
        stateful > 0.0 && stateless > stateful,
        "{stateful} vs {stateless}"
    );
    // The stated table comes along.
    assert_eq!(v["volume"]["tokens_per_day"], 250_000_000);

    // The table for people, with the database from the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_careflow"))
        .args(["cost", "--from-ledger"])
        .env("CAREFLOW_DATA_DIR", dir.path())
        .env("CAREFLOW_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Measured: ledger"), "{text}");
    assert!(text.contains("local_small"), "{text}");
    assert!(text.contains("stateless"), "{text}");
}

#[test]
fn an_empty_ledger_says_so_instead_of_dividing_by_zero() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("empty.db").display());
    let out = careflow(&["cost", "--from-ledger", "--database", &url], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no entries"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("NaN"), "{err}");
}

#[test]
fn a_bad_prices_file_names_the_file_and_the_field_and_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("my-prices.toml");
    let text =
        careflow_ledger::EMBEDDED_PRICES.replace("output_per_m = 15.00", "output_per_m = -15.00");
    assert_ne!(text, careflow_ledger::EMBEDDED_PRICES);
    std::fs::write(&path, text).unwrap();
    let out = careflow(
        &["cost", "--prices", path.to_str().unwrap(), "--json"],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("my-prices.toml"), "{err}");
    assert!(
        err.contains("output_per_m") && err.contains("tier `"),
        "{err}"
    );

    std::fs::write(&path, "as_of = \"2026-12-01\"\nfoo = 1\n").unwrap();
    let out = careflow(&["cost", "--prices", path.to_str().unwrap()], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("my-prices.toml") && err.contains("field `foo`"),
        "{err}"
    );
}

#[test]
fn help_teaches_with_examples() {
    let dir = tempfile::tempdir().unwrap();
    let out = careflow(&["cost", "--help"], dir.path());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "Examples:",
        "--from-ledger",
        "--requests-per-day",
        "--prices",
        "--json",
    ] {
        assert!(text.contains(want), "`{want}` missing from:\n{text}");
    }
}
