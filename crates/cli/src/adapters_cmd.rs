//! `careflow adapters list|show`: the trained adapters' manifests — base model, step, dataset,
//! hyper-parameters, metrics — and whether each fits a model careflow knows.

use crate::distill_cmd::default_adapters_dir;
use crate::output;
use anyhow::{anyhow, bail, Context, Result};
use careflow_engine::{models, AdapterManifest};
use clap::Subcommand;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum AdaptersCommand {
    /// Every adapter manifest in a directory.
    List {
        /// The adapters' directory [default: careflow's cache dir/adapters].
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// One adapter's manifest in full.
    Show {
        /// The adapter's name (its manifest in --dir), or the path of a manifest (.json).
        name: String,
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(c: AdaptersCommand) -> Result<()> {
    match c {
        AdaptersCommand::List { dir, json } => {
            list(&dir.unwrap_or_else(default_adapters_dir), json)
        }
        AdaptersCommand::Show { name, dir, json } => {
            show(&name, &dir.unwrap_or_else(default_adapters_dir), json)
        }
    }
}

/// The known model a base sha256 belongs to, if any.
fn base_name(sha: &str) -> String {
    models::KNOWN_MODELS
        .iter()
        .find(|m| m.sha256.eq_ignore_ascii_case(sha))
        .map(|m| m.name.to_string())
        .unwrap_or_else(|| format!("unknown ({})", short(sha)))
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// A field of a manifest's map, `Null` when absent.
fn at<'a>(map: &'a serde_json::Map<String, Value>, key: &str) -> &'a Value {
    map.get(key).unwrap_or(&Value::Null)
}

fn num(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn to_json(path: &Path, m: &AdapterManifest) -> Value {
    let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
    v["manifest_path"] = json!(path);
    v["adapter_path"] = json!(m.adapter_path(path));
    v["adapter_present"] = json!(m.adapter_path(path).is_file());
    v["base_model"]["known_as"] = json!(base_name(&m.base_model.sha256));
    v
}

fn list(dir: &Path, as_json: bool) -> Result<()> {
    if !dir.is_dir() {
        bail!(
            "no adapters directory at {} (train some with `careflow distill train --out {}`)",
            dir.display(),
            dir.display()
        );
    }
    let found = careflow_engine::manifest::list(dir)
        .with_context(|| format!("reading {}", dir.display()))?;
    let good: Vec<(PathBuf, AdapterManifest)> = found
        .iter()
        .filter_map(|(p, m)| m.as_ref().ok().map(|m| (p.clone(), m.clone())))
        .collect();
    let bad: Vec<(PathBuf, String)> = found
        .iter()
        .filter_map(|(p, m)| m.as_ref().err().map(|e| (p.clone(), e.clone())))
        .collect();
    if as_json {
        let items: Vec<Value> = good.iter().map(|(p, m)| to_json(p, m)).collect();
        let skipped: Vec<Value> = bad
            .iter()
            .map(|(p, e)| json!({"path": p, "error": e}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"dir": dir, "adapters": items, "not_manifests": skipped})
            )?
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = good
        .iter()
        .map(|(p, m)| {
            let h = &m.hyperparameters;
            vec![
                m.name.clone(),
                m.step.clone(),
                m.mode.clone(),
                base_name(&m.base_model.sha256),
                format!("{} ({} ex.)", short(&m.dataset.sha256), m.dataset.examples),
                format!("r{} x{} steps", num(at(h, "rank")), num(at(h, "steps"))),
                format!(
                    "{} -> {}",
                    num(at(&m.metrics, "train_loss_first")),
                    num(at(&m.metrics, "train_loss_last"))
                ),
                num(match at(&m.metrics, "train_tokens_per_s") {
                    Value::Null => at(&m.metrics, "tokens_per_s"),
                    v => v,
                }),
                if m.adapter_path(p).is_file() {
                    m.created_at.clone()
                } else {
                    format!("{} (GGUF missing)", m.created_at)
                },
            ]
        })
        .collect();
    output::table(
        &[
            "name", "step", "mode", "base", "dataset", "training", "loss", "tokens/s", "created",
        ],
        &rows,
    );
    for (p, e) in &bad {
        eprintln!("skipped {}: {e}", p.display());
    }
    if good.is_empty() {
        eprintln!("no adapter manifests in {}", dir.display());
    }
    Ok(())
}

fn find(name: &str, dir: &Path) -> Result<(PathBuf, AdapterManifest)> {
    let direct = PathBuf::from(name);
    if direct.extension().is_some_and(|e| e == "json") && direct.is_file() {
        let m = AdapterManifest::load(&direct).map_err(|e| anyhow!(e))?;
        return Ok((direct, m));
    }
    let found = careflow_engine::manifest::list(dir)
        .with_context(|| format!("reading {}", dir.display()))?;
    let names: Vec<String> = found
        .iter()
        .filter_map(|(_, m)| m.as_ref().ok().map(|m| m.name.clone()))
        .collect();
    found
        .into_iter()
        .find_map(|(p, m)| m.ok().filter(|m| m.name == name).map(|m| (p, m)))
        .ok_or_else(|| {
            anyhow!(
                "no adapter `{name}` in {} (adapters: {})",
                dir.display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )
        })
}

fn show(name: &str, dir: &Path, as_json: bool) -> Result<()> {
    let (path, m) = find(name, dir)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&to_json(&path, &m))?);
        return Ok(());
    }
    let mut rows: Vec<Vec<String>> = vec![
        vec!["name".into(), m.name.clone()],
        vec!["step".into(), m.step.clone()],
        vec!["mode".into(), m.mode.clone()],
        vec!["manifest".into(), path.display().to_string()],
        vec![
            "adapter".into(),
            format!(
                "{}{}",
                m.adapter_path(&path).display(),
                if m.adapter_path(&path).is_file() {
                    ""
                } else {
                    " (missing)"
                }
            ),
        ],
        vec![
            "base model".into(),
            format!(
                "{} ({}, {} bytes, {})",
                base_name(&m.base_model.sha256),
                m.base_model.file,
                m.base_model.size,
                m.base_model.architecture
            ),
        ],
        vec!["base sha256".into(), m.base_model.sha256.clone()],
        vec![
            "dataset".into(),
            format!(
                "{} ({} examples, {} used)",
                m.dataset.file, m.dataset.examples, m.dataset.used
            ),
        ],
        vec!["dataset sha256".into(), m.dataset.sha256.clone()],
        vec![
            "alora invocation".into(),
            m.alora_invocation_tokens
                .as_ref()
                .map(|t| format!("{t:?}"))
                .unwrap_or_else(|| "-".into()),
        ],
        vec!["created".into(), m.created_at.clone()],
    ];
    for (k, v) in &m.hyperparameters {
        rows.push(vec![format!("hyper.{k}"), num(v)]);
    }
    for (k, v) in &m.metrics {
        if k == "probe" {
            continue;
        }
        rows.push(vec![format!("metric.{k}"), num(v)]);
    }
    for (k, v) in &m.versions {
        rows.push(vec![format!("version.{k}"), v.clone()]);
    }
    output::table(&["field", "value"], &rows);
    Ok(())
}
