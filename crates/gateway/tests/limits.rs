//! Overload, rate limits, deadlines, idempotent retries and shutdown, over real HTTP, with a
//! slow no-op service standing in for the engine.

mod common;

use careflow_gateway::NoopService;
use common::{error_of, start};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

fn body(message: &str) -> String {
    json!({"message": message}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_gets_429_with_retry_after_and_loses_no_outcome() {
    let service = Arc::new(NoopService::with_delay(Duration::from_millis(400)));
    let s = start(service.clone(), |c| {
        c.workers = 1;
        c.queue_depth = 1;
    })
    .await;
    // One runs, one waits, the rest are refused at once.
    let sends =
        (0..6).map(|i| s.triage_raw(&s.admin, None, body(&format!("cough number {i}")), None));
    let responses = futures_util::future::join_all(sends).await;
    let mut ok = 0;
    let mut refused = 0;
    for r in responses {
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                let after: u64 = r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=60).contains(&after));
                let (_, e) = error_of(r).await;
                assert_eq!(e["code"], "overloaded");
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, refused), (2, 4));
    assert_eq!(service.calls(), 2);
    // Every accepted request has its stored outcome; the refused ones are on record too.
    let rows = s.store.requests().await.unwrap();
    assert_eq!(rows.len(), 6);
    let done = rows
        .iter()
        .filter(|r| r.status == "done" && r.outcome.is_some())
        .count();
    let rejected = rows.iter().filter(|r| r.status == "rejected").count();
    assert_eq!((done, rejected), (2, 4), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let s = start(Arc::new(NoopService::new()), |c| {
        c.rate_limit.per_key_per_second = 0.5;
        c.rate_limit.burst = 2;
    })
    .await;
    for _ in 0..2 {
        let r = s
            .client
            .get(s.url("/v1/models"))
            .bearer_auth(&s.clinician)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = s
        .client
        .get(s.url("/v1/models"))
        .bearer_auth(&s.clinician)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&after), "{after}");
    assert_eq!(error_of(r).await.1["code"], "rate_limited");
    // Another key has its own bucket.
    let r = s
        .client
        .get(s.url("/v1/models"))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_gets_504_and_its_error_is_stored() {
    let s = start(
        Arc::new(NoopService::with_delay(Duration::from_millis(1500))),
        |c| {
            c.request_deadline_ms = 200;
        },
    )
    .await;
    let r = s.triage_raw(&s.admin, None, body("slow one"), None).await;
    let (status, e) = error_of(r).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (504, Some("deadline_exceeded"))
    );
    let rows = s.store.requests().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "error");
    assert_eq!(rows[0].error_kind.as_deref(), Some("deadline"));
    // The late result does not overwrite the stored ending.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let row = s.store.request(&rows[0].request_id).await.unwrap().unwrap();
    assert_eq!(row.status, "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_idempotency_key_runs_once() {
    let service = Arc::new(NoopService::new());
    let s = start(service.clone(), |_| {}).await;
    let token = s.issuer.token(3);
    let first = s
        .triage_raw(
            &s.portal,
            Some(&token),
            body("I twisted my ankle."),
            Some("retry-1"),
        )
        .await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = s
        .triage_raw(
            &s.portal,
            Some(&token),
            body("I twisted my ankle."),
            Some("retry-1"),
        )
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["request_id"], again["request_id"]);
    assert_eq!(first["disposition"], again["disposition"]);
    assert_eq!(service.calls(), 1);
    // The same key for another message is refused.
    let other = s
        .triage_raw(
            &s.portal,
            Some(&token),
            body("Something else."),
            Some("retry-1"),
        )
        .await;
    let (status, e) = error_of(other).await;
    assert_eq!(
        (status, e["field"].as_str()),
        (422, Some("Idempotency-Key"))
    );
    // Keys are per API key: the admin's "retry-1" is a new request.
    let admin = s
        .triage_raw(&s.admin, None, body("I twisted my ankle."), Some("retry-1"))
        .await;
    assert_eq!(admin.status(), 200);
    assert_eq!(service.calls(), 2);
}

/// The gateway finds a retry by its `accepted` row's insert rather than by a read first, so
/// a full queue is the one place it looks the key up: a retry of a stored request is answered
/// from it even then, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_a_stored_request_is_answered_under_overload() {
    let service = Arc::new(NoopService::with_delay(Duration::from_millis(400)));
    let s = start(service.clone(), |c| {
        c.workers = 1;
        c.queue_depth = 1;
    })
    .await;
    let first = s
        .triage_raw(&s.admin, None, body("I twisted my ankle."), Some("k-1"))
        .await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    // One runs and one waits: the queue is full.
    let busy = futures_util::future::join_all(
        (0..2).map(|i| s.triage_raw(&s.admin, None, body(&format!("cough {i}")), None)),
    );
    let retry = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let fresh = s
            .triage_raw(&s.admin, None, body("A new question."), Some("k-2"))
            .await;
        let again = s
            .triage_raw(&s.admin, None, body("I twisted my ankle."), Some("k-1"))
            .await;
        (fresh, again)
    };
    let (busy, (fresh, again)) = tokio::join!(busy, retry);
    assert!(busy.iter().all(|r| r.status() == 200));
    assert_eq!(fresh.status(), 429, "a new request is refused while full");
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["request_id"], first["request_id"]);
    assert_eq!(service.calls(), 3);
    let rejected = s
        .store
        .requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.status == "rejected")
        .count();
    assert_eq!(rejected, 1, "only the new request is on record as refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish_and_stores_them() {
    let service = Arc::new(NoopService::with_delay(Duration::from_millis(600)));
    let mut s = start(service.clone(), |c| c.workers = 1).await;
    let (client, url, key) = (s.client.clone(), s.url("/v1/triage"), s.admin.clone());
    let inflight: Vec<_> = (0..2)
        .map(|i| {
            let (client, url, key) = (client.clone(), url.clone(), key.clone());
            tokio::spawn(async move {
                client
                    .post(url)
                    .bearer_auth(key)
                    .header("content-type", "application/json")
                    .body(body(&format!("in flight {i}")))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    s.trigger_shutdown();
    for h in inflight {
        assert_eq!(
            h.await.unwrap(),
            200,
            "in-flight work completes during the drain"
        );
    }
    s.shutdown().await.unwrap();
    let rows = s.store.requests().await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.status == "done"), "{rows:?}");
    // After the drain nothing listens.
    assert!(s.client.get(s.url("/healthz")).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_left_at_the_end_of_the_grace_period_is_stored_as_shutdown() {
    let service = Arc::new(NoopService::with_delay(Duration::from_secs(30)));
    let mut s = start(service, |c| {
        c.workers = 1;
        c.shutdown_grace_ms = 300;
    })
    .await;
    let sends: Vec<_> = (0..2)
        .map(|i| {
            let (client, url, key) = (s.client.clone(), s.url("/v1/triage"), s.admin.clone());
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .bearer_auth(key)
                    .header("content-type", "application/json")
                    .body(body(&format!("stuck {i}")))
                    .send()
                    .await
                    .unwrap();
                (
                    r.status().as_u16(),
                    r.headers().get("retry-after").is_some(),
                )
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = std::time::Instant::now();
    s.shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the drain is bounded by the grace"
    );
    for h in sends {
        // One was running, one queued: both answered 503 with Retry-After.
        assert_eq!(h.await.unwrap(), (503, true));
    }
    let rows = s.store.requests().await.unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert_eq!(
            (r.status.as_str(), r.error_kind.as_deref()),
            ("error", Some("shutdown"))
        );
    }
}
