//! `careflow eval`: triage strategies over a JSONL suite (`eval --suite`), two reports compared
//! (`eval diff`), and the execution accuracy of a local model's SQL (`eval sql`).

#[path = "eval_strategies.rs"]
mod eval_strategies;

use crate::commands::{bundled_omop_zip, DbArgs, EngineArgs, KnowledgeArgs};
use crate::config::{Overrides, RuntimeConfig};
use crate::output;
use anyhow::{anyhow, bail, Context, Result};
use careflow_eval::{diff, html, report, Report, RunProgress, Strategy, Tolerances};
use careflow_records::Records;
use clap::{Args, Subcommand};
use eval_strategies::{StrategyKind, WorkflowStrategy};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `careflow eval --help`.
pub const LONG_ABOUT: &str = "Evaluate triage strategies on a suite of portal messages with \
gold labels, compare two evaluation reports, or measure model-written SQL (`eval sql`).

A suite is JSONL, one object a line: {\"id\", \"message\", \"patient_id\"?, \"gold\"}, where gold is \
a label of careflow's scale (emergency_now, urgent_same_day, within_24_72h, routine, self_care, \
admin) or of the published scales (emergent, non_emergent, within_1_day, within_1_week, \
self_care); each item is scored on the coarser of its gold's scale and careflow's. A malformed \
line is reported as a warning (line number, field), kept in the report, and skipped; the run \
goes on. Items with a patient_id read that patient's record: from --database, else from a \
temporary SQLite database loaded with the bundled OMOP sample.

Strategies (--strategy, repeatable or comma-separated; default small):
  small      the small model, stateful with the prefix cache; escalations go to human review
  stateless  the same workflow, stateless: the API-agent baseline for tokens and cost
  cascade    the small model, escalating to the frontier tier (--frontier MODEL, else the
             config file's [frontier], else the local qwen2.5-coder-0.5b)
  frontier   the whole workflow on the frontier model, stateless (as an API-based agent runs
             it), at the frontier tier's prices

Requests run one at a time (an engine never decodes two evaluation requests at once). The \
summary shows accuracy with a 95% bootstrap interval, under-triage, emergencies missed, \
over-triage, admin routing, escalation, tokens, cost and latency per strategy. Evaluation \
runs are never written to the cost ledger.

`eval diff` compares two reports strategy by strategy and exits 1 when a regression is flagged: \
accuracy dropping more than --max-accuracy-drop, any rise in under-triage or in emergencies \
missed, escalation rising more than --max-escalation-rise, cost per request or p95 latency \
rising more than --max-cost-rise / --max-latency-rise (relative). Strategies are matched by \
name; one present in a single report is listed, and two reports with no strategy in common are \
an error.

Examples:
  careflow eval --suite data/eval/dev.jsonl
  careflow eval --suite data/eval/dev.jsonl --strategy small --strategy stateless --out eval/base
  careflow eval --suite data/eval/dev.jsonl --strategy small,cascade --repeats 3 --limit 40 --json
  careflow eval --suite data/eval/ci_smoke.jsonl --strategy cascade --frontier qwen2.5-coder-0.5b
  careflow eval diff eval/base/report.json eval/new/report.json      # exit 1 on a regression
  careflow eval sql --json";

#[derive(Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    arg_required_else_help = true
)]
pub struct EvalArgs {
    #[command(subcommand)]
    command: Option<EvalCommand>,
    #[command(flatten)]
    suite: SuiteEval,
}

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Compare two evaluation reports (report.json); exit 1 when a regression is flagged.
    Diff(DiffArgs),
    /// Can the model write the SQL a triage needs? Questions about one patient each, run
    /// through the same guard and patient scope as the Retrieve step.
    Sql(SqlEval),
}

/// `careflow eval --suite FILE.jsonl …`.
#[derive(Args)]
#[command(mut_arg("database", |a| a
    .help("The records database for items with a patient_id (`sqlite://PATH` or `postgres://…`) \
[default: a temporary SQLite database loaded with the bundled OMOP sample]")
    .long_help(None)))]
