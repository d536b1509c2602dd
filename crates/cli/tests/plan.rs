//! `careflow plan` as an operator runs it: the real binary, real files. No model is needed.

mod common;

use std::process::Output;

use common::careflow;

fn ok_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

/// Fails with the command's stderr, which must name every `want`.
fn fails_naming(out: &Output, want: &[&str]) -> String {
    assert!(
        !out.status.success(),
        "should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    for w in want {
        assert!(err.contains(w), "stderr does not name `{w}`: {err}");
    }
    assert!(out.stdout.is_empty(), "nothing on stdout when it fails");
    err
}

fn gpu<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["self_hosted"]
        .as_array()
        .expect("self_hosted is a list")
        .iter()
        .find(|g| g["gpu"] == name)
        .unwrap_or_else(|| panic!("no GPU type {name} in {v}"))
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn the_design_volume_is_2894_tokens_a_second_and_one_l4_at_no_headroom() {
    let dir = tempfile::tempdir().unwrap();
    let v = ok_json(&careflow(
        &[
            "plan",
            "--requests-per-day",
            "50000",
            "--headroom",
            "1.0",
            "--json",
        ],
        dir.path(),
    ));
    let d = &v["demand"];
    assert_eq!(d["tokens_per_day"], 250_000_000);
    assert!((f(&d["tokens_per_second"]) - 2893.5).abs() < 0.5, "{d}");
    assert_eq!(
        f(&d["tokens_per_second_needed"]),
        f(&d["tokens_per_second"])
    );
    let l4 = gpu(&v, "l4");
    assert_eq!(l4["gpus"], 1);
    assert_eq!(l4["replicas"], 1);
    assert_eq!(l4["throughput_from"], "gpus_file");
    let month = f(&l4["usd_per_month"]);
    assert!((month - f(&l4["usd_per_hour"]) * 24.0 * 30.0).abs() < 1e-6);
    assert!(month < 1_000.0, "{month}");
    let busy = f(&l4["utilization_at_average"]);
    assert!(busy > 0.0 && busy <= 1.0, "{busy}");

    // The APIs at the same volume, as `careflow cost` prices them.
    let api: Vec<&str> = v["api"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tier"].as_str().unwrap())
        .collect();
    assert_eq!(api, ["flagship_api", "managed_small"]);
    let flagship = f(&v["api"][0]["usd_per_month"]);
    assert!((55_000.0..=65_000.0).contains(&flagship), "{flagship}");
    assert!(flagship > 10.0 * month);

    // The default headroom (1.5) sizes for 4,340 tokens/s: more than one L4.
    let v = ok_json(&careflow(
        &["plan", "--requests-per-day", "50000", "--json"],
        dir.path(),
    ));
    assert_eq!(f(&v["demand"]["headroom"]), 1.5);
    assert!((f(&v["demand"]["tokens_per_second_needed"]) - 4340.3).abs() < 0.5);
    assert_eq!(gpu(&v, "l4")["gpus"], 2);
}

#[test]
fn ten_times_the_volume_needs_more_gpus_and_the_scaling_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let one = ok_json(&careflow(
        &[
            "plan",
            "--requests-per-day",
            "50000",
            "--headroom",
            "1",
            "--gpu",
            "l4",
            "--json",
        ],
        dir.path(),
    ));
    let ten = ok_json(&careflow(
        &[
            "plan",
            "--requests-per-day",
            "500000",
            "--headroom",
            "1",
            "--gpu",
            "l4",
            "--json",
        ],
        dir.path(),
    ));
    // --gpu plans for that type only.
    assert_eq!(one["self_hosted"].as_array().unwrap().len(), 1);
    let (g1, g10) = (gpu(&one, "l4"), gpu(&ten, "l4"));
    assert!(g10["gpus"].as_u64() > g1["gpus"].as_u64(), "{g1} {g10}");
    // ceil(28,935 / 4,000) = 8, the README's 10x figure.
    assert_eq!(g10["gpus"], 8);
    let factors: Vec<u64> = g1["scaling"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["factor"].as_u64().unwrap())
        .collect();
    assert_eq!(factors, [1, 10, 100]);
    assert_eq!(g1["scaling"][1]["gpus"], g10["gpus"]);
    assert!(g1["scaling"][2]["gpus"].as_u64() > g1["scaling"][1]["gpus"].as_u64());
    // A smaller model serves more tokens per GPU.
    let small = ok_json(&careflow(
        &[
            "plan",
            "--requests-per-day",
            "500000",
            "--headroom",
            "1",
            "--gpu",
            "l4",
            "--model-class",
            "small",
            "--json",
        ],
        dir.path(),
    ));
    assert_eq!(small["model_class"], "small");
    assert!(gpu(&small, "l4")["gpus"].as_u64() < g10["gpus"].as_u64());
}

