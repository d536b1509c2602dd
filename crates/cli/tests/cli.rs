//! The command line as an operator uses it: a real binary, real files, real model.

use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Output};

fn careflow(args: &[&std::ffi::OsStr], data: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_careflow"))
        .args(args)
        .env("CAREFLOW_DATA_DIR", data)
        .env_remove("CAREFLOW_DATABASE_URL")
        .output()
        .expect("runs")
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

#[test]
fn triage_json_has_a_top_level_disposition_and_per_step_usage() {
    let dir = tempfile::tempdir().unwrap();
    let out = careflow(
        &[
            os("triage"),
            os("--json"),
            os("My throat is sore since Monday, I can drink fine."),
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = v["disposition"].as_str().unwrap();
    assert!(d.parse::<careflow_core::Disposition>().is_ok(), "{d}");
    assert_eq!(v["steps"].as_array().unwrap().len(), 5);
    assert!(v["totals"]["generated"].as_u64().unwrap() > 0);
}

#[test]
fn bad_messages_are_refused_with_the_cause_and_exit_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"   ".to_vec(), "must not be empty"),
        (b"pain \xff\xfe".to_vec(), "not valid UTF-8"),
        ("a".repeat(5000).into_bytes(), "over the limit"),
        (b"pain\x07".to_vec(), "control character"),
    ];
    for (msg, why) in cases {
        let out = careflow(
            &[os("triage"), std::ffi::OsStr::from_bytes(&msg)],
            dir.path(),
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "expected `{why}` in: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = careflow(
        &[os("triage"), os("--patient"), os("abc"), os("hi")],
        dir.path(),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("patient_id"));
}

#[test]
fn a_missing_model_is_named_with_the_command_that_fetches_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = careflow(
        &[
            os("triage"),
            os("--model"),
            os("/nowhere/x.gguf"),
            os("hello"),
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nowhere/x.gguf") && err.contains("model pull"),
        "{err}"
    );
    let out = careflow(&[os("model"), os("pull"), os("gpt-17")], dir.path());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown model `gpt-17`"));
}

#[test]
fn model_list_reports_the_registry_and_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let out = careflow(&[os("model"), os("list"), os("--json")], dir.path());
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"smollm2-135m") && names.contains(&"qwen2.5-coder-0.5b"));
    // scripts/test.sh pulled the default model before the tests.
    let smol = v
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "smollm2-135m")
        .unwrap();
    assert_eq!(smol["cached"], true);
}

#[test]
fn demo_loads_the_records_once_and_triages_a_known_patient() {
    let dir = tempfile::tempdir().unwrap();
    let out = careflow(&[os("demo"), os("--json")], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["disposition"].is_string());
    assert!(v["record_summary"].as_str().unwrap().contains("Age"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loaded 28 persons"));
    // A second run finds the records already there.
    let out = careflow(&[os("db"), os("load-omop"), os("/nowhere.zip")], dir.path());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
}

#[test]
fn db_query_runs_inside_the_patient_scope_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let zip = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/omop/Synthea27Nj_5.4.zip"
    );
    let out = careflow(&[os("db"), os("load-omop"), os(zip)], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every person row the scoped query can see is the patient's own.
    let out = careflow(
        &[
            os("db"),
            os("query"),
            os("--patient"),
            os("3"),
            os("--json"),
            os("SELECT person_id FROM person"),
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], 3);
    // A statement the guard refuses exits non-zero with the reason.
    let out = careflow(
        &[
            os("db"),
            os("query"),
            os("--patient"),
            os("3"),
            os("SELECT 1; DROP TABLE person"),
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rejected"));
}

#[test]
fn a_malformed_rule_file_stops_triage_before_any_work_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("broken.toml"),
        "[[rule]]\nid = \"x.bad\"\ntitle = \"t\"\nlevel = \"urgent\"\nsource = \"https://example.org\"\nany = [\"fever\"]\n",
    )
    .unwrap();
    let out = careflow(
        &[
            os("triage"),
            os("--rules"),
            rules.as_os_str(),
            os("I have a fever"),
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.toml") && err.contains("level"),
        "{err}"
    );
}