pub struct SuiteEval {
    /// The suite (JSONL: id, message, patient_id?, gold).
    #[arg(long, value_name = "FILE.jsonl", required = true)]
    suite: Option<PathBuf>,
    /// A strategy to run (repeat the flag or separate with commas) [default: small].
    #[arg(
        long = "strategy",
        value_enum,
        value_delimiter = ',',
        value_name = "STRATEGY"
    )]
    strategies: Vec<StrategyKind>,
    /// Runs of the whole suite per strategy (the bootstrap resamples items with all their
    /// repeats).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    repeats: u32,
    /// Write DIR/report.json and DIR/report.html (self-contained, inline SVG plots).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Only the first N valid items of the suite.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// The date patient records are read as of (YYYY-MM-DD). Default: the config's, else, with
    /// the bundled OMOP sample (whose records end in October 2022), 2022-10-15, else today.
    #[arg(long)]
    today: Option<String>,
    /// Print the JSON report (schema_version 1) instead of the summary table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    knowledge: KnowledgeArgs,
    /// The configuration file (TOML; see `careflow.example.toml`): tiers, prices, run settings.
    #[arg(long, env = "CAREFLOW_CONFIG")]
    config: Option<PathBuf>,
    /// A workflow file (TOML) instead of the built-in triage workflow.
    #[arg(long, env = "CAREFLOW_WORKFLOW")]
    workflow: Option<PathBuf>,
    /// The frontier model for `cascade` and `frontier` (a known model name or a GGUF path)
    /// [default: the config file's [frontier], else qwen2.5-coder-0.5b].
    #[arg(long, env = "CAREFLOW_FRONTIER_MODEL")]
    frontier: Option<String>,
    /// A prices file instead of the built-in dated one.
    #[arg(long, env = "CAREFLOW_PRICES")]
    prices: Option<PathBuf>,
}

/// `careflow eval diff BASE.json NEW.json`.
#[derive(Args)]
pub struct DiffArgs {
    /// The baseline report (report.json of an earlier run).
    #[arg(value_name = "BASE.json")]
    baseline: PathBuf,
    /// The candidate report, compared against the baseline.
    #[arg(value_name = "NEW.json")]
    candidate: PathBuf,
    /// Largest allowed drop in accuracy, absolute (0.02 = 2 points).
    #[arg(long, value_name = "X", default_value_t = Tolerances::default().accuracy)]
    max_accuracy_drop: f64,
    /// Largest allowed rise in the escalation rate, absolute.
    #[arg(long, value_name = "X", default_value_t = Tolerances::default().escalation_rate)]
    max_escalation_rise: f64,
    /// Largest allowed rise in cost per request, relative (0.10 = 10 %).
    #[arg(long, value_name = "X", default_value_t = Tolerances::default().cost_relative)]
    max_cost_rise: f64,
    /// Largest allowed rise in p95 latency, relative.
    #[arg(long, value_name = "X", default_value_t = Tolerances::default().latency_relative)]
    max_latency_rise: f64,
    /// Print the comparison as JSON (with a `regressions` array).
    #[arg(long)]
    json: bool,
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

pub async fn run(a: EvalArgs) -> Result<()> {
    match a.command {
        Some(EvalCommand::Sql(s)) => sql(s).await,
        Some(EvalCommand::Diff(d)) => diff_reports(d),
        None => suite(a.suite).await,
    }
}

/// The date `--today` defaults to with the bundled OMOP sample.
const BUNDLED_SAMPLE_TODAY: &str = "2022-10-15";

/// A temporary SQLite database in `dir`, loaded with the bundled OMOP sample.
async fn bundled_records(dir: &Path) -> Result<Records> {
    let url = format!("sqlite://{}", dir.join("eval.db").display());
    let r = Records::connect(&url).await?;
    r.init().await?;
    r.load_omop_zip(
        &bundled_omop_zip(),
        Some(careflow_records::SYNTHEA_ZIP_SHA256),
        &|_, _| {},
    )
    .await
    .context("loading the bundled OMOP sample")?;
    Ok(r)
}

/// An embedded frontier tier on `model` (the shape of the config file's `[frontier]`).
fn embedded_frontier(model: &str) -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("kind".into(), toml::Value::String("embedded".into()));
    t.insert("model".into(), toml::Value::String(model.into()));
    t
}

