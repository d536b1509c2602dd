//! The audit log is append-only; metrics, health and the OpenAPI document are served.

mod common;

use careflow_gateway::NoopService;
use common::start;
use serde_json::Value;
use sqlx::{Connection, Executor};
use std::sync::Arc;

const MESSAGE: &str = "I have had a mild sore throat since yesterday.";

/// Submits one request and checks its audit row; returns the request id.
async fn one_audited_request(s: &common::Server) -> String {
    let r = s.triage(5, MESSAGE).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let id = body["request_id"].as_str().unwrap().to_string();
    let audit = s.store.audit(&id).await.unwrap();
    assert_eq!(audit.len(), 1);
    let a = &audit[0];
    assert_eq!(a.patient_id, Some(5));
    assert_eq!(a.role, "portal");
    assert_eq!(a.disposition, "routine");
    assert_eq!(a.decided_by, "small");
    assert_eq!(
        a.message_sha256,
        careflow_gateway::flow::sha256_hex(MESSAGE)
    );
    assert!(
        !format!("{a:?}").contains("sore throat"),
        "no patient text in the audit row"
    );
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_cannot_be_updated_or_deleted_on_sqlite() {
    let s = start(Arc::new(NoopService::new()), |_| {}).await;
    let id = one_audited_request(&s).await;
    let mut conn = sqlx::SqliteConnection::connect(&s.db_url).await.unwrap();
    for sql in [
        "UPDATE audit_log SET disposition = 'self_care'",
        "DELETE FROM audit_log",
    ] {
        let e = conn.execute(sql).await.unwrap_err().to_string();
        assert!(e.contains("append-only"), "{sql}: {e}");
    }
    assert_eq!(s.store.audit(&id).await.unwrap()[0].disposition, "routine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_cannot_be_updated_deleted_or_truncated_on_postgres() {
    let Some(db_url) = common::fresh_postgres("gateway").await else {
        println!(
            "skipped: set CAREFLOW_TEST_POSTGRES_URL=postgres://… to run the PostgreSQL audit test"
        );
        return;
    };
    let mut s = common::start_on(
        Arc::new(NoopService::new()),
        |_| {},
        tempfile::tempdir().unwrap(),
        db_url.clone(),
    )
    .await;
    let id = one_audited_request(&s).await;
    let mut conn = sqlx::PgConnection::connect(&db_url).await.unwrap();
    for sql in [
        "UPDATE audit_log SET disposition = 'self_care'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let e = conn.execute(sql).await.unwrap_err().to_string();
        assert!(e.contains("append-only"), "{sql}: {e}");
    }
    assert_eq!(s.store.audit(&id).await.unwrap()[0].disposition, "routine");
    s.shutdown().await.unwrap();
    s.store.close().await;
    conn.close().await.unwrap();
    common::drop_postgres(&db_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_outcomes_and_errors() {
    let s = start(Arc::new(NoopService::new()), |_| {}).await;
    one_audited_request(&s).await;
    let r = s.client.get(s.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let text = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "careflow_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/triage\",status=\"200\",le=\"0.005\"}",
        "careflow_triage_requests_total{status=\"done\"} 1",
        "careflow_errors_total{kind=\"missing_credentials\"} 1",
        "careflow_tokens_total{kind=\"computed\"} 0",
        "careflow_cost_usd_total 0",
        "careflow_queue_depth 0",
        "careflow_in_flight 0",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_the_openapi_document() {
    let s = start(Arc::new(NoopService::new()), |_| {}).await;
    assert_eq!(
        s.client
            .get(s.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready: Value = s
        .client
        .get(s.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    let doc: Value = s
        .client
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/triage",
        "/v1/triage/{id}",
        "/v1/models",
        "/v1/chat/completions",
        "/v1/keys",
        "/v1/keys/{id}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is not documented");
    }
}

/// A store on a SQLite file of its own (kept while the directory lives).
async fn sqlite_store() -> (tempfile::TempDir, careflow_gateway::Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    let store = careflow_gateway::Store::connect(&url).await.unwrap();
    (dir, store)
}

/// A request as the store test accepts it.
fn new_request(id: &str) -> careflow_gateway::store::NewRequest {
    careflow_gateway::store::NewRequest {
        request_id: id.into(),
        api_key_id: "k".into(),
        patient_id: Some(3),
        idempotency_key: None,
        message_sha256: "ab".repeat(32),
    }
}

/// A `done` ending with two steps and the patient's text (a case for review).
fn done(id: &str) -> careflow_gateway::store::Ending {
    use careflow_gateway::store::{AuditRecord, Ending, StepFigures};
    Ending::Done {
        outcome_json: r#"{"disposition":"routine","route":{"decided_by":"human_review"}}"#.into(),
        audit: Box::new(AuditRecord {
            request_id: id.into(),
            api_key_id: "k".into(),
            role: "portal".into(),
            patient_id: Some(3),
            message_sha256: "ab".repeat(32),
            workflow: "triage".into(),
            disposition: "routine".into(),
            decision: "escalate".into(),
            decided_by: "human_review".into(),
            escalated: true,
            rules_fired: "[]".into(),
            tiers: "[\"small\"]".into(),
            models: "[]".into(),
            cost_usd: 0.001,
            steps: vec![
                StepFigures {
                    step: "plan".into(),
                    tier: "small".into(),
                    millis: 12.0,
                    submitted: 10,
                    computed: 4,
                    reused: 6,
                    generated: 3,
                    cost_usd: 0.0005,
                };
                2
            ],
        }),
        message: Some("it's O'Brien; DROP TABLE x; --".into()),
    }
}

/// The ending of a request is stored once: a `done` after an `error` (its deadline) writes
/// nothing — no audit row, no step rows, no message — and a `done` first writes all of them
/// (on SQLite, each a group of one in a single query).
#[tokio::test]
async fn the_first_ending_wins_and_a_done_writes_its_rows_together() {
    use careflow_gateway::store::Ending;
    let (_dir, store) = sqlite_store().await;
    for id in ["late", "first"] {
        assert!(store.accept(&new_request(id)).await.unwrap());
    }
    let deadline = Ending::Error {
        kind: "deadline".into(),
        message: "past its deadline".into(),
    };
    assert!(store.finish("late", &deadline).await.unwrap());
    assert!(
        !store.finish("late", &done("late")).await.unwrap(),
        "the deadline ended it"
    );
    assert!(store.audit("late").await.unwrap().is_empty());
    assert_eq!(store.message("late").await.unwrap(), None);
    assert_eq!(
        store.request("late").await.unwrap().unwrap().status,
        "error"
    );

    assert!(store.finish("first", &done("first")).await.unwrap());
    assert!(
        !store.finish("first", &done("first")).await.unwrap(),
        "once"
    );
    assert_eq!(store.audit("first").await.unwrap().len(), 1);
    assert_eq!(
        store.message("first").await.unwrap().as_deref(),
        Some("it's O'Brien; DROP TABLE x; --")
    );
    let price = |_: &careflow_core::TokenUsage| 0.0;
    let f = store
        .figures(1, careflow_ledger::now_ms(), &price)
        .await
        .unwrap();
    assert_eq!((f.computed, f.reused, f.decisions), (8, 12, 1));
    assert_eq!(f.steps[0].count, 2);
    // The connection is usable after all this (no transaction left open).
    assert!(store.accept(&new_request("after")).await.unwrap());
    store.close().await;
}

/// Writes that queue up while the writer is busy are committed as one group (on SQLite, one
/// query for the lot), and each still gets its own answer: of two endings of a request only
/// the first is stored, of two requests with one idempotency key only the first is
/// accepted, a request's row and its ending may share a group, and a `done` writes its
/// audit, step and message rows once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_committed_together_each_get_their_own_answer() {
    use careflow_gateway::store::Ending;
    let (_dir, store) = sqlite_store().await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("r{i:02}");
            // The ending is queued without waiting for the row, as the gateway does.
            let row = store.accept_queued(&new_request(&id)).await.unwrap();
            let deadline = Ending::Error {
                kind: "deadline".into(),
                message: "past its deadline".into(),
            };
            let done = done(&id);
            let (a, b) = tokio::join!(store.finish(&id, &done), store.finish(&id, &deadline));
            (id, row.applied().await.unwrap(), a.unwrap(), b.unwrap())
        }));
    }
    let mut same_key = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        same_key.push(tokio::spawn(async move {
            let mut r = new_request(&format!("k{i}"));
            r.idempotency_key = Some("one-key".into());
            store.accept(&r).await.unwrap()
        }));
    }
    let mut dones = 0;
    for t in tasks {
        let (id, accepted, done_stored, error_stored) = t.await.unwrap();
        assert!(accepted, "{id}");
        assert!(
            done_stored != error_stored,
            "{id}: exactly one ending is stored"
        );
        let row = store.request(&id).await.unwrap().unwrap();
        let audit = store.audit(&id).await.unwrap();
        if done_stored {
            dones += 1;
            assert_eq!(row.status, "done", "{id}");
            assert_eq!(audit.len(), 1, "{id}");
            assert!(store.message(&id).await.unwrap().is_some(), "{id}");
        } else {
            assert_eq!(
                (row.status.as_str(), row.error_kind.as_deref()),
                ("error", Some("deadline")),
                "{id}"
            );
            assert!(audit.is_empty(), "{id}");
            assert_eq!(store.message(&id).await.unwrap(), None, "{id}");
        }
    }
    let mut winners = 0;
    for t in same_key {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1, "one request per idempotency key");
    let price = |_: &careflow_core::TokenUsage| 0.0;
    let f = store
        .figures(1, careflow_ledger::now_ms(), &price)
        .await
        .unwrap();
    assert_eq!(f.decisions, dones);
    assert_eq!(f.steps[0].count, 2 * dones, "two step rows per stored done");
    // Closing gives back the writer's own connection too (closing waits for all of them).
    tokio::time::timeout(std::time::Duration::from_secs(10), store.close())
        .await
        .expect("the store closes");
}

/// Under steady writes a PASSIVE checkpoint never lets SQLite's WAL start over (frames keep
/// coming while it copies), so the WAL grew without end (~80 MB/s at 5,000 requests/s). Past
/// its bound the writer finishes a checkpoint itself and the WAL is reused: here, with a
/// bound of 64 frames (256 KB), 15,000 requests leave it at the bound plus what comes in
/// between two reports of the background checkpoint (~2.3 MB here; ~20 MB unbounded, even
/// with the lulls between these batches in which a checkpoint can finish by itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_starts_over_under_steady_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let store = careflow_gateway::Store::connect_with(
        &format!("sqlite://{}", db.display()),
        careflow_gateway::StoreOptions {
            wal_restart_frames: 64,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let wal = dir.path().join("g.db-wal");
    let mut largest = 0;
    // 50 requests every 5 ms at most (≤ 10,000/s): 1.5 s or more of writes, so the
    // background checkpoint (every 100 ms) reports many times while they go on.
    let mut n = 0;
    while n < 15_000 {
        let ids: Vec<String> = (n..n + 50).map(|i| format!("w{i:06}")).collect();
        let writes = ids.iter().map(|id| {
            let store = store.clone();
            async move {
                let row = store.accept_queued(&new_request(id)).await.unwrap();
                assert!(store.finish(id, &done(id)).await.unwrap());
                assert!(row.applied().await.unwrap());
            }
        });
        futures_util::future::join_all(writes).await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        n += 50;
        largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    }
    assert!(
        largest < 8 << 20,
        "the WAL reached {largest} bytes for {n} requests"
    );
    assert_eq!(store.requests().await.unwrap().len(), n as usize);
    store.close().await;
}

/// Between two checkpoints a thread writes the WAL out (every 20 ms by default): it runs
/// while writes go on, stops when the store is closed, and is not there when turned off or
/// without a WAL (in memory). Its effect on latency is measured by
/// `loadtest --noop --rate 5000 --compare wal-sync` (p99 ~2.1 → ~1.5 ms here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_written_out_between_checkpoints_until_the_store_closes() {
    let (_dir, store) = sqlite_store().await;
    let before = store
        .wal_syncs()
        .expect("a SQLite file has a WAL sync thread");
    for i in 0..40 {
        let id = format!("s{i:03}");
        let row = store.accept_queued(&new_request(&id)).await.unwrap();
        assert!(store.finish(&id, &done(&id)).await.unwrap());
        assert!(row.applied().await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let during = store.wal_syncs().unwrap();
    assert!(
        during >= before + 3,
        "{} syncs in ~200 ms of writes",
        during - before
    );
    store.close().await;
    // The thread may be in the middle of one sync when the store closes.
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    let closed = store.wal_syncs().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        store.wal_syncs().unwrap(),
        closed,
        "it stopped with the store"
    );

    let dir = tempfile::tempdir().unwrap();
    let off = careflow_gateway::Store::connect_with(
        &format!("sqlite://{}", dir.path().join("off.db").display()),
        careflow_gateway::StoreOptions {
            wal_sync_every: None,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(off.wal_syncs(), None);
    let memory = careflow_gateway::Store::connect("sqlite::memory:")
        .await
        .unwrap();
    assert_eq!(memory.wal_syncs(), None);
}

/// A store dropped without `close` lets go of its database: its writer ends, then the
/// background checkpoint loop (which held the pool, and so every connection, for good), and
/// no file of the database stays open in this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_store_lets_go_of_its_database() {
    let (dir, store) = sqlite_store().await;
    let row = store.accept_queued(&new_request("d1")).await.unwrap();
    assert!(store.finish("d1", &done("d1")).await.unwrap());
    assert!(row.applied().await.unwrap());
    // This process's descriptors open on a file of the store's directory.
    let open_here = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|target| target.starts_with(dir.path()))
            })
            .count()
    };
    assert!(open_here() > 0, "the database is open while the store is");
    drop(store);
    let mut waited = 0;
    while open_here() > 0 && waited < 5_000 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited += 50;
    }
    assert_eq!(
        open_here(),
        0,
        "files still open {waited} ms after the drop"
    );
}

