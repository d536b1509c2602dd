//! GGUF helpers: a header check run before llama.cpp sees a file (so a wrong or truncated file
//! gets a clear error instead of a crash deep inside the loader), and a small writer for LoRA
//! adapter files.
//!
//! The writer exists so tests and demos have real adapters without a training run: it writes
//! deterministic pseudo-random low-rank deltas for the attention query and value projections of
//! a llama-architecture model, in the layout llama.cpp's adapter loader expects
//! (`blk.N.attn_q.weight.lora_a` with ne = [n_in, rank], `…lora_b` with ne = [rank, n_out]).
//! Trained adapters come from `training/` (PEFT) and use the same layout.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

const MAGIC: &[u8; 4] = b"GGUF";
const ALIGNMENT: u64 = 32;

/// Reads the header and says why a file is not a GGUF (`Err(reason)`).
pub fn check_header(path: &Path) -> Result<(), String> {
    let mut f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut head = [0u8; 24];
    if len < 24 {
        return Err(format!("file is {len} bytes, too short for a GGUF header"));
    }
    f.read_exact(&mut head).map_err(|e| e.to_string())?;
    if &head[0..4] != MAGIC {
        return Err("missing the GGUF magic bytes (not a GGUF file)".into());
    }
    let version = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if !(2..=3).contains(&version) {
        return Err(format!("unsupported GGUF version {version}"));
    }
    Ok(())
}

/// What to put in a synthetic LoRA adapter.
#[derive(Debug, Clone)]
pub struct LoraSpec {
    /// `general.architecture` of the base model (must match it, e.g. `llama`).
    pub arch: String,
    pub n_layer: usize,
    pub n_embd: usize,
    /// Output width of the value projection (n_head_kv * head_dim).
    pub n_embd_v: usize,
    pub rank: usize,
    pub alpha: f32,
    /// Half-width of the uniform distribution of the entries of A and B.
    pub amplitude: f32,
    pub seed: u64,
    /// aLoRA invocation tokens, written as `adapter.alora.invocation_tokens`.
    pub invocation_tokens: Option<Vec<u32>>,
}

struct Tensor {
    name: String,
    ne: [u64; 2],
    data: Vec<f32>,
}

/// Writes `spec` as a GGUF LoRA adapter at `path`.
pub fn write_lora(path: &Path, spec: &LoraSpec) -> io::Result<()> {
    let mut rng = XorShift(spec.seed.max(1));
    let mut tensors = Vec::new();
    for layer in 0..spec.n_layer {
        for (proj, n_out) in [("attn_q", spec.n_embd), ("attn_v", spec.n_embd_v)] {
            let base = format!("blk.{layer}.{proj}.weight");
            let a = (0..spec.n_embd * spec.rank)
                .map(|_| rng.uniform(spec.amplitude))
                .collect();
            let b = (0..spec.rank * n_out)
                .map(|_| rng.uniform(spec.amplitude))
                .collect();
            tensors.push(Tensor {
                name: format!("{base}.lora_a"),
                ne: [spec.n_embd as u64, spec.rank as u64],
                data: a,
            });
            tensors.push(Tensor {
                name: format!("{base}.lora_b"),
                ne: [spec.rank as u64, n_out as u64],
                data: b,
            });
        }
    }

    let mut out = Counted {
        w: BufWriter::new(File::create(path)?),
        n: 0,
    };
    let put = |o: &mut Counted, bytes: &[u8]| o.put(bytes);
    let n_kv = 4 + u64::from(spec.invocation_tokens.is_some());
    put(&mut out, MAGIC)?;
    put(&mut out, &3u32.to_le_bytes())?;
    put(&mut out, &(tensors.len() as u64).to_le_bytes())?;
    put(&mut out, &n_kv.to_le_bytes())?;
    for (key, value) in [
        ("general.architecture", spec.arch.as_str()),
        ("general.type", "adapter"),
        ("adapter.type", "lora"),
    ] {
        put(&mut out, &gguf_string(key))?;
        put(&mut out, &8u32.to_le_bytes())?;
        put(&mut out, &gguf_string(value))?;
    }
    put(&mut out, &gguf_string("adapter.lora.alpha"))?;
    put(&mut out, &6u32.to_le_bytes())?;
    put(&mut out, &spec.alpha.to_le_bytes())?;
    if let Some(tokens) = &spec.invocation_tokens {
        put(&mut out, &gguf_string("adapter.alora.invocation_tokens"))?;
        put(&mut out, &9u32.to_le_bytes())?;
        put(&mut out, &4u32.to_le_bytes())?;
        put(&mut out, &(tokens.len() as u64).to_le_bytes())?;
        for t in tokens {
            put(&mut out, &t.to_le_bytes())?;
        }
    }
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for t in &tensors {
        put(&mut out, &gguf_string(&t.name))?;
        put(&mut out, &2u32.to_le_bytes())?;
        put(&mut out, &t.ne[0].to_le_bytes())?;
        put(&mut out, &t.ne[1].to_le_bytes())?;
        put(&mut out, &0u32.to_le_bytes())?; // GGML_TYPE_F32
        put(&mut out, &offset.to_le_bytes())?;
        offsets.push(offset);
        offset = align(offset + 4 * t.data.len() as u64);
    }
    let pad = align(out.n) - out.n;
    put(&mut out, &vec![0u8; pad as usize])?;
    let data_start = out.n;
    for (t, off) in tensors.iter().zip(offsets) {
        let here = out.n - data_start;
        put(&mut out, &vec![0u8; (off - here) as usize])?;
        let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        put(&mut out, &bytes)?;
    }
    let end = align(out.n - data_start) + data_start;
    let tail = (end - out.n) as usize;
    put(&mut out, &vec![0u8; tail])?;
    out.w.flush()
}

