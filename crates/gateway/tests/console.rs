//! Issue 9: the review console over a real HTTP connection (the browser test with Chromium
//! is `crates/cli/tests/console_browser.rs`): who can open it, CSRF, escaping of patient
//! text, no patient data in URLs, session expiry, the portal's answer held until a review,
//! and the dashboard's figures against the Prometheus counters.

mod common;

use careflow_core::Disposition;
use common::Scripted;
use serde_json::{json, Value};
use std::sync::Arc;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn submit(s: &common::Server, patient: i64, text: &str) -> Value {
    let r = s.triage(patient, text).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Signs in with `key`; the session cookie (`name=value`).
async fn sign_in(s: &common::Server, key: &str) -> String {
    let r = no_redirects()
        .post(s.url("/console/login"))
        .form(&[("api_key", key)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "a clinician key signs in");
    assert_eq!(r.headers()["location"], "/console");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age="] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    cookie.split(';').next().unwrap().to_string()
}

async fn get_page(s: &common::Server, cookie: &str, path: &str) -> (u16, String) {
    let r = no_redirects()
        .get(s.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The CSRF token the page's forms carry.
fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    page[at..at + 64].to_string()
}

#[tokio::test]
async fn portal_keys_and_patient_tokens_cannot_open_the_console() {
    let s = common::start(Arc::new(Scripted), |_| {}).await;
    let id = submit(&s, 7, "unsure about a rash").await["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let c = no_redirects();
    let token = s.issuer.token(7);
    for path in [
        "/console",
        &format!("/console/case/{id}"),
        "/console/dashboard",
    ] {
        // No cookie: whatever else is sent, the sign-in page.
        for (auth, patient) in [
            (None, None),
            (Some(&s.portal), Some(&token)),
            (Some(&s.clinician), None),
            (Some(&s.admin), Some(&token)),
        ] {
            let mut req = c.get(s.url(path));
            if let Some(k) = auth {
                req = req.bearer_auth(k);
            }
            if let Some(t) = patient {
                req = req.header("x-patient-token", t.as_str());
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 303, "{path} without a console session");
            assert_eq!(r.headers()["location"], "/console/login");
        }
    }
    let r = c
        .get(s.url("/console/dashboard.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the figures need a session");

    // Signing in with a portal key or a patient token is refused, and no cookie is set.
    for (key, status) in [
        (s.portal.as_str(), 403),
        (token.as_str(), 401),
        ("cfk_not_a_key", 401),
    ] {
        let r = c
            .post(s.url("/console/login"))
            .form(&[("api_key", key)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
        assert!(r.headers().get("set-cookie").is_none());
    }
    // A session cookie made up by the caller opens nothing.
    let (status, _) = get_page(
        &s,
        &format!("careflow_console={}", "ab".repeat(32)),
        "/console",
    )
    .await;
    assert_eq!(status, 303);
}

#[tokio::test]
async fn a_decision_needs_the_sessions_csrf_token_and_a_same_origin_post() {
    let s = common::start(Arc::new(Scripted), |_| {}).await;
    let id = submit(&s, 7, "unsure about a rash").await["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let cookie = sign_in(&s, &s.clinician).await;
    let (status, queue) = get_page(&s, &cookie, "/console").await;
    assert_eq!(status, 200);
    assert!(
        queue.contains(&format!("/console/case/{id}")),
        "the case is queued"
    );
    let (_, page) = get_page(&s, &cookie, &format!("/console/case/{id}")).await;
    let csrf = csrf_of(&page);
    let c = no_redirects();
    let post = |form: Vec<(&'static str, String)>, origin: Option<&'static str>| {
        let mut req = c
            .post(s.url(&format!("/console/case/{id}")))
            .header("cookie", cookie.as_str())
            .form(&form);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    let override_form = |csrf: Option<String>| {
        let mut f = vec![
            ("action", "override".to_string()),
            ("disposition", "urgent_same_day".to_string()),
            ("reason", "fever with the rash".to_string()),
        ];
        if let Some(t) = csrf {
            f.push(("csrf", t));
        }
        f
    };
    for (form, origin) in [
        (override_form(None), None),
        (override_form(Some("0".repeat(64))), None),
        (
            override_form(Some(csrf.clone())),
            Some("https://evil.example"),
        ),
    ] {
        let r = post(form, origin).await.unwrap();
        assert_eq!(r.status(), 403);
        assert!(
            s.store.review(&id).await.unwrap().is_none(),
            "nothing is recorded without the token"
        );
    }
    // Another clinician's session token does not fit this session.
    let other = sign_in(&s, &s.admin).await;
    let (_, other_page) = get_page(&s, &other, "/console").await;
    assert_ne!(csrf_of(&other_page), csrf);
    let r = post(override_form(Some(csrf_of(&other_page))), None)
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // An override without a reason names the field and records nothing.
    let r = post(
        vec![
            ("csrf", csrf.clone()),
            ("action", "override".into()),
            ("disposition", "urgent_same_day".into()),
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("reason: an override needs a reason"));
    assert!(s.store.review(&id).await.unwrap().is_none());

    let r = post(
        override_form(Some(csrf.clone())),
        Some("http://evil.example"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    let r = post(override_form(Some(csrf.clone())), None).await.unwrap();
    assert_eq!(r.status(), 303);
    let review = s.store.review(&id).await.unwrap().expect("recorded");
    assert_eq!(review.action, "override");
    assert_eq!(review.disposition, "urgent_same_day");
    assert_eq!(review.previous, "routine");
    assert_eq!(review.reason.as_deref(), Some("fever with the rash"));
    let clinician_key_id = s
        .store
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.name == "clinician")
        .unwrap()
        .id;
    assert_eq!(review.reviewer_key_id, clinician_key_id);
    // A second decision is refused; the first stands.
    let r = post(
        vec![("csrf", csrf.clone()), ("action", "confirm".into())],
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(
        s.store.review(&id).await.unwrap().unwrap().action,
        "override"
    );
    let (_, audit) = get_page(&s, &cookie, "/console/audit").await;
    assert!(audit.contains(&id) && audit.contains("fever with the rash"));
    // Sign-ins are on the audit page too: the clinician's and the admin's.
    let sign_ins = &audit[audit.find("id=\"sign-ins\"").unwrap()..];
    assert!(sign_ins.contains(&clinician_key_id) && sign_ins.matches("<tr>").count() >= 3);

    // Sign-out ends the session on the server: the old cookie opens nothing.
    let r = c
        .post(s.url("/console/logout"))
        .header("cookie", cookie.as_str())
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (status, _) = get_page(&s, &cookie, "/console").await;
    assert_eq!(status, 303);
}

#[tokio::test]
async fn patient_text_with_html_is_shown_as_text_and_urls_carry_no_patient_data() {
    let s = common::start(Arc::new(Scripted), |_| {}).await;
    let evil = "<script>alert('x')</script><img src=x onerror=alert(1)> my head hurts";
    let id = submit(&s, 4242, evil).await["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let cookie = sign_in(&s, &s.clinician).await;
    let r = no_redirects()
        .get(s.url(&format!("/console/case/{id}")))
        .header("cookie", cookie.as_str())
        .send()
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    let page = r.text().await.unwrap();
    assert!(
        page.contains("&lt;script&gt;alert('x')&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"),
        "the message is escaped"
    );
    assert!(!page.contains("<script>alert") && !page.contains("<img src=x"));

    // An override reason with HTML is escaped in the audit too.
    let csrf = csrf_of(&page);
    let r = no_redirects()
        .post(s.url(&format!("/console/case/{id}")))
        .header("cookie", cookie.as_str())
        .form(&[
            ("csrf", csrf.as_str()),
            ("action", "override"),
            ("disposition", "within_24_72h"),
            ("reason", "<b onmouseover=alert(2)>see today</b>"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let (_, audit) = get_page(&s, &cookie, "/console/audit").await;
    assert!(audit.contains("&lt;b onmouseover=alert(2)&gt;see today&lt;/b&gt;"));
    assert!(!audit.contains("<b onmouseover"));

    // Every URL the pages point to is a fixed path or a request id: no patient id, no text.
    submit(&s, 4242, "unsure: pain after a fall").await;
    for path in [
        "/console",
        "/console/audit",
        "/console/dashboard",
        &format!("/console/case/{id}"),
    ] {
        let (_, page) = get_page(&s, &cookie, path).await;
        for attr in ["href=\"", "action=\"", "src=\""] {
            for part in page.split(attr).skip(1) {
                let url = &part[..part.find('"').unwrap()];
                let fixed = [
                    "/console",
                    "/console/audit",
                    "/console/dashboard",
                    "/console/logout",
                    "/console/assets/console.css",
                    "/console/assets/console.js",
                ];
                let case = url.strip_prefix("/console/case/").is_some_and(|rest| {
                    rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit())
                });
                assert!(
                    fixed.contains(&url) || case || url.starts_with("https://"),
                    "{path} links to {url}"
                );
                assert!(!url.contains("4242"), "{url}");
            }
        }
    }
}

#[tokio::test]
async fn an_expired_session_opens_nothing() {
    let s = common::start(Arc::new(Scripted), |_| {}).await;
    let keys = s.store.list_keys().await.unwrap();
    let clinician = keys.iter().find(|k| k.name == "clinician").unwrap();
    let token = "cd".repeat(32);
    let hash = careflow_gateway::flow::sha256_hex(&token);
    s.store
        .create_console_session(&hash, &clinician.id, "clinician", &"ef".repeat(32), -1)
        .await
        .unwrap();
    let (status, _) = get_page(&s, &format!("careflow_console={token}"), "/console").await;
    assert_eq!(status, 303, "expired");
    let live = "12".repeat(32);
    s.store
        .create_console_session(
            &careflow_gateway::flow::sha256_hex(&live),
            &clinician.id,
            "clinician",
            &"ef".repeat(32),
            60_000,
        )
        .await
        .unwrap();
    let (status, _) = get_page(&s, &format!("careflow_console={live}"), "/console").await;
    assert_eq!(status, 200, "a live session opens the queue");
    // Revoking the key ends its sessions at once.
    assert!(s.store.revoke_key(&clinician.id).await.unwrap());
    let (status, _) = get_page(&s, &format!("careflow_console={live}"), "/console").await;
    assert_eq!(status, 303, "the key was revoked");
}

#[tokio::test]
async fn the_portal_gets_the_answer_only_after_a_clinician_decides() {
    let s = common::start(Arc::new(Scripted), |_| {}).await;
    let token = s.issuer.token(7);
    let portal_get = |id: String| {
        s.client
            .get(s.url(&format!("/v1/triage/{id}")))
            .bearer_auth(&s.portal)
            .header("x-patient-token", token.as_str())
            .send()
    };
    // Settled by the small model: released at once.
    let v = submit(&s, 7, "a plain question about a cold").await;
    assert_eq!(v["release"], "released");
    assert!(v["patient_reply"]
        .as_str()
        .unwrap()
        .contains("Drafted answer"));

    let v = submit(&s, 7, "unsure about a rash").await;
    let id = v["request_id"].as_str().unwrap().to_string();
    assert_eq!(
        s.store.message(&id).await.unwrap().as_deref(),
        Some("unsure about a rash")
    );
    assert_eq!(v["release"], "held_for_review");
    assert!(
        v["patient_reply"].is_null() && v.get("outcome").is_none(),
        "{v}"
    );
    assert!(v["interim_reply"]
        .as_str()
        .unwrap()
        .contains("A clinician will review"));
    assert!(
        !v.to_string().contains("Drafted"),
        "the draft is not in the portal's view"
    );
    let v: Value = portal_get(id.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(v["release"], "held_for_review");
    assert!(v["patient_reply"].is_null() && v.get("outcome").is_none());
    assert!(!v.to_string().contains("Drafted"));
    // The same Idempotency-Key and message under another patient's token replays nothing.
    for patient in [7, 8] {
        let r = s
            .triage_raw(
                &s.portal,
                Some(&s.issuer.token(patient)),
                json!({"message": "unsure again"}).to_string(),
                Some("idem-1"),
            )
            .await;
        assert_eq!(r.status(), if patient == 7 { 200 } else { 422 });
    }
    // A clinician key reads the draft.
    let v: Value = s
        .client
        .get(s.url(&format!("/v1/triage/{id}")))
        .bearer_auth(&s.clinician)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["outcome"]["patient_reply"]
        .as_str()
        .unwrap()
        .contains("Drafted"));

    let r = s
        .client
        .post(s.url(&format!("/v1/review/{id}")))
        .bearer_auth(&s.clinician)
        .json(
            &json!({"action": "override", "disposition": "urgent_same_day", "reason": "spreading"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = portal_get(id.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(v["release"], "released");
    assert_eq!(
        v["disposition"], "urgent_same_day",
        "the clinician's disposition"
    );
    let reply = v["patient_reply"].as_str().unwrap();
    assert!(
        reply.contains("A clinician reviewed your message"),
        "{reply}"
    );
    assert!(
        reply.contains(Disposition::UrgentSameDay.patient_phrase()),
        "{reply}"
    );
    assert!(
        !reply.contains("Drafted"),
        "the draft for the old disposition is not sent"
    );
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn the_dashboard_figures_agree_with_the_prometheus_counters() {
    dashboard_agrees_with_metrics(common::start(Arc::new(Scripted), |_| {}).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_and_dashboard_work_on_postgres() {
    let Some(db_url) = common::fresh_postgres("console").await else {
        println!("skipped: set CAREFLOW_TEST_POSTGRES_URL=postgres://… to run the PostgreSQL console test");
        return;
    };
    let s = common::start_on(
        Arc::new(Scripted),
        |_| {},
        tempfile::tempdir().unwrap(),
        db_url,
    )
    .await;
    let id = submit(&s, 9, "unsure <b>bold</b> text").await["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let cookie = sign_in(&s, &s.clinician).await;
    let (_, page) = get_page(&s, &cookie, &format!("/console/case/{id}")).await;
    assert!(page.contains("unsure &lt;b&gt;bold&lt;/b&gt; text"));
    let r = no_redirects()
        .post(s.url(&format!("/console/case/{id}")))
        .header("cookie", cookie.as_str())
        .form(&[("csrf", csrf_of(&page).as_str()), ("action", "confirm")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cases = s.store.reviewed_cases().await.unwrap();
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0].message.as_deref(), Some("unsure <b>bold</b> text"));
    let db_url = s.db_url.clone();
    dashboard_agrees_with_metrics(s).await;
    common::drop_postgres(&db_url).await;
}

/// Five more requests (two settled, three for review), one confirmed: the dashboard's JSON,
/// the Prometheus counters and the page agree.
async fn dashboard_agrees_with_metrics(mut s: common::Server) {
    let cookie = sign_in(&s, &s.clinician).await;
    let figures = || async {
        no_redirects()
            .get(s.url("/console/dashboard.json"))
            .header("cookie", cookie.as_str())
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let before = figures().await;
    let count = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    for text in [
        "a plain question",
        "unsure one",
        "unsure two",
        "urgent chest pain",
        "another plain one",
    ] {
        submit(&s, 7, text).await;
    }
    let queued: Value = s
        .client
        .get(s.url("/v1/review/queue"))
        .bearer_auth(&s.clinician)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = queued["data"][0]["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        queued["data"][0]["urgency"], "urgent_same_day",
        "most urgent first"
    );
    let r = s
        .client
        .post(s.url(&format!("/v1/review/{first}")))
        .bearer_auth(&s.clinician)
        .json(&json!({"action": "confirm"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let f = figures().await;
    let delta = |p: &str| count(&f, p) - count(&before, p);
    assert_eq!(delta("/decisions"), 5);
    assert_eq!(delta("/decided_by/human_review"), 3);
    assert_eq!(delta("/decided_by/small"), 2);
    assert_eq!(delta("/dispositions/self_care"), 2);
    assert_eq!(delta("/pending_review"), 2);
    assert_eq!(delta("/reviews/confirm"), 1);
    assert_eq!(delta("/computed"), 5 * 250);
    assert_eq!(delta("/reused"), 5 * 750);
    let decisions = count(&f, "/decisions") as f64;
    let review_rate = count(&f, "/decided_by/human_review") as f64 / decisions;
    assert!((f["review_rate"].as_f64().unwrap() - review_rate).abs() < 1e-9);
    let today = f["days"].as_array().unwrap().last().unwrap().clone();
    let today0 = before["days"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(count(&today, "/requests") - count(&today0, "/requests"), 5);
    assert_eq!(f["days"].as_array().unwrap().len(), 14);
    let steps = f["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["step"], "analyze");
    assert_eq!(steps[0]["p50_ms"], 20.0);

    let m = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The counters start with the server; the database's figures cover its whole history.
    assert_eq!(metric(&m, "careflow_decisions_total"), decisions);
    assert_eq!(
        metric(&m, "careflow_decisions_total{decided_by=\"human_review\""),
        count(&f, "/decided_by/human_review") as f64
    );
    assert_eq!(
        metric(&m, "careflow_reviews_total{action=\"confirm\"}"),
        count(&f, "/reviews/confirm") as f64
    );
    assert_eq!(
        metric(&m, "careflow_tokens_total{kind=\"reused\"}"),
        f["reused"].as_f64().unwrap()
    );
    let flagship = f["flagship_usd"].as_f64().unwrap();
    let cost = f["cost_usd"].as_f64().unwrap();
    assert!(
        flagship > cost * 10.0,
        "flagship {flagship} vs careflow {cost}"
    );
    let m_flagship = metric(&m, "careflow_flagship_equivalent_usd_total");
    assert!(
        (m_flagship - flagship).abs() <= 1e-9 * flagship.max(1.0),
        "{m_flagship} vs {flagship}"
    );
    assert!((metric(&m, "careflow_cost_usd_total") - cost).abs() < 1e-9);

    // The page renders the same figures, and its charts' data block is inert JSON.
    let (status, page) = get_page(&s, &cookie, "/console/dashboard").await;
    assert_eq!(status, 200);
    assert!(page.contains(&format!("id=\"t-decisions\">{decisions}<")));
    assert!(page.contains("<script id=\"figures\" type=\"application/json\">"));
    s.shutdown().await.unwrap();
    s.store.close().await;
}

#[tokio::test]
async fn sign_in_attempts_are_throttled_before_the_key_is_checked() {
    let s = common::start(Arc::new(Scripted), |c| {
        c.rate_limit.per_key_per_second = 0.1;
        c.rate_limit.burst = 3;
    })
    .await;
    let attempt = |key: String| {
        no_redirects()
            .post(s.url("/console/login"))
            .form(&[("api_key", key)])
            .send()
    };
    for _ in 0..3 {
        assert_eq!(
            attempt("cfk_wrong.guess".into()).await.unwrap().status(),
            401
        );
    }
    // The bucket is spent: even the right key waits, told how long.
    let r = attempt(s.clinician.clone()).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.headers().get("set-cookie").is_none());
}