/// Makes the database refuse `event` on `triage_requests` when the row's new status is
/// `status` (a trigger stands in for a full disk), then sends a request: it gets a 5xx.
async fn refuse_and_send(
    s: &common::Server,
    conn: &mut sqlx::SqliteConnection,
    event: &str,
    status: &str,
) {
    conn.execute(
        format!(
            "DROP TRIGGER IF EXISTS refuse; CREATE TRIGGER refuse BEFORE {event} ON \
             triage_requests WHEN NEW.status = '{status}' \
             BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
        .as_str(),
    )
    .await
    .unwrap();
    let r = s.triage(5, MESSAGE).await;
    assert!(r.status().is_server_error(), "{}", r.status());
}

/// The database refuses a write (a trigger stands in for a full disk): a decision whose
/// record could not be stored is not given out (5xx, no audit row), and a request whose
/// `accepted` row could not be stored — committed alongside its ending, not before its work —
/// is answered with an error too, with nothing of it on record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_is_not_given_out_when_its_record_cannot_be_stored() {
    let service = Arc::new(NoopService::new());
    let s = start(service.clone(), |_| {}).await;
    let mut conn = sqlx::SqliteConnection::connect(&s.db_url).await.unwrap();
    refuse_and_send(&s, &mut conn, "UPDATE", "done").await;
    let rows = s.store.requests().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].status.as_str(), rows[0].error_kind.as_deref()),
        ("error", Some("database"))
    );
    assert!(s.store.audit(&rows[0].request_id).await.unwrap().is_empty());

    refuse_and_send(&s, &mut conn, "INSERT", "accepted").await;
    assert_eq!(
        service.calls(),
        2,
        "the work ran before the row's commit was known"
    );
    assert_eq!(
        s.store.requests().await.unwrap().len(),
        1,
        "nothing more on record"
    );
    conn.close().await.unwrap();
}
