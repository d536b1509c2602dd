//! Shared set-up for the engine tests: the real default model (SmolLM2-135M-Instruct Q4_1),
//! provisioned by `careflow model pull smollm2-135m` (scripts/test.sh does it first), and a
//! real GGUF LoRA adapter written for it.
#![allow(dead_code)]

use careflow_engine::{AdapterConfig, EmbeddedEngine, EngineConfig};
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

/// A synthetic rank-8 LoRA for the test model, written once per test binary.
pub fn adapter_path() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("careflow-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("test-adapter.gguf");
        let spec = careflow_engine::gguf::lora_spec_for_model(&model_path(), 8, 42)
            .expect("model metadata");
        careflow_engine::gguf::write_lora(&path, &spec).expect("write adapter");
        path
    })
    .clone()
}

/// Tests run one at a time (`--test-threads=1`): each engine may use every core.
pub fn test_threads() -> usize {
    std::env::var("CAREFLOW_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

pub fn config() -> EngineConfig {
    EngineConfig {
        threads: Some(test_threads()),
        kv_cells: 8192,
        max_sequences: 12,
        session_max_tokens: 2048,
        adapters: vec![AdapterConfig {
            name: "test".into(),
            path: adapter_path(),
            scale: 1.0,
        }],
        ..EngineConfig::for_model(model_path())
    }
}

/// One engine per test binary: the model loads once.
pub fn engine() -> EmbeddedEngine {
    static E: OnceLock<EmbeddedEngine> = OnceLock::new();
    E.get_or_init(|| config().build().expect("engine starts"))
        .clone()
}