async fn suite(a: SuiteEval) -> Result<()> {
    let path = a
        .suite
        .clone()
        .ok_or_else(|| anyhow!("--suite FILE.jsonl is required"))?;
    let loaded = careflow_eval::load_suite(&path)?;
    for p in &loaded.problems {
        eprintln!("warning: {}: {p} (line skipped)", path.display());
    }
    let mut items = loaded.items;
    if let Some(n) = a.limit {
        items.truncate(n);
    }
    if items.is_empty() {
        bail!(
            "{}: no valid items to evaluate ({} line(s) skipped)",
            path.display(),
            loaded.problems.len()
        );
    }
    let mut kinds: Vec<StrategyKind> = Vec::new();
    for k in &a.strategies {
        if !kinds.contains(k) {
            kinds.push(*k);
        }
    }
    if kinds.is_empty() {
        kinds.push(StrategyKind::Small);
    }

    // Configuration: the same layers as `triage`, never a ledger.
    let mut rc = RuntimeConfig::resolve(&Overrides {
        config: a.config.clone(),
        model: a.engine.model.clone(),
        threads: a.engine.threads,
        database: a.db.database.clone(),
        workflow: a.workflow.clone(),
        frontier_model: a.frontier.clone(),
        prices: a.prices.clone(),
        no_ledger: true,
    })?;
    let knowledge = a.knowledge.load()?;

    // Records, only when an item names a patient.
    let tmp = tempfile::tempdir()?;
    let mut bundled = false;
    let records = if items.iter().any(|i| i.patient_id.is_some()) {
        Some(match &a.db.database {
            Some(_) => a.db.connect().await?,
            None => {
                eprintln!("loading the bundled OMOP sample into a temporary database");
                bundled = true;
                bundled_records(tmp.path()).await?
            }
        })
    } else {
        None
    };
    let today = a
        .today
        .clone()
        .or_else(|| rc.file.run.today.clone())
        .or_else(|| bundled.then(|| BUNDLED_SAMPLE_TODAY.to_string()));

    // Engines: one per model, shared by the strategies that use it.
    let small_engine: Option<Arc<dyn careflow_engine::Engine>> =
        if kinds.iter().any(|k| k.uses_small()) {
            Some(rc.small_engine()?)
        } else {
            None
        };
    let frontier = if kinds.iter().any(|k| k.uses_frontier()) {
        if rc.file.frontier.is_none() {
            rc.file.frontier = Some(embedded_frontier(DEFAULT_FRONTIER));
        }
        let prices = rc.prices()?;
        Some(
            rc.frontier(&prices)?
                .ok_or_else(|| anyhow!("no frontier tier is configured"))?,
        )
    } else {
        None
    };
    // Workflows are built without a frontier; `cascade` gets the shared one.
    rc.file.frontier = None;

    let mut strategies: Vec<WorkflowStrategy> = Vec::with_capacity(kinds.len());
    for &kind in &kinds {
        let mut run = rc.file.run.clone();
        run.mode = kind.mode();
        run.today = today.clone();
        let workflow = match (kind, &small_engine, &frontier) {
            (StrategyKind::Small | StrategyKind::Stateless, Some(engine), _) => {
                rc.build(engine.clone(), records.clone(), knowledge.clone(), run)
                    .await?
                    .0
            }
            (StrategyKind::Cascade, Some(engine), Some(tier)) => rc
                .build(engine.clone(), records.clone(), knowledge.clone(), run)
                .await?
                .0
                .with_frontier(tier.clone()),
            (StrategyKind::Frontier, _, Some(tier)) => {
                // The small model's adapters do not exist on the frontier model.
                run.adapters.clear();
                rc.build(tier.engine.clone(), records.clone(), knowledge.clone(), run)
                    .await?
                    .0
                    .with_small_tier(tier.clone())
            }
            _ => bail!("strategy {}: its engine was not started", kind.name()),
        };
        let strategy = WorkflowStrategy::new(kind, workflow);
        if kind.mode() == careflow_workflow::Mode::StatefulPrefixCache {
            // As at process start-up: the shared prefix is computed once, then only forked.
            strategy
                .workflow()
                .warm()
                .await
                .with_context(|| format!("strategy {}: warming the prefix cache", kind.name()))?;
        }
        strategies.push(strategy);
    }
    let refs: Vec<&dyn Strategy> = strategies.iter().map(|s| s as &dyn Strategy).collect();

    let repeats = a.repeats as usize;
    let per_strategy = items.len() * repeats;
    let names: Vec<&'static str> = kinds.iter().map(|k| k.name()).collect();
    let pb = output::progress(
        (per_strategy * names.len()) as u64,
        "{msg:12} [{bar:30}] {pos}/{len} eta {eta}",
        names.first().copied().unwrap_or("eval"),
    );
    let progress = |p: &RunProgress| {
        pb.set_position(p.done as u64);
        // The strategy the next request belongs to.
        let next = (p.done / per_strategy.max(1)).min(names.len().saturating_sub(1));
        if let Some(n) = names.get(next) {
            pb.set_message(*n);
        }
    };
    let reports = careflow_eval::run_suite(&items, &refs, repeats, &progress).await;
    pb.finish_and_clear();

    let report = Report::new(path.display().to_string(), reports, loaded.problems);
    let mut written = Vec::new();
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the output directory {}", dir.display()))?;
        let json_path = dir.join("report.json");
        let html_path = dir.join("report.html");
        report.write_json(&json_path)?;
        html::write_html(&report, &items, &html_path)?;
        written.push(json_path);
        written.push(html_path);
    }
    if a.json {
        println!("{}", report.to_json()?);
        for p in &written {
            eprintln!("wrote {}", p.display());
        }
    } else {
        print!("{}", report::summary_table(&report));
        if !written.is_empty() {
            println!();
            for p in &written {
                println!("wrote {}", p.display());
            }
        }
    }
    Ok(())
}

