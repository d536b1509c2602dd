//! No patient text in the logs, even at TRACE: the request is logged by id, key and a
//! prefix of the message's hash. (Its own test binary: it installs the global subscriber.)

mod common;

use careflow_gateway::NoopService;
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_the_message_hash_never_the_message() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let s = common::start(
        Arc::new(NoopService::with_delay(std::time::Duration::from_millis(
            300,
        ))),
        |c| {
            c.request_deadline_ms = 100;
        },
    )
    .await;
    let secret = "zebra-striped rash on my left elbow";
    // One accepted that ends at its deadline (a stored error), one refused at validation:
    // neither may put the text in a log line.
    let r = s.triage(9, secret).await;
    assert_eq!(r.status(), 504);
    let r = s
        .triage_raw(
            &s.admin,
            None,
            json!({"message": format!("{secret}\u{7}")}).to_string(),
            None,
        )
        .await;
    assert_eq!(r.status(), 400);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("request_id"),
        "the test captured the gateway's logs:\n{logs}"
    );
    let sha = careflow_gateway::flow::sha256_hex(secret);
    assert!(
        logs.contains(&sha[..12]),
        "the hash prefix is logged:\n{logs}"
    );
    assert!(!logs.contains("zebra"), "patient text in the logs:\n{logs}");
}
