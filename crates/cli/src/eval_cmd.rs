//! `careflow eval sql`: execution accuracy and fallback rate of a local model's SQL.

use crate::commands::{bundled_omop_zip, EngineArgs};
use crate::output;
use anyhow::{Context, Result};
use careflow_records::Records;
use clap::{Args, Subcommand};

use std::path::PathBuf;
use std::sync::Arc;

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Can the model write the SQL a triage needs? Questions about one patient each, run
    /// through the same guard and patient scope as the Retrieve step.
    Sql(SqlEval),
}

#[derive(Args)]
pub struct SqlEval {
    #[command(flatten)]
    engine: EngineArgs,
    /// The SQL dev set (JSONL: id, patient_id, question, sql, expected_rows).
    #[arg(long, default_value_os_t = default_sql_suite())]
    suite: PathBuf,
    /// A database holding the suite's patients; default: a temporary SQLite file loaded with
    /// the bundled OMOP sample.
    #[arg(long)]
    database: Option<String>,
    #[arg(long)]
    json: bool,
}

fn default_sql_suite() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/eval/sql_dev.jsonl"
    ))
}

pub async fn run(c: EvalCommand) -> Result<()> {
    match c {
        EvalCommand::Sql(a) => sql(a).await,
    }
}

async fn sql(a: SqlEval) -> Result<()> {
    let items = careflow_eval::sql::load_suite(&a.suite)?;
    let tmp = tempfile::tempdir()?;
    let records = match &a.database {
        Some(url) => Records::connect(url).await?,
        None => {
            let url = format!("sqlite://{}", tmp.path().join("eval.db").display());
            let r = Records::connect(&url).await?;
            r.init().await?;
            r.load_omop_zip(
                &bundled_omop_zip(),
                Some(careflow_records::SYNTHEA_ZIP_SHA256),
                &|_, _| {},
            )
            .await
            .context("loading the bundled OMOP sample")?;
            r
        }
    };
    let engine = Arc::new(a.engine.start()?);
    let pb = output::progress(
        items.len() as u64,
        "{msg:12} [{bar:30}] {pos}/{len} eta {eta}",
        "eval sql",
    );
    let report =
        careflow_eval::sql::run(engine, &records, &items, &|d, _| pb.set_position(d as u64))
            .await?;
    pb.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let rows: Vec<Vec<String>> = report
            .results
            .iter()
            .map(|r| {
                vec![
                    r.id.clone(),
                    format!("{:?}", r.outcome).to_lowercase(),
                    r.rows.to_string(),
                    r.reason
                        .clone()
                        .unwrap_or_default()
                        .chars()
                        .take(70)
                        .collect(),
                ]
            })
            .collect();
        output::table(&["item", "outcome", "rows", "reason"], &rows);
        println!(
            "\nmodel {}: execution accuracy {:.1}% ({}/{}), fallback rate {:.1}%, wrong rows {}",
            report.model,
            100.0 * report.execution_accuracy,
            report.correct,
            report.items,
            100.0 * report.fallback_rate,
            report.wrong
        );
    }
    Ok(())
}
