//! Running the real `careflow` binary from the CLI's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `careflow ARGS` with its data directory (database, caches other than the model) at `data`
/// and none of the caller's careflow environment leaking in.
pub fn command(args: &[&str], data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_careflow"));
    c.args(args)
        .env("CAREFLOW_DATA_DIR", data)
        .env_remove("CAREFLOW_DATABASE_URL")
        .env_remove("CAREFLOW_CONFIG")
        .env_remove("CAREFLOW_FRONTIER_MODEL")
        .env_remove("CAREFLOW_WORKFLOW")
        .env_remove("CAREFLOW_MODEL")
        .env_remove("CAREFLOW_PRICES");
    c
}

pub fn careflow(args: &[&str], data: &Path) -> Output {
    command(args, data).output().expect("runs careflow")
}

/// The command's standard output as JSON, after checking it succeeded.
pub fn ok_json(out: &Output, what: &str) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `careflow serve` child, killed when dropped.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `careflow serve --config CONFIG` on a free port with its data at `data` (its log in
/// `data/serve.log`, `env` added), and waits until it is ready.
pub async fn serve(data: &Path, config: &Path, env: &[(&str, &str)]) -> Server {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut c = command(
        &[
            "serve",
            "--listen",
            &listen,
            "--config",
            config.to_str().unwrap(),
        ],
        data,
    );
    c.envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data.join("serve.log")).unwrap());
    let server = Server {
        child: c.spawn().expect("starts careflow serve"),
        base: format!("http://{listen}"),
    };
    let t = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("{}/readyz", server.base)).await {
            if r.status().is_success() {
                return server;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "careflow serve on {listen} not ready after 180 s: {}",
            std::fs::read_to_string(data.join("serve.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub mod webdriver;
