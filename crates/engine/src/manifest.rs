//! Adapter manifests: what a trained adapter is, and for which base model.
//!
//! `training/` (careflow_training) writes `<name>.json` beside each `<name>.gguf` it exports:
//! the sha256 of the base model file it was trained on, the workflow step, the dataset's sha256,
//! the hyper-parameters, the training metrics and the aLoRA invocation tokens. The engine loads an
//! adapter **by manifest** when an [`AdapterConfig`]'s `path` is the `.json` file (or a `.gguf`
//! with a manifest beside it), and refuses it when the manifest's base sha256 is not the sha256 of
//! the model file being served ([`EngineError::AdapterBaseMismatch`]). llama.cpp's own check
//! (same architecture, tensor shapes) still runs when the GGUF loads; the manifest catches the
//! adapter that fits the shapes of a different model of the same family, which llama.cpp would
//! load and silently misapply.
//!
//! The model's sha256 is computed once per file and cached by path, size and modification time
//! (SmolLM2-135M, 98 MB: ~0.3 s).

use crate::{AdapterConfig, EngineError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

/// The manifest format this engine reads (`format` starts with `careflow-adapter/`).
pub const FORMAT: &str = "careflow-adapter/1";

/// The base model an adapter was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseModelRef {
    /// sha256 of the GGUF file the engine serves (lower-case hex).
    pub sha256: String,
    #[serde(default)]
    pub file: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub architecture: String,
}

/// The dataset an adapter was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRef {
    #[serde(default)]
    pub file: String,
    pub sha256: String,
    /// Lines in the dataset.
    #[serde(default)]
    pub examples: u64,
    /// Examples trained on (those that fit the length limit).
    #[serde(default)]
    pub used: u64,
}

/// `<adapter>.json`, as careflow_training writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterManifest {
    pub format: String,
    /// The adapter's name (the engine and the workflow's `adapters` map use it).
    pub name: String,
    /// The workflow step it was trained for.
    pub step: String,
    /// `alora` (applied to the step's own tokens only) or `lora` (every token).
    pub mode: String,
    /// The GGUF adapter file, relative to the manifest's directory.
    pub adapter_file: String,
    #[serde(default)]
    pub adapter_sha256: Option<String>,
    pub base_model: BaseModelRef,
    pub dataset: DatasetRef,
    #[serde(default)]
    pub hyperparameters: Map<String, Value>,
    #[serde(default)]
    pub metrics: Map<String, Value>,
    #[serde(default)]
    pub alora_invocation_tokens: Option<Vec<u32>>,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub versions: BTreeMap<String, String>,
}

impl AdapterManifest {
    /// Reads and checks a manifest; errors name the file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the manifest {}: {e}", path.display()))?;
        let m: AdapterManifest = serde_json::from_str(&text)
            .map_err(|e| format!("manifest {} is not valid: {e}", path.display()))?;
        if !m.format.starts_with("careflow-adapter/") {
            return Err(format!(
                "manifest {}: format `{}` is not a careflow adapter manifest ({FORMAT})",
                path.display(),
                m.format
            ));
        }
        if !is_sha256(&m.base_model.sha256) {
            return Err(format!(
                "manifest {}: base_model.sha256 `{}` is not a sha256 (64 hex digits)",
                path.display(),
                m.base_model.sha256
            ));
        }
        if m.adapter_file.is_empty() || m.adapter_file.contains(['/', '\\']) {
            return Err(format!(
                "manifest {}: adapter_file `{}` must be a file name beside the manifest",
                path.display(),
                m.adapter_file
            ));
        }
        Ok(m)
    }

    /// The GGUF adapter file this manifest describes (beside `manifest_path`).
    pub fn adapter_path(&self, manifest_path: &Path) -> PathBuf {
        manifest_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(&self.adapter_file)
    }

    /// `Err(AdapterBaseMismatch)` unless this adapter was trained on the file `model`.
    pub fn check_base(&self, name: &str, manifest: &Path, model: &Path) -> Result<(), EngineError> {
        let served = file_sha256(model).map_err(|e| EngineError::ModelCorrupt {
            path: model.to_path_buf(),
            reason: format!("cannot read it to check adapter `{name}`: {e}"),
        })?;
        if served.eq_ignore_ascii_case(&self.base_model.sha256) {
            return Ok(());
        }
        Err(EngineError::AdapterBaseMismatch {
            name: name.to_string(),
            manifest: manifest.to_path_buf(),
            trained_on: format!(
                "{} ({})",
                self.base_model.sha256,
                if self.base_model.file.is_empty() {
                    "file not named"
                } else {
                    &self.base_model.file
                }
            ),
            model: model.to_path_buf(),
            served,
        })
    }
}

impl AdapterConfig {
    /// An adapter loaded by its manifest, under the manifest's name.
    pub fn from_manifest(path: impl Into<PathBuf>) -> Result<Self, EngineError> {
        let path = path.into();
        let m = AdapterManifest::load(&path).map_err(|reason| EngineError::AdapterLoad {
            name: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path: path.clone(),
            reason,
        })?;
        Ok(AdapterConfig {
            name: m.name,
            path,
            scale: 1.0,
        })
    }
}

/// `x.gguf` → `x.json`.
pub fn manifest_beside(adapter: &Path) -> PathBuf {
    adapter.with_extension("json")
}

