//! Replica sets against stand-in OpenAI-compatible servers: session affinity, failover with
//! the transcript, and replicas that answer garbage or time out. (The two-real-servers test,
//! with the model, is crates/cli/tests/replicas.rs.)

mod common;

use careflow_engine::{ChatMessage, Engine, EngineError, GenerateParams, OpenSession, Turn};
use careflow_remote::{RemoteConfig, ReplicaSet};
use common::{key, Fault, Kind, Stub};
use std::time::Duration;

async fn stubs(n: usize) -> Vec<Stub> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(Stub::start(Kind::OpenAi, &["m"]).await);
    }
    v
}

/// Chat completions a stand-in answered (health probes not counted).
fn chats(s: &Stub) -> usize {
    s.seen()
        .iter()
        .filter(|c| c.path.ends_with("/chat/completions"))
        .count()
}

fn config(stubs: &[Stub]) -> RemoteConfig {
    RemoteConfig {
        base_url: String::new(),
        replicas: stubs.iter().map(|s| s.base_url.clone()).collect(),
        max_attempts: 1,
        ..stubs[0].config("m")
    }
}

fn say(text: &str) -> Turn {
    Turn {
        messages: vec![ChatMessage::user(text)],
        generate: Some(GenerateParams::text(8)),
        ..Default::default()
    }
}

