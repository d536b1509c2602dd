//! Issue 9 in a real browser: `careflow serve` on the default model sends a case to human
//! review; a clinician signs in to the console in headless Chromium, opens the queued case
//! (whose message carries HTML and a script, shown as text and never run), overrides it, and
//! sees the override on the case, in the audit and in `careflow review export`; the dashboard
//! draws its charts. Screenshots of the queue, the case and the dashboard are saved under
//! `target/tmp/console-screenshots/`.
//!
//! Needs the default model (`careflow model pull smollm2-135m`) and Debian's `chromium` and
//! `chromium-driver` (scripts/setup.sh installs them; scripts/test.sh pulls the model).

mod common;

use common::webdriver::Driver;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn key(data: &Path, name: &str, role: &str) -> String {
    let v = common::ok_json(
        &common::careflow(
            &["keys", "create", "--name", name, "--role", role, "--json"],
            data,
        ),
        "keys create",
    );
    v["secret"].as_str().unwrap().to_string()
}

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.len() > 5_000 && bytes.starts_with(b"\x89PNG"),
        "{} is a PNG",
        path.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinician_overrides_a_queued_case_in_chromium_and_the_export_has_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    // Every case escalates (no frontier is configured, so it goes to human review).
    let config = data.join("careflow.toml");
    std::fs::write(
        &config,
        "[run]\nconfidence_threshold = 0.99\n[gateway.rate_limit]\nper_key_per_second = 1000\nburst = 1000\n",
    )
    .unwrap();
    let clinician = key(data, "dr-lee", "clinician");
    let admin = key(data, "intake", "admin");
    let server = common::serve(data, &config, &[]).await;

    let message =
        "<script>document.title='pwned'</script><b>Sharp</b> lower back pain for 3 days, \
                   worse when I bend. Should I be worried?";
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/triage", server.base))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(json!({ "message": message }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["decided_by"], "human_review", "{v}");
    let id = v["request_id"].as_str().unwrap().to_string();
    let proposed = v["disposition"].as_str().unwrap().to_string();
    let new = if proposed == "emergency_now" {
        "urgent_same_day"
    } else {
        "emergency_now"
    };

    let driver = Driver::start(&data.join("chromedriver.log")).await;
    let b = driver.session().await;
    // Not signed in: the console sends the browser to the sign-in page.
    b.goto(&format!("{}/console", server.base)).await;
    assert!(b.url().await.ends_with("/console/login"));
    let field = b.find("#api_key").await;
    b.type_into(&field, &clinician).await;
    b.click(&b.find("form[action='/console/login'] button").await)
        .await;
    b.wait_for("the queue", "return location.pathname === '/console'")
        .await;
    let row = b.find(&format!("tr[data-request='{id}']")).await;
    assert!(b.text(&row).await.contains(&proposed));
    b.screenshot(&shots().join("queue.png")).await;

    b.click(&b.find(&format!("tr[data-request='{id}'] a.open")).await)
        .await;
    b.wait_for(
        "the case page",
        &format!("return location.pathname === '/console/case/{id}'"),
    )
    .await;
    let shown = b.text(&b.find("#message").await).await;
    assert_eq!(shown, message, "the patient's HTML is shown as text");
    assert!(
        !b.title().await.contains("pwned"),
        "the patient's script did not run"
    );
    assert_eq!(
        b.run(
            "return document.querySelectorAll('#message b, #message script').length",
            json!([])
        )
        .await,
        json!(0),
        "no element was made from the patient's text"
    );
    assert!(b.text(&b.find("#steps").await).await.contains("plan"));
    b.screenshot(&shots().join("case.png")).await;

    b.click(&b.find("input[name='action'][value='override']").await)
        .await;
    b.run(
        "document.getElementById('disposition').value = arguments[0]; return true;",
        json!([new]),
    )
    .await;
    b.type_into(
        &b.find("#reason").await,
        "Pain with new leg weakness on the phone call",
    )
    .await;
    b.click(&b.find("#submit-review").await).await;
    b.wait_for(
        "the decision",
        "return !!document.getElementById('review-status')",
    )
    .await;
    let status = b.text(&b.find("#review-status").await).await;
    assert!(
        status.contains("override") && status.contains(new),
        "{status}"
    );

    b.goto(&format!("{}/console/audit", server.base)).await;
    let audit = b
        .text(&b.find(&format!("#audit tr[data-request='{id}']")).await)
        .await;
    assert!(
        audit.contains("override") && audit.contains(new) && audit.contains("dr-lee"),
        "{audit}"
    );
    assert!(audit.contains("leg weakness"));

    b.goto(&format!("{}/console/dashboard", server.base)).await;
    b.wait_for(
        "the charts",
        "return Number(document.body.dataset.chartsDrawn || 0) >= 1 \
         && document.querySelectorAll('#c-requests rect').length > 0 \
         && document.querySelectorAll('#c-latency rect').length > 0",
    )
    .await;
    assert_eq!(b.text(&b.find("#t-decisions").await).await, "1");
    b.screenshot(&shots().join("dashboard.png")).await;
    b.quit().await;
    for name in ["queue.png", "case.png", "dashboard.png"] {
        assert_png(&shots().join(name));
    }

    // The override is the gold label of the export, which loads as an evaluation suite.
    let out = data.join("reviewed.jsonl");
    let o = common::careflow(&["review", "export", "--out", out.to_str().unwrap()], data);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["id"], id.as_str());
    assert_eq!(line["gold"], new);
    assert_eq!(line["message"], message);
    assert!(line["tags"]
        .as_array()
        .unwrap()
        .contains(&json!(format!("workflow:{proposed}"))));
    let suite = careflow_eval::load_suite(&out).unwrap();
    assert!(suite.problems.is_empty(), "{:?}", suite.problems);
    assert_eq!(suite.items.len(), 1);
    drop(server);
}