fn is_manifest_path(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// The adapters as llama.cpp will load them: a manifest path becomes its GGUF file once the
/// manifest's base model is checked against `model`; a GGUF with a manifest beside it is checked
/// the same way; a GGUF without one loads as it is (llama.cpp's shape checks only).
pub fn resolve_adapters(
    model: &Path,
    adapters: &[AdapterConfig],
) -> Result<Vec<AdapterConfig>, EngineError> {
    let mut out = Vec::with_capacity(adapters.len());
    for a in adapters {
        let manifest_path = if is_manifest_path(&a.path) {
            Some(a.path.clone())
        } else {
            Some(manifest_beside(&a.path)).filter(|p| p.is_file())
        };
        let Some(manifest_path) = manifest_path else {
            out.push(a.clone());
            continue;
        };
        let m =
            AdapterManifest::load(&manifest_path).map_err(|reason| EngineError::AdapterLoad {
                name: a.name.clone(),
                path: manifest_path.clone(),
                reason,
            })?;
        if model.is_file() {
            m.check_base(&a.name, &manifest_path, model)?;
        }
        let gguf = m.adapter_path(&manifest_path);
        if is_manifest_path(&a.path) && !gguf.is_file() {
            return Err(EngineError::AdapterLoad {
                name: a.name.clone(),
                path: gguf,
                reason: format!(
                    "file not found (named by the manifest {})",
                    manifest_path.display()
                ),
            });
        }
        out.push(AdapterConfig {
            name: a.name.clone(),
            path: if is_manifest_path(&a.path) {
                gguf
            } else {
                a.path.clone()
            },
            scale: a.scale,
        });
    }
    Ok(out)
}

/// Every manifest in `dir` (`*.json`), sorted by file name; a file that is not a valid manifest
/// comes back as `Err(reason)`.
pub fn list(dir: &Path) -> std::io::Result<Vec<(PathBuf, Result<AdapterManifest, String>)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_manifest_path(p))
        .collect();
    paths.sort();
    Ok(paths
        .into_iter()
        .map(|p| {
            let m = AdapterManifest::load(&p);
            (p, m)
        })
        .collect())
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

type ShaKey = (PathBuf, u64, Option<SystemTime>);

/// sha256 of a file (lower-case hex), cached by path, size and modification time.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    static CACHE: OnceLock<Mutex<HashMap<ShaKey, String>>> = OnceLock::new();
    let meta = std::fs::metadata(path)?;
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let key = (canonical, meta.len(), meta.modified().ok());
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(hit);
    }
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let hex = h.hex();
    if let Ok(mut c) = cache.lock() {
        c.insert(key, hex.clone());
    }
    Ok(hex)
}

/// SHA-256 (FIPS 180-4), for the model-file check; the engine has no other use for a hash
/// crate.
pub struct Sha256 {
    state: [u32; 8],
    block: [u8; 64],
    filled: usize,
    length: u64,
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    pub fn new() -> Self {
        Sha256 {
            state: [
                0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
                0x5be0cd19,
            ],
            block: [0; 64],
            filled: 0,
            length: 0,
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.length = self.length.wrapping_add(data.len() as u64);
        if self.filled > 0 {
            let take = (64 - self.filled).min(data.len());
            self.block[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled < 64 {
                return;
            }
            let block = self.block;
            self.compress(&block);
            self.filled = 0;
        }
        let mut chunks = data.chunks_exact(64);
        for c in &mut chunks {
            let mut block = [0u8; 64];
            block.copy_from_slice(c);
            self.compress(&block);
        }
        let rest = chunks.remainder();
        self.block[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }

    pub fn hex(mut self) -> String {
        let bits = self.length.wrapping_mul(8);
        let mut pad = vec![0x80u8];
        let used = (self.length % 64) as usize + 1;
        let zeros = if used <= 56 { 56 - used } else { 120 - used };
        pad.extend(std::iter::repeat_n(0u8, zeros));
        pad.extend_from_slice(&bits.to_be_bytes());
        let length = self.length;
        self.update(&pad);
        self.length = length;
        self.state.iter().map(|w| format!("{w:08x}")).collect()
    }

    fn compress(&mut self, block: &[u8; 64]) {
        let mut w = [0u32; 64];
        for (i, c) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = self.state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (s, v) in self.state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(data);
        h.hex()
    }

    #[test]
    fn sha256_matches_the_standard_vectors() {
        assert_eq!(
            sha(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        // Fed in odd pieces, across block boundaries.
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut h = Sha256::new();
        for piece in data.chunks(37) {
            h.update(piece);
        }
        assert_eq!(h.hex(), sha(&data));
        let million_a = vec![b'a'; 1_000_000];
        assert_eq!(
            sha(&million_a),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn manifest_errors_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plan.json");
        std::fs::write(&p, "{not json").unwrap();
        assert!(AdapterManifest::load(&p).unwrap_err().contains("plan.json"));
        let m = serde_json::json!({
            "format": FORMAT, "name": "plan", "step": "plan", "mode": "alora",
            "adapter_file": "plan.gguf",
            "base_model": {"sha256": "abc"},
            "dataset": {"sha256": "x"},
        });
        std::fs::write(&p, m.to_string()).unwrap();
        let e = AdapterManifest::load(&p).unwrap_err();
        assert!(e.contains("base_model.sha256"), "{e}");
    }
}