#[test]
fn the_json_has_stable_fields() {
    let dir = tempfile::tempdir().unwrap();
    let v = ok_json(&careflow(
        &["plan", "--requests-per-day", "20000", "--json"],
        dir.path(),
    ));
    for key in [
        "gpus_file",
        "prices",
        "demand",
        "model_class",
        "bench",
        "self_hosted",
        "api",
        "cheapest_self_hosted",
    ] {
        assert!(v.get(key).is_some(), "no `{key}` in {v}");
    }
    for key in [
        "requests_per_day",
        "steps",
        "tokens_per_step",
        "output_share",
        "tokens_per_day",
        "requests_per_second",
        "tokens_per_second",
        "headroom",
        "requests_per_second_needed",
        "tokens_per_second_needed",
    ] {
        assert!(v["demand"].get(key).is_some(), "no demand.{key}");
    }
    let types = v["self_hosted"].as_array().unwrap();
    assert!(types.len() >= 3, "every GPU type by default");
    assert!(types.iter().any(|g| g["gpu"] == "cpu-2core"));
    for g in types {
        for key in [
            "gpu",
            "hardware",
            "usd_per_hour",
            "tokens_per_second_per_gpu",
            "throughput_from",
            "gpus",
            "replicas",
            "utilization_at_average",
            "usd_per_day",
            "usd_per_month",
            "scaling",
            "note",
            "source",
        ] {
            assert!(g.get(key).is_some(), "no self_hosted[].{key} in {g}");
        }
        assert!(g["gpus"].as_u64().unwrap() >= 1);
        for s in g["scaling"].as_array().unwrap() {
            for key in [
                "factor",
                "tokens_per_second_needed",
                "gpus",
                "replicas",
                "usd_per_month",
            ] {
                assert!(s.get(key).is_some(), "no scaling[].{key}");
            }
        }
    }
    assert_eq!(v["bench"], serde_json::Value::Null);
    let cheapest = v["cheapest_self_hosted"].as_str().unwrap();
    let min = types
        .iter()
        .map(|g| f(&g["usd_per_month"]))
        .fold(f64::INFINITY, f64::min);
    assert_eq!(f(&gpu(&v, cheapest)["usd_per_month"]), min);

    // The table for people says the same.
    let out = careflow(&["plan", "--requests-per-day", "50000"], dir.path());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "250,000,000 tokens/day",
        "2,894 tokens/s",
        "4,340 tokens/s needed",
        "l4",
        "flagship API",
        "managed small model",
    ] {
        assert!(text.contains(want), "no `{want}` in:\n{text}");
    }
}

#[test]
fn a_stated_throughput_or_a_benchmark_file_replaces_the_assumed_one() {
    let dir = tempfile::tempdir().unwrap();
    let v = ok_json(&careflow(
        &[
            "plan",
            "--requests-per-day",
            "50000",
            "--headroom",
            "1",
            "--gpu",
            "l4",
            "--tokens-per-second-per-gpu",
            "1000",
            "--json",
        ],
        dir.path(),
    ));
    let l4 = gpu(&v, "l4");
    assert_eq!(l4["throughput_from"], "flag");
    assert_eq!(l4["gpus"], 3); // ceil(2,894 / 1,000)

    // The shape `careflow bench workflow --json` prints (README's 2-core figures).
    let bench = serde_json::json!({
        "modes": [
            {"name": "stateless", "concurrency": 8, "adapters": false, "requests": 8,
             "tokens_computed_per_request": 7194.0, "tokens_new_per_request": 662.0,
             "tokens_generated_per_request": 300.0, "work_ratio": 10.86,
             "requests_per_s": 0.014, "p50_ms": 587961.0, "p95_ms": 600000.0,
             "speedup_vs_stateless": 1.0, "errors": 0},
            {"name": "stateful+prefix_cache", "concurrency": 1, "adapters": false, "requests": 8,
             "tokens_computed_per_request": 669.0, "tokens_new_per_request": 667.0,
             "tokens_generated_per_request": 300.0, "work_ratio": 1.0,
             "requests_per_s": 0.129, "p50_ms": 7717.0, "p95_ms": 9000.0,
             "speedup_vs_stateless": 4.43, "errors": 0},
            {"name": "stateful+prefix_cache", "concurrency": 8, "adapters": false, "requests": 8,
             "tokens_computed_per_request": 683.0, "tokens_new_per_request": 681.0,
             "tokens_generated_per_request": 300.0, "work_ratio": 1.0,
             "requests_per_s": 0.140, "p50_ms": 54142.0, "p95_ms": 60000.0,
             "speedup_vs_stateless": 10.3, "errors": 0}
        ],
        "load_average": {"start": 0.1, "end": 2.0},
        "model": "smollm2-135m-instruct-q4_1.gguf",
        "threads": 2,
        "shared_prefix_tokens": 1982,
        "adapter_throughput_ratio": []
    });
    let path = dir.path().join("bench.json");
    std::fs::write(&path, bench.to_string()).unwrap();
    let file = path.to_str().unwrap();
    let v = ok_json(&careflow(
        &[
            "plan",
            "--requests-per-day",
            "50000",
            "--headroom",
            "1",
            "--from-bench",
            file,
            "--json",
        ],
        dir.path(),
    ));
    let b = &v["bench"];
    assert_eq!(b["mode"], "stateful+prefix_cache");
    assert_eq!(b["concurrency"], 8);
    assert!(
        (f(&b["tokens_per_second"]) - 0.140 * 7194.0).abs() < 1e-6,
        "{b}"
    );
    // Without --gpu the measurement applies to the machine the benchmark runs on.
    let types = v["self_hosted"].as_array().unwrap();
    assert_eq!(types.len(), 1);
    let cpu = gpu(&v, "cpu-2core");
    assert_eq!(cpu["throughput_from"], "bench");
    assert_eq!(cpu["gpus"], 3); // ceil(2,894 / 1,007)
    let out = careflow(
        &["plan", "--requests-per-day", "50000", "--from-bench", file],
        dir.path(),
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("measured"));
}

