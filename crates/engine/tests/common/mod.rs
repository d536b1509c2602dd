//! Shared set-up for the engine tests: the real default model (SmolLM2-135M-Instruct Q4_1),
//! provisioned by `careflow model pull smollm2-135m` (the test script does it first).
#![allow(dead_code)]

use careflow_engine::{EmbeddedEngine, EngineConfig};
use std::path::PathBuf;
use std::sync::OnceLock;

pub fn model_path() -> PathBuf {
    if let Ok(p) = std::env::var("CAREFLOW_MODEL") {
        return PathBuf::from(p);
    }
    let p = careflow_engine::models::default_model_path();
    assert!(
        p.is_file(),
        "model not found at {} — run `careflow model pull smollm2-135m` (scripts/test.sh does)",
        p.display()
    );
    p
}

pub fn config() -> EngineConfig {
    EngineConfig {
        threads: Some(test_threads()),
        kv_cells: 8192,
        max_sequences: 12,
        session_max_tokens: 2048,
        ..EngineConfig::for_model(model_path())
    }
}

/// Tests run one at a time (`--test-threads=1`): each engine may use every core.
pub fn test_threads() -> usize {
    std::env::var("CAREFLOW_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// One engine per test binary: the model loads once.
pub fn engine() -> EmbeddedEngine {
    static E: OnceLock<EmbeddedEngine> = OnceLock::new();
    E.get_or_init(|| config().build().expect("engine starts")).clone()
}