/// The frontier model when neither `--frontier` nor the config file names one.
const DEFAULT_FRONTIER: &str = "qwen2.5-coder-0.5b";

/// A metric's value as people read it.
fn metric_value(metric: &str, v: Option<f64>) -> String {
    let Some(v) = v else {
        return "–".into();
    };
    match metric {
        "emergencies_missed" => format!("{v:.0}"),
        "cost_per_request_usd" => format!("${v:.6}"),
        "latency_p95_ms" => format!("{v:.0} ms"),
        _ => format!("{:.1}%", v * 100.0),
    }
}

fn metric_delta(metric: &str, d: Option<f64>) -> String {
    let Some(d) = d else {
        return "–".into();
    };
    let sign = if d > 0.0 { "+" } else { "" };
    match metric {
        "emergencies_missed" => format!("{sign}{d:.0}"),
        "cost_per_request_usd" => format!("{sign}${d:.6}"),
        "latency_p95_ms" => format!("{sign}{d:.0} ms"),
        _ => format!("{sign}{:.1} pts", d * 100.0),
    }
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn diff_reports(a: DiffArgs) -> Result<()> {
    let tolerances = Tolerances {
        accuracy: a.max_accuracy_drop,
        escalation_rate: a.max_escalation_rise,
        cost_relative: a.max_cost_rise,
        latency_relative: a.max_latency_rise,
    };
    for (flag, v) in [
        ("--max-accuracy-drop", tolerances.accuracy),
        ("--max-escalation-rise", tolerances.escalation_rate),
        ("--max-cost-rise", tolerances.cost_relative),
        ("--max-latency-rise", tolerances.latency_relative),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            bail!("{flag}: {v} is not a non-negative number");
        }
    }
    let d = diff::diff_files(&a.baseline, &a.candidate, &tolerances)?;
    if d.strategies.is_empty() {
        bail!(
            "nothing to compare: no strategy is in both reports (baseline: {}; candidate: {})",
            list_or_none(&d.only_in_baseline),
            list_or_none(&d.only_in_candidate)
        );
    }
    let regressions = d.regressions();
    if a.json {
        let mut v = serde_json::to_value(&d)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("regressions".into(), serde_json::to_value(&regressions)?);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let rows: Vec<Vec<String>> = d
            .strategies
            .iter()
            .flat_map(|s| {
                s.checks.iter().map(|c| {
                    vec![
                        s.name.clone(),
                        c.metric.clone(),
                        metric_value(&c.metric, c.baseline),
                        metric_value(&c.metric, c.candidate),
                        metric_delta(&c.metric, c.delta),
                        if c.regression { "REGRESSION" } else { "ok" }.to_string(),
                    ]
                })
            })
            .collect();
        output::table(
            &[
                "strategy",
                "metric",
                "baseline",
                "candidate",
                "delta",
                "status",
            ],
            &rows,
        );
        for s in &d.only_in_baseline {
            println!("strategy `{s}` is only in the baseline");
        }
        for s in &d.only_in_candidate {
            println!("strategy `{s}` is only in the candidate");
        }
        if regressions.is_empty() {
            println!("\nno regressions");
        } else {
            println!("\n{} regression(s):", regressions.len());
            for r in &regressions {
                println!(
                    "  {} {}: {} -> {} (allowed worsening {})",
                    r.strategy,
                    r.metric,
                    metric_value(&r.metric, r.baseline),
                    metric_value(&r.metric, r.candidate),
                    metric_delta(&r.metric, Some(r.allowed)),
                );
            }
        }
    }
    if !regressions.is_empty() {
        bail!(
            "{} regression(s) flagged: {}",
            regressions.len(),
            regressions
                .iter()
                .map(|r| format!("{} {}", r.strategy, r.metric))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

async fn sql(a: SqlEval) -> Result<()> {
    let items = careflow_eval::sql::load_suite(&a.suite)?;
    let tmp = tempfile::tempdir()?;
    let records = match &a.database {
        Some(url) => Records::connect(url).await?,
        None => bundled_records(tmp.path()).await?,
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
