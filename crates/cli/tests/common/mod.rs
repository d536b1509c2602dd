//! Running the real `careflow` binary from the CLI's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

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

pub mod webdriver;