#[test]
fn bad_input_is_refused_with_the_cause_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| careflow(args, dir.path());
    fails_naming(
        &run(&["plan", "--requests-per-day", "0"]),
        &["--requests-per-day", "at least 1"],
    );
    fails_naming(
        &run(&["plan", "--requests-per-day", "-5"]),
        &["--requests-per-day", "-5"],
    );
    fails_naming(
        &run(&["plan", "--requests-per-day", "lots"]),
        &["--requests-per-day", "lots"],
    );
    fails_naming(&run(&["plan", "--json"]), &["--requests-per-day"]);
    fails_naming(
        &run(&["plan", "--requests-per-day", "100", "--headroom", "0.5"]),
        &["--headroom", "1.0"],
    );
    fails_naming(
        &run(&[
            "plan",
            "--requests-per-day",
            "100",
            "--gpu",
            "l4",
            "--tokens-per-second-per-gpu",
            "-3",
        ]),
        &["--tokens-per-second-per-gpu", "greater than zero"],
    );
    fails_naming(
        &run(&["plan", "--requests-per-day", "100", "--output-share", "1.5"]),
        &["output_share"],
    );
    // An unknown GPU type lists the known ones.
    fails_naming(
        &run(&["plan", "--requests-per-day", "100", "--gpu", "tpu-v9"]),
        &["tpu-v9", "l4", "a10g", "cpu-2core"],
    );

    // Malformed benchmark files name the file and the field.
    let bench = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let not_json = bench("a.json", "modes: yes");
    fails_naming(
        &run(&[
            "plan",
            "--requests-per-day",
            "100",
            "--from-bench",
            &not_json,
        ]),
        &["a.json", "not JSON"],
    );
    let no_modes = bench("b.json", r#"{"model": "m"}"#);
    fails_naming(
        &run(&[
            "plan",
            "--requests-per-day",
            "100",
            "--from-bench",
            &no_modes,
        ]),
        &["b.json", "`modes`", "missing"],
    );
    let bad_rate = bench(
        "c.json",
        r#"{"modes": [{"name": "stateless", "concurrency": 1, "adapters": false,
            "tokens_computed_per_request": 7000, "requests_per_s": "fast"}]}"#,
    );
    fails_naming(
        &run(&[
            "plan",
            "--requests-per-day",
            "100",
            "--from-bench",
            &bad_rate,
        ]),
        &["c.json", "modes[0].requests_per_s"],
    );
    let no_serving_mode = bench(
        "d.json",
        r#"{"modes": [{"name": "stateless", "concurrency": 1, "adapters": false,
            "tokens_computed_per_request": 7000, "requests_per_s": 0.03}]}"#,
    );
    fails_naming(
        &run(&[
            "plan",
            "--requests-per-day",
            "100",
            "--from-bench",
            &no_serving_mode,
        ]),
        &["d.json", "stateful+prefix_cache"],
    );
    fails_naming(
        &run(&[
            "plan",
            "--requests-per-day",
            "100",
            "--from-bench",
            "/nonexistent/bench.json",
        ]),
        &["/nonexistent/bench.json"],
    );

    // A malformed GPU file names the file and the field.
    let gpus = dir.path().join("gpus.toml");
    std::fs::write(
        &gpus,
        "as_of = \"2026-01-01\"\nnote = \"\"\n[[gpus]]\nname = \"x1\"\nhardware = \"h\"\n\
         usd_per_hour = -1.0\ntokens_per_second_7b = 10\ntokens_per_second_small = 20\n\
         note = \"n\"\nsource = \"s\"\n",
    )
    .unwrap();
    fails_naming(
        &run(&[
            "plan",
            "--requests-per-day",
            "100",
            "--gpus",
            gpus.to_str().unwrap(),
        ]),
        &["gpus.toml", "usd_per_hour", "x1"],
    );
}

#[test]
fn help_teaches_with_examples() {
    let dir = tempfile::tempdir().unwrap();
    let out = careflow(&["plan", "--help"], dir.path());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "Examples:",
        "--requests-per-day",
        "--headroom",
        "--gpu",
        "--tokens-per-second-per-gpu",
        "--from-bench",
        "--prices",
        "--json",
        "2,894 tokens/s",
    ] {
        assert!(text.contains(want), "no `{want}` in --help:\n{text}");
    }
}