struct Counted {
    w: BufWriter<File>,
    n: u64,
}

impl Counted {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.w.write_all(bytes)?;
        self.n += bytes.len() as u64;
        Ok(())
    }
}

fn align(x: u64) -> u64 {
    x.div_ceil(ALIGNMENT) * ALIGNMENT
}

fn gguf_string(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn uniform(&mut self, half_width: f32) -> f32 {
        let unit = (self.next() >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
        (unit * 2.0 - 1.0) * half_width
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_adapter_has_a_valid_header_and_aligned_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.gguf");
        let spec = LoraSpec {
            arch: "llama".into(),
            n_layer: 2,
            n_embd: 8,
            n_embd_v: 4,
            rank: 2,
            alpha: 2.0,
            amplitude: 0.1,
            seed: 7,
            invocation_tokens: Some(vec![1, 2, 3]),
        };
        write_lora(&path, &spec).unwrap();
        check_header(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len() % ALIGNMENT, 0);
    }

    #[test]
    fn header_check_names_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gguf");
        std::fs::write(&path, b"not a model at all, definitely not").unwrap();
        assert!(check_header(&path).unwrap_err().contains("magic"));
        std::fs::write(&path, b"GGUF").unwrap();
        assert!(check_header(&path).unwrap_err().contains("too short"));
    }
}

/// A [`LoraSpec`] whose shapes fit the base model at `model` (read from its GGUF metadata).
pub fn lora_spec_for_model(model: &Path, rank: usize, seed: u64) -> Result<LoraSpec, String> {
    check_header(model)?;
    let ctx = llama_cpp_2::gguf::GgufContext::from_file(model)
        .ok_or_else(|| format!("cannot read GGUF metadata of {}", model.display()))?;
    let str_key = |k: &str| -> Result<String, String> {
        let i = ctx.find_key(k);
        if i < 0 {
            return Err(format!("{} has no `{k}`", model.display()));
        }
        ctx.val_str(i)
            .map(str::to_string)
            .ok_or_else(|| format!("`{k}` is not a string"))
    };
    let arch = str_key("general.architecture")?;
    let num = |k: &str| -> Result<usize, String> {
        let key = format!("{arch}.{k}");
        let i = ctx.find_key(&key);
        if i < 0 {
            return Err(format!("{} has no `{key}`", model.display()));
        }
        Ok(ctx.val_u32(i) as usize)
    };
    let n_embd = num("embedding_length")?;
    let n_head = num("attention.head_count")?.max(1);
    let n_head_kv = num("attention.head_count_kv").unwrap_or(n_head);
    Ok(LoraSpec {
        n_layer: num("block_count")?,
        n_embd,
        n_embd_v: n_head_kv * (n_embd / n_head),
        arch,
        rank,
        alpha: rank as f32,
        amplitude: 0.08,
        seed,
        invocation_tokens: None,
    })
}
