//! Issue 10: two real OpenAI-compatible replicas — two `careflow serve` processes on the same
//! GGUF (their `/v1/chat/completions` on the embedded engine) — driven by one replica set as
//! the workflow's small tier. Every step of a request reaches one replica and its prefix cache
//! serves the later steps; killing that replica mid-request moves the rest of the request to
//! the other one, and the request completes.
//!
//! Needs the default model (`careflow model pull smollm2-135m`; scripts/test.sh pulls it).

mod common;

use careflow_core::PatientMessage;
use careflow_engine::{models, Engine};
use careflow_knowledge::{Guidelines, RuleSet};
use careflow_records::Records;
use careflow_remote::{ApiKey, RemoteConfig, ReplicaSet};
use careflow_workflow::{TriageRequest, TriageWorkflow, WorkflowConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A replica: `careflow serve` with one thread (two engines on two cores).
async fn serve(data: &Path, config: &Path) -> common::Server {
    common::serve(data, config, &[("CAREFLOW_THREADS", "1")]).await
}

/// Its OpenAI-compatible base URL.
fn v1(s: &common::Server) -> String {
    format!("{}/v1", s.base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_of_a_request_stay_on_one_replica_and_a_killed_replica_fails_over() {
    assert!(
        models::default_model_path().is_file(),
        "the default model is missing: careflow model pull smollm2-135m"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let config = tmp.path().join("careflow.toml");
    std::fs::write(
        &config,
        "[gateway]\nchat_max_tokens = 1024\n[gateway.rate_limit]\nper_key_per_second = 1000\nburst = 1000\n",
    )
    .unwrap();
    // One key for both replicas: created in a's database, which b starts from.
    let created = common::ok_json(
        &common::careflow(
            &[
                "keys", "create", "--name", "replicas", "--role", "portal", "--json",
            ],
            &a,
        ),
        "keys create",
    );
    let secret = created["secret"].as_str().unwrap().to_string();
    // The database with its write-ahead log: the key may not be checkpointed yet.
    for f in ["careflow.db", "careflow.db-wal", "careflow.db-shm"] {
        if a.join(f).exists() {
            std::fs::copy(a.join(f), b.join(f)).unwrap();
        }
    }
    let mut servers = vec![serve(&a, &config).await, serve(&b, &config).await];

    // The name the replicas serve the base model under (their GET /v1/models).
    let listed: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/models", v1(&servers[0])))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let served = listed["data"][0]["id"].as_str().unwrap().to_string();
    let set = ReplicaSet::new(
        &RemoteConfig {
            replicas: servers.iter().map(v1).collect(),
            timeout_ms: 240_000,
            max_attempts: 2,
            backoff_base_ms: 50,
            backoff_max_ms: 200,
            breaker_cooldown_ms: 600_000,
            health_interval_ms: 1_000,
            ..RemoteConfig::openai("", served.clone())
        },
        Some(ApiKey::new(secret.clone())),
    )
    .unwrap();
    set.probe_all().await;
    assert!(set.status().iter().all(|r| r.healthy), "{:?}", set.status());

    let records = Records::connect(&format!(
        "sqlite://{}",
        tmp.path().join("records.db").display()
    ))
    .await
    .unwrap();
    records.init().await.unwrap();
    records.synth(2, 7, &|_, _| {}).await.unwrap();
    let patient = records.patients(1).await.unwrap()[0];
    let engine: Arc<dyn Engine> = Arc::new(set.clone());
    let workflow = Arc::new(
        TriageWorkflow::new(
            engine,
            Some(records),
            RuleSet::embedded().unwrap(),
            Guidelines::embedded().unwrap(),
            WorkflowConfig::default(),
        )
        .unwrap(),
    );
    let request = |text: &str| TriageRequest {
        message: PatientMessage::parse(text).unwrap(),
        patient: Some(patient),
    };

    // 1. One request: every generating step on one replica, none on the other; that replica's
    //    usage reports show its prefix cache serving the later steps.
    let first = workflow
        .run(request(
            "I've had sharp lower back pain for 3 days. Should I be worried?",
        ))
        .await
        .unwrap();
    // Generations sent: one per attempt of each generating step.
    let generations = |o: &careflow_workflow::TriageOutcome| -> u64 {
        o.steps
            .iter()
            .filter(|s| s.usage.generated > 0)
            .map(|s| u64::from(s.attempts.max(1)))
            .sum()
    };
    let generated = generations(&first);
    assert!(generated >= 3, "{:?}", first.steps);
    let st = set.status();
    let home = st.iter().position(|r| r.turns > 0).unwrap();
    assert_eq!(st[home].turns, generated, "{st:?}");
    assert_eq!(st[1 - home].turns, 0, "the other replica saw none: {st:?}");
    assert!(
        st[home].tokens_cached > 0,
        "the replica's prefix cache served later steps: {st:?}"
    );
    assert_eq!(set.failovers(), 0);

    // 2. A second request; its replica is killed once the first step has been answered there.
    let before: Vec<u64> = st.iter().map(|r| r.turns).collect();
    let running = {
        let workflow = workflow.clone();
        let req = request("I have had a sore throat and a mild fever since yesterday.");
        tokio::spawn(async move { workflow.run(req).await })
    };
    let t = Instant::now();
    let victim = loop {
        let now = set.status();
        if let Some(i) = (0..2).find(|&i| now[i].turns > before[i]) {
            break i;
        }
        assert!(t.elapsed() < Duration::from_secs(300), "no step answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    servers[victim].child.kill().unwrap();
    servers[victim].child.wait().unwrap();
    let second = running.await.unwrap().unwrap();

    assert_eq!(set.failovers(), 1, "{:?}", set.status());
    let st = set.status();
    let survivor = 1 - victim;
    assert!(!st[victim].healthy, "{st:?}");
    assert!(
        st[survivor].turns > before[survivor],
        "the rest of the request ran on the survivor: {st:?}"
    );
    let second_generated = generations(&second);
    assert_eq!(
        st[victim].turns - before[victim] + st[survivor].turns - before[survivor],
        second_generated,
        "every generating step answered exactly once: {st:?}"
    );
    assert_eq!(second.steps.len(), first.steps.len(), "no step skipped");
    assert!(
        !second
            .notes
            .iter()
            .any(|n| n.to_lowercase().contains("unavailable")),
        "{:?}",
        second.notes
    );
    // 3. New requests go to the survivor only.
    let third = workflow
        .run(request("Can I get a copy of my vaccination record?"))
        .await
        .unwrap();
    assert!(!third.steps.is_empty());
    assert_eq!(set.status()[victim].turns, st[victim].turns);

    // 4. The same through the command line: `[small.remote]` puts every step of
    //    `careflow triage` on the replicas (here: the survivor and the dead one).
    let remote = tmp.path().join("remote.toml");
    std::fs::write(
        &remote,
        format!(
            "[small.remote]\nreplicas = [\"{}\", \"{}\"]\nmodel = \"{served}\"\n\
             api_key_env = \"CAREFLOW_TEST_REPLICA_KEY\"\nmax_attempts = 1\ntimeout_ms = 240000\n",
            v1(&servers[survivor]),
            v1(&servers[victim])
        ),
    )
    .unwrap();
    let out = common::command(
        &[
            "triage",
            "--json",
            "--config",
            remote.to_str().unwrap(),
            "My throat is sore since Monday, I can drink fine.",
        ],
        &tmp.path().join("cli"),
    )
    .env("CAREFLOW_TEST_REPLICA_KEY", &secret)
    .output()
    .unwrap();
    let v = common::ok_json(&out, "careflow triage on [small.remote]");
    assert!(v["disposition"].is_string(), "{v}");
    let steps = v["steps"].as_array().unwrap();
    assert!(
        steps
            .iter()
            .any(|s| s["model"] == served.as_str() && s["usage"]["generated"].as_u64() > Some(0)),
        "steps ran on the served model: {v}"
    );
    // A config naming the small model twice is refused before any work, naming the field.
    let out = common::command(
        &[
            "triage",
            "--config",
            remote.to_str().unwrap(),
            "--model",
            "smollm2-135m",
            "hi",
        ],
        &tmp.path().join("cli"),
    )
    .env("CAREFLOW_TEST_REPLICA_KEY", &secret)
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("small.model"));
}