fn open() -> OpenSession {
    OpenSession {
        prefix: vec![ChatMessage::system(
            "shared prefix words that every session starts with",
        )],
        cache_prefix: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn every_turn_of_a_session_reaches_one_replica_and_sessions_spread_over_replicas() {
    let s = stubs(2).await;
    let set = ReplicaSet::new(&config(&s), key()).unwrap();
    let mut placed = [0usize; 2];
    for n in 0..16 {
        let id = set.open(open()).await.unwrap().id;
        let home = set.replica_of(id).unwrap();
        let before = chats(&s[home]);
        for step in 0..3 {
            set.turn(id, say(&format!("session {n} step {step}")))
                .await
                .unwrap();
            assert_eq!(set.replica_of(id), Some(home), "a session never moves");
        }
        assert_eq!(
            chats(&s[home]) - before,
            3,
            "all three steps on replica {home}"
        );
        placed[home] += 1;
        set.close(id).await.unwrap();
    }
    assert!(
        placed[0] > 0 && placed[1] > 0,
        "sessions spread over both replicas: {placed:?}"
    );
    // The replicas' own usage reports: later steps reuse what the first step computed.
    let status = set.status();
    for r in &status {
        assert!(r.healthy && r.turns > 0 && r.failures == 0, "{r:?}");
        assert!(r.tokens_cached > 0, "prefix cache hits reported: {r:?}");
    }
    let stats = set.stats().await.unwrap();
    assert_eq!(
        stats.tokens_reused,
        status.iter().map(|r| r.tokens_cached).sum::<u64>()
    );
    assert_eq!(set.failovers(), 0);
}

#[tokio::test]
async fn a_replica_failing_mid_session_moves_the_rest_of_the_session_with_its_transcript() {
    let s = stubs(2).await;
    let set = ReplicaSet::new(&config(&s), key()).unwrap();
    let id = set.open(open()).await.unwrap().id;
    let first = set
        .turn(id, say("plan the case"))
        .await
        .unwrap()
        .generation
        .unwrap()
        .text;
    let home = set.replica_of(id).unwrap();
    let other = 1 - home;
    s[home].always(Some(Fault::Status(503, vec![], "overloaded".into())));

    let out = set.turn(id, say("analyze the case")).await.unwrap();
    assert!(out.generation.is_some());
    assert_eq!(
        set.replica_of(id),
        Some(other),
        "moved to the healthy replica"
    );
    assert_eq!(set.failovers(), 1);
    // The new replica received the whole transcript: prefix, the first step and its answer,
    // then this step — nothing lost, nothing generated twice.
    let body = s[other].last().body;
    let roles_contents: Vec<(String, String)> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_string(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(roles_contents.len(), 4, "{roles_contents:?}");
    assert_eq!(roles_contents[1], ("user".into(), "plan the case".into()));
    assert_eq!(roles_contents[2], ("assistant".into(), first));
    assert_eq!(
        roles_contents[3],
        ("user".into(), "analyze the case".into())
    );

    let st = set.status();
    assert!(!st[home].healthy, "{:?}", st[home]);
    assert!(
        st[home].last_error.as_deref().unwrap_or("").contains("503"),
        "the reason is kept: {:?}",
        st[home].last_error
    );
    // Later sessions skip the replica that is down.
    for _ in 0..6 {
        let id = set.open(open()).await.unwrap().id;
        assert_eq!(set.replica_of(id), Some(other));
        set.turn(id, say("next")).await.unwrap();
    }
    let stats = set.close(id).await.unwrap();
    assert_eq!(stats.turns, 2, "both turns counted across replicas");
}

#[tokio::test]
async fn replicas_answering_garbage_or_timing_out_are_marked_down_and_skipped() {
    let s = stubs(3).await;
    let (good, garbage, slow) = (&s[0], &s[1], &s[2]);
    garbage.always(Some(Fault::Body("<html>502 Bad Gateway".into())));
    slow.always(Some(Fault::Sleep(Duration::from_secs(3))));
    let set = ReplicaSet::new(&config(&s), key()).unwrap();
    set.probe_all().await;
    let st = set.status();
    assert!(st[0].healthy, "{:?}", st[0]);
    assert!(!st[1].healthy, "{:?}", st[1]);
    assert!(
        st[1].last_error.as_deref().unwrap().contains("not JSON"),
        "{:?}",
        st[1]
    );
    assert!(!st[2].healthy, "{:?}", st[2]);
    assert!(
        st[2].last_error.as_deref().unwrap().contains("timed out"),
        "{:?}",
        st[2]
    );

    for n in 0..8 {
        let id = set.open(open()).await.unwrap().id;
        set.turn(id, say(&format!("message {n}"))).await.unwrap();
        assert_eq!(set.replica_of(id), Some(0));
        set.close(id).await.unwrap();
    }
    assert_eq!(chats(good), 8, "no request lost");
    assert_eq!(chats(garbage) + chats(slow), 0);

    // When the last good replica goes too, the error names every replica and why.
    good.always(Some(Fault::Status(500, vec![], "boom".into())));
    let id = set.open(open()).await.unwrap().id;
    let err = set.turn(id, say("anyone?")).await.unwrap_err();
    assert!(matches!(err, EngineError::Unavailable { .. }), "{err}");
    let text = err.to_string();
    for r in &s {
        assert!(text.contains(&r.base_url), "{text} names {}", r.base_url);
    }
    // A recovered replica comes back with the next probe.
    good.always(None);
    set.probe_all().await;
    assert!(set.status()[0].healthy);
    set.turn(id, say("again")).await.unwrap();
}

#[tokio::test]
async fn a_turn_timing_out_on_its_replica_fails_over_within_the_deadline() {
    let s = stubs(2).await;
    let set = ReplicaSet::new(&config(&s), key()).unwrap();
    let id = set.open(open()).await.unwrap().id;
    let home = set.replica_of(id).unwrap();
    s[home].always(Some(Fault::Sleep(Duration::from_secs(5))));
    let t = std::time::Instant::now();
    let out = set
        .turn(
            id,
            Turn {
                deadline: Some(Duration::from_secs(4)),
                ..say("hello")
            },
        )
        .await
        .unwrap();
    assert!(out.generation.is_some());
    assert_eq!(set.replica_of(id), Some(1 - home));
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

#[test]
fn replica_settings_are_checked_naming_the_field() {
    let with = |f: &dyn Fn(&mut RemoteConfig)| {
        let mut c = RemoteConfig {
            replicas: vec![
                "http://127.0.0.1:1/v1".into(),
                "http://127.0.0.1:2/v1".into(),
            ],
            ..RemoteConfig::openai("", "m")
        };
        f(&mut c);
        c.build_with_key(None).map(|_| ()).unwrap_err().to_string()
    };
    assert!(with(&|c| c.base_url = "http://x/v1".into()).contains("base_url"));
    assert!(with(&|c| c.kind = careflow_remote::RemoteKind::Anthropic).contains("replicas"));
    assert!(with(&|c| c.health_interval_ms = 0).contains("health_interval_ms"));
    assert!(with(&|c| c.replicas[1] = "ftp://x".into()).contains("replicas[1]"));
    assert!(with(&|c| c.replicas[1] = c.replicas[0].clone()).contains("listed twice"));
}
