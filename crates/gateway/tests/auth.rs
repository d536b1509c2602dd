//! Credentials over a real HTTP connection: API keys, roles, patient tokens.

mod common;

use careflow_gateway::NoopService;
use common::{error_of, now, start, Issuer, AUDIENCE, ISSUER};
use serde_json::{json, Value};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_invalid_and_revoked_api_keys_get_401() {
    let s = start(Arc::new(NoopService::new()), |_| {}).await;
    let r = s.client.get(s.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let (status, e) = error_of(r).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (401, Some("missing_credentials"))
    );

    for bad in ["nonsense", "cfk_0000.1111", &format!("{}x", s.admin)] {
        let r = s
            .client
            .get(s.url("/v1/models"))
            .bearer_auth(bad)
            .send()
            .await
            .unwrap();
        let (status, e) = error_of(r).await;
        assert_eq!(
            (status, e["code"].as_str()),
            (401, Some("invalid_credentials")),
            "{bad}"
        );
    }
    // Basic auth is not an API key.
    let r = s
        .client
        .get(s.url("/v1/models"))
        .basic_auth("a", Some("b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // An admin creates a key, it works, the admin revokes it, it stops working at once.
    let r = s
        .client
        .post(s.url("/v1/keys"))
        .bearer_auth(&s.admin)
        .json(&json!({"name": "temp", "role": "clinician"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_string();
    let id = created["key"]["id"].as_str().unwrap().to_string();
    let ok = s
        .client
        .get(s.url("/v1/models"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let r = s
        .client
        .delete(s.url(&format!("/v1/keys/{id}")))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = s
        .client
        .get(s.url("/v1/models"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    let (status, e) = error_of(r).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (401, Some("revoked_credentials"))
    );
    // The listing shows the key as revoked and never a secret.
    let listed = s
        .client
        .get(s.url("/v1/keys"))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listed.contains(&id) && !listed.contains(secret.split('.').nth(1).unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_expired_forged_and_foreign_patient_tokens_get_401() {
    let s = start(Arc::new(NoopService::new()), |_| {}).await;
    let body = json!({"message": "I have a cough."}).to_string();
    let (status, e) = error_of(s.triage_raw(&s.portal, None, body.clone(), None).await).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (401, Some("missing_patient_token"))
    );

    let claims = |exp: i64, iss: &str, aud: &str| json!({"sub": "7", "iss": iss, "aud": aud, "exp": exp, "iat": now() - 7200});
    let other_issuer = Issuer::generate();
    let cases = [
        (
            "expired",
            s.issuer.token_with(claims(now() - 60, ISSUER, AUDIENCE)),
            "token_expired",
        ),
        ("forged", other_issuer.token(7), "invalid_token"),
        (
            "wrong issuer",
            s.issuer
                .token_with(claims(now() + 600, "https://evil.test", AUDIENCE)),
            "invalid_token",
        ),
        (
            "wrong audience",
            s.issuer
                .token_with(claims(now() + 600, ISSUER, "someone-else")),
            "invalid_token",
        ),
        (
            "no exp",
            s.issuer
                .token_with(json!({"sub": "7", "iss": ISSUER, "aud": AUDIENCE})),
            "invalid_token",
        ),
        (
            "not a patient id",
            s.issuer.token_with(
                json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600}),
            ),
            "invalid_token",
        ),
        ("garbage", "a.b.c".to_string(), "invalid_token"),
    ];
    for (what, token, code) in cases {
        let r = s
            .triage_raw(&s.portal, Some(&token), body.clone(), None)
            .await;
        let (status, e) = error_of(r).await;
        assert_eq!(
            (status, e["code"].as_str()),
            (401, Some(code)),
            "{what}: {e}"
        );
    }
    // Nothing was accepted.
    assert!(s.store.requests().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_may_not_gets_403() {
    let s = start(Arc::new(NoopService::new()), |_| {}).await;
    let body = json!({"message": "I have a cough."}).to_string();
    let (status, e) = error_of(s.triage_raw(&s.clinician, None, body, None).await).await;
    assert_eq!((status, e["code"].as_str()), (403, Some("forbidden")));
    for key in [&s.portal, &s.clinician] {
        let r = s
            .client
            .get(s.url("/v1/keys"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let r = s
            .client
            .post(s.url("/v1/keys"))
            .bearer_auth(key)
            .json(&json!({"name": "x", "role": "admin"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_reads_only_their_own_result() {
    let s = start(Arc::new(NoopService::new()), |_| {}).await;
    let r = s.triage(1, "I have had a cough for a week.").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let id = body["request_id"].as_str().unwrap().to_string();
    assert_eq!(body["status"], "done");
    assert_eq!(body["disposition"], "routine");
    assert_eq!(body["patient_id"], 1);
    assert!(
        body.get("outcome").is_none(),
        "the portal sees its view, not the outcome"
    );

    let get = |key: &str, token: Option<String>| {
        let mut r = s
            .client
            .get(s.url(&format!("/v1/triage/{id}")))
            .bearer_auth(key);
        if let Some(t) = token {
            r = r.header("x-patient-token", t);
        }
        r.send()
    };
    // Another patient: 404, the same as a request that does not exist.
    let (status, e) = error_of(get(&s.portal, Some(s.issuer.token(2))).await.unwrap()).await;
    assert_eq!((status, e["code"].as_str()), (404, Some("not_found")));
    // No token: 401.
    assert_eq!(get(&s.portal, None).await.unwrap().status(), 401);
    // The patient themself, a clinician and an admin read it.
    for (key, token) in [
        (&s.portal, Some(s.issuer.token(1))),
        (&s.clinician, None),
        (&s.admin, None),
    ] {
        let r = get(key, token).await.unwrap();
        assert_eq!(r.status(), 200);
        let got: Value = r.json().await.unwrap();
        assert_eq!(got["request_id"], id.as_str());
        assert_eq!(got["status"], "done");
        assert_eq!(got["disposition"], "routine");
    }
    let r = s
        .client
        .get(s.url("/v1/triage/doesnotexist"))
        .bearer_auth(&s.clinician)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
