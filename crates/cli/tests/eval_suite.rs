//! `careflow eval --suite` and `careflow eval diff` as an operator runs them: the real binary,
//! the real small model, the CI smoke suite (three valid items, one malformed line).
//!
//! The suite is evaluated once (small + stateless, a few minutes on two cores) and the report
//! is shared by the tests here.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

const SUITE: &str = "data/eval/ci_smoke.jsonl";
const VALID_IDS: [&str; 3] = ["smoke-001", "smoke-003", "smoke-004"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The binary, run from the workspace root with careflow's environment cleared.
fn careflow(args: &[&str], data: &Path) -> Output {
    common::command(args, data)
        .current_dir(workspace_root())
        .output()
        .expect("runs")
}

struct Smoke {
    out: Output,
    dir: PathBuf,
}

/// `careflow eval --suite data/eval/ci_smoke.jsonl --strategy small --strategy stateless
/// --out DIR`, run once.
fn smoke() -> &'static Smoke {
    static SMOKE: OnceLock<Smoke> = OnceLock::new();
    SMOKE.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("eval_suite");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let dir = root.join("out");
        let data = root.join("data");
        let out = careflow(
            &[
                "eval",
                "--suite",
                SUITE,
                "--strategy",
                "small",
                "--strategy",
                "stateless",
                "--out",
                dir.to_str().unwrap(),
            ],
            &data,
        );
        Smoke { out, dir }
    })
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn computed_per_request(report: &serde_json::Value, strategy: &str) -> f64 {
    let s = report["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == strategy)
        .unwrap_or_else(|| panic!("no strategy {strategy}"));
    s["metrics"]["tokens_per_request"]["computed"]
        .as_f64()
        .unwrap()
}

#[test]
fn the_smoke_suite_runs_small_and_stateless_end_to_end() {
    let s = smoke();
    let stdout = String::from_utf8_lossy(&s.out.stdout);
    let stderr = String::from_utf8_lossy(&s.out.stderr);
    assert!(
        s.out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // The malformed line is a warning with its line number and field; the run went on.
    assert!(
        stderr.contains("warning") && stderr.contains("line 2") && stderr.contains("`gold`"),
        "{stderr}"
    );
    // The readable summary, then the files written.
    assert!(stdout.contains("accuracy [95% CI]"), "{stdout}");
    assert!(stdout.contains("stateless"), "{stdout}");
    let json_path = s.dir.join("report.json");
    let html_path = s.dir.join("report.html");
    assert!(
        stdout.contains(&json_path.display().to_string()),
        "{stdout}"
    );
    assert!(
        stdout.contains(&html_path.display().to_string()),
        "{stdout}"
    );

    let report = read_json(&json_path);
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["suite"], SUITE);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["line"], 2);
    assert_eq!(problems[0]["field"], "gold");

    let strategies = report["strategies"].as_array().unwrap();
    let names: Vec<&str> = strategies
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["small", "stateless"]);
    for st in strategies {
        let name = &st["name"];
        let predictions = st["predictions"].as_array().unwrap();
        let mut ids: Vec<&str> = predictions
            .iter()
            .map(|p| p["item_id"].as_str().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, VALID_IDS, "{name}");
        for p in predictions {
            assert_ne!(p["decision"], "error", "{name}: {p}");
            assert!(p["disposition"].is_string(), "{name}: {p}");
            assert!(
                ["small", "human"].contains(&p["tier"].as_str().unwrap()),
                "{name}: {p}"
            );
            assert_eq!(p["steps"].as_array().unwrap().len(), 5, "{name}: {p}");
            assert!(p["latency_ms"].as_f64().unwrap() > 0.0, "{name}: {p}");
        }
        assert_eq!(st["metrics"]["n"], 3, "{name}");
        assert_eq!(st["metrics"]["errors"], 0, "{name}");
        assert!(
            st["metrics"]["cost_per_request_usd"].as_f64().unwrap() > 0.0,
            "{name}"
        );
    }
    // Stateless recomputes the conversation at every step; the prefix cache does not.
    let small = computed_per_request(&report, "small");
    let stateless = computed_per_request(&report, "stateless");
    assert!(stateless > small, "stateless {stateless} vs small {small}");

    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.contains("<svg"), "no inline SVG plot");
    assert!(!html.contains("<script"), "the report must be script-free");
}

#[test]
fn eval_diff_flags_a_worse_report_and_passes_an_identical_one() {
    let s = smoke();
    assert!(
        s.out.status.success(),
        "{}",
        String::from_utf8_lossy(&s.out.stderr)
    );
    let real = s.dir.join("report.json");
    let data = s.dir.join("diff-data");

    // The same report against itself: nothing to flag.
    let out = careflow(
        &[
            "eval",
            "diff",
            real.to_str().unwrap(),
            real.to_str().unwrap(),
        ],
        &data,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("no regressions"), "{stdout}");

    // A baseline whose small strategy was better: cheaper and faster, so the real run, as the
    // candidate, regressed on cost and latency.
    let mut better = read_json(&real);
    let small = better["strategies"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["name"] == "small")
        .unwrap();
    let m = &mut small["metrics"];
    for key in ["cost_per_request_usd", "latency_p95_ms"] {
        let v = m[key].as_f64().unwrap();
        assert!(v > 0.0, "{key}");
        m[key] = serde_json::json!(v / 2.0);
    }
    let base = s.dir.join("better_baseline.json");
    std::fs::write(&base, serde_json::to_string_pretty(&better).unwrap()).unwrap();

    let out = careflow(
        &[
            "eval",
            "diff",
            base.to_str().unwrap(),
            real.to_str().unwrap(),
        ],
        &data,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("REGRESSION"), "{stdout}");
    assert!(stdout.contains("small latency_p95_ms"), "{stdout}");
    assert!(stdout.contains("small cost_per_request_usd"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The same as JSON: the regressions named, the untouched strategy not among them.
    let out = careflow(
        &[
            "eval",
            "diff",
            "--json",
            base.to_str().unwrap(),
            real.to_str().unwrap(),
        ],
        &data,
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let regressions = v["regressions"].as_array().unwrap();
    let flagged: Vec<(String, String)> = regressions
        .iter()
        .map(|r| {
            (
                r["strategy"].as_str().unwrap().to_string(),
                r["metric"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        flagged.contains(&("small".into(), "latency_p95_ms".into())),
        "{flagged:?}"
    );
    assert!(
        flagged.iter().all(|(s, _)| s == "small"),
        "only small was changed: {flagged:?}"
    );

    // A looser latency/cost tolerance lets the same pair pass.
    let out = careflow(
        &[
            "eval",
            "diff",
            "--max-cost-rise",
            "1.5",
            "--max-latency-rise",
            "1.5",
            base.to_str().unwrap(),
            real.to_str().unwrap(),
        ],
        &data,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
