//! `careflow review`: the clinicians' decisions outside the console — the queue as a table,
//! and `export`, the reviewed cases as JSONL in the evaluation-suite format (the reviewed
//! disposition is the gold label), for `careflow eval --suite` and
//! `careflow distill generate --suite` (the retraining loop).

use crate::commands::{redact, DbArgs};
use crate::output;
use anyhow::{Context, Result};
use careflow_gateway::{ReviewedCase, Store};
use clap::Subcommand;
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;

pub const EXPORT_ABOUT: &str =
    "Write every reviewed case as one JSON line in the evaluation-suite \
format: `id` (the request id), `message`, `patient_id`, `gold` (the clinician's disposition: \
the workflow's when confirmed, theirs when overridden), `scale` (careflow), `rules` (the red-flag \
rules that fired), `rationale` (the override's reason) and `tags` (reviewed, the action, who \
decided, the workflow's disposition). Only cases the workflow sent to review keep their \
message; a reviewed case without one (settled by the workflow, or accepted before messages \
were kept) is skipped and counted. The file holds patients' messages: it is written readable \
by its owner only.\n\n\
  careflow review export --out reviewed.jsonl\n\
  careflow eval --suite reviewed.jsonl --strategy small";

#[derive(Subcommand)]
pub enum ReviewCommand {
    /// The cases waiting for a clinician, most urgent first (the console's queue).
    Queue {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        json: bool,
    },
    /// The reviewed cases as JSONL for evaluation and distillation.
    #[command(long_about = EXPORT_ABOUT)]
    Export {
        #[command(flatten)]
        db: DbArgs,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

async fn store(db: &DbArgs) -> Result<Store> {
    let url = db.url();
    Store::connect(&url)
        .await
        .with_context(|| format!("opening the gateway tables at {}", redact(&url)))
}

/// One exported line, or `None` when the message was not kept.
pub fn export_line(c: &ReviewedCase) -> Option<Value> {
    let message = c.message.as_deref()?;
    let outcome: Value = c
        .outcome
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or(Value::Null);
    let rules: Vec<&str> = outcome
        .get("rules_fired")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("id").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let decided_by = outcome
        .pointer("/route/decided_by")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let r = &c.review;
    let rationale = match (&r.reason, r.action.as_str()) {
        (Some(reason), _) => reason.clone(),
        (None, "confirm") => "confirmed by a clinician".to_string(),
        (None, _) => format!("{} by a clinician", r.action),
    };
    Some(json!({
        "id": r.request_id,
        "message": message,
        "patient_id": c.patient_id,
        "gold": r.disposition,
        "scale": "careflow",
        "rules": rules,
        "rationale": rationale,
        "tags": [
            "reviewed",
            r.action,
            format!("decided_by:{decided_by}"),
            format!("workflow:{}", r.previous),
        ],
    }))
}

pub async fn run(c: ReviewCommand) -> Result<()> {
    match c {
        ReviewCommand::Queue { db, json } => {
            let items = store(&db).await?.review_queue(usize::MAX).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else if items.is_empty() {
                eprintln!("no case is waiting for review");
            } else {
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|i| {
                        vec![
                            i.request_id.clone(),
                            i.urgency.clone(),
                            i.disposition.clone(),
                            i.floor.clone().unwrap_or_else(|| "-".into()),
                            i.decided_by.clone(),
                            i.patient_id.map_or("-".into(), |p| p.to_string()),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "request",
                        "urgency",
                        "proposed",
                        "floor",
                        "decided by",
                        "patient",
                    ],
                    &rows,
                );
            }
        }
        ReviewCommand::Export { db, out } => {
            let cases = store(&db).await?.reviewed_cases().await?;
            let mut text = String::new();
            let mut skipped = 0usize;
            for c in &cases {
                match export_line(c) {
                    Some(line) => {
                        text.push_str(&serde_json::to_string(&line)?);
                        text.push('\n');
                    }
                    None => skipped += 1,
                }
            }
            let written = cases.len() - skipped;
            match &out {
                Some(path) => {
                    // Whole file or nothing: written beside it, then renamed over it.
                    let tmp = path.with_extension("jsonl.partial");
                    write_private(&tmp, text.as_bytes())
                        .with_context(|| format!("writing {}", tmp.display()))?;
                    std::fs::rename(&tmp, path)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {written} reviewed cases to {}", path.display());
                }
                None => {
                    std::io::stdout()
                        .write_all(text.as_bytes())
                        .context("writing to standard output")?;
                }
            }
            if skipped > 0 {
                eprintln!(
                    "skipped {skipped} reviewed cases without a kept message (settled by the \
                     workflow, or accepted before messages were kept)"
                );
            }
        }
    }
    Ok(())
}

/// Writes a file readable and writable by its owner only (it holds patients' messages).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
