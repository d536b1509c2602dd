//! The review API over a real HTTP connection: the queue holds what the workflow did not
//! settle alone, most urgent first; a clinician confirms or overrides once, with the reason;
//! portal keys are refused; bad decisions name their field.

mod common;

use common::Scripted;
use serde_json::{json, Value};
use std::sync::Arc;

async fn post_review(s: &common::Server, key: &str, id: &str, body: &Value) -> reqwest::Response {
    s.client
        .post(s.url(&format!("/v1/review/{id}")))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn submit(s: &common::Server, text: &str) -> String {
    let r = s.triage(7, text).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["request_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_queue_orders_cases_and_one_decision_per_case_is_stored_with_its_reviewer() {
    let s = common::start(Arc::new(Scripted), |_| {}).await;
    let unsure = submit(&s, "unsure about this one").await;
    let _settled = submit(&s, "a plain question").await;
    let urgent = submit(&s, "urgent looking case").await;
    let frontier = submit(&s, "frontier decided case").await;

    let get = |key: &str, path: &str| {
        s.client
            .get(s.url(path))
            .bearer_auth(key.to_string())
            .send()
    };
    let q: Value = get(&s.clinician, "/v1/review/queue")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = q["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["request_id"].as_str().unwrap())
        .collect();
    // The urgent case first; then routine (older) before self-care; the settled one not at all.
    assert_eq!(
        ids,
        vec![urgent.as_str(), unsure.as_str(), frontier.as_str()],
        "{q}"
    );
    assert_eq!(q["data"][0]["floor"], "urgent_same_day");

    // A portal key cannot see or act on the queue, whatever it carries.
    let r = get(&s.portal, "/v1/review/queue").await.unwrap();
    assert_eq!(r.status(), 403);
    let r = post_review(&s, &s.portal, &urgent, &json!({"action": "confirm"})).await;
    assert_eq!(r.status(), 403);

    // Bad decisions name the field and store nothing.
    for (body, field) in [
        (json!({}), "action"),
        (json!({"action": "approve"}), "action"),
        (json!({"action": "override", "reason": "x"}), "disposition"),
        (
            json!({"action": "override", "disposition": "soonish", "reason": "x"}),
            "disposition",
        ),
        (
            json!({"action": "override", "disposition": "emergency_now"}),
            "reason",
        ),
        (
            json!({"action": "confirm", "disposition": "routine"}),
            "disposition",
        ),
        (
            json!({"action": "confirm", "reason": "bad\u{0007}"}),
            "reason",
        ),
        (json!({"action": "confirm", "note": "x"}), "note"),
    ] {
        let r = post_review(&s, &s.clinician, &urgent, &body).await;
        let (status, err) = common::error_of(r).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["field"], field, "{body}: {err}");
    }
    assert!(s.store.review(&urgent).await.unwrap().is_none());

    // An override, with its reason, by the clinician's key.
    let r = post_review(
        &s,
        &s.clinician,
        &urgent,
        &json!({"action": "override", "disposition": "emergency_now",
                      "reason": "sudden weakness in both legs: send to the ED"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let stored = s.store.review(&urgent).await.unwrap().unwrap();
    assert_eq!(stored.action, "override");
    assert_eq!(stored.disposition, "emergency_now");
    assert_eq!(stored.previous, "urgent_same_day");
    let clinician_key = s.store.list_keys().await.unwrap();
    let clinician_id = &clinician_key
        .iter()
        .find(|k| k.role == "clinician")
        .unwrap()
        .id;
    assert_eq!(&stored.reviewer_key_id, clinician_id);

    // One decision per case: a second (even by an admin) gets 409 naming the one that stands.
    let r = post_review(&s, &s.admin, &urgent, &json!({"action": "confirm"})).await;
    let (status, err) = common::error_of(r).await;
    assert_eq!(status, 409, "{err}");
    assert!(err["message"].as_str().unwrap().contains("emergency_now"));

    // A confirmation keeps the workflow's disposition; the reviewed cases leave the queue.
    let r = post_review(&s, &s.admin, &unsure, &json!({"action": "confirm"})).await;
    assert_eq!(r.status(), 201);
    let q: Value = get(&s.clinician, "/v1/review/queue")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(q["data"].as_array().unwrap().len(), 1);
    assert_eq!(q["data"][0]["request_id"], frontier.as_str());

    // The case view carries the outcome and the decision.
    let c: Value = get(&s.clinician, &format!("/v1/review/{urgent}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["outcome"]["disposition"], "urgent_same_day");
    assert_eq!(c["review"]["disposition"], "emergency_now");
    let r = get(&s.clinician, "/v1/review/nope0000").await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(s.store.reviews().await.unwrap().len(), 2);

    // Decisions are append-only, like the audit log.
    use sqlx::{Connection, Executor};
    let mut conn = sqlx::SqliteConnection::connect(&s.db_url).await.unwrap();
    for sql in [
        "UPDATE reviews SET disposition = 'self_care'",
        "DELETE FROM reviews",
    ] {
        let e = conn.execute(sql).await.unwrap_err().to_string();
        assert!(e.contains("append-only"), "{sql}: {e}");
    }
}
