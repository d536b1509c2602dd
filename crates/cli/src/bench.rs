//! `careflow bench workflow`: the same workflow over the same messages, stateless vs stateful
//! vs stateful with the shared prefix cache, at several concurrencies, with and without
//! per-step adapters. Every ratio is against the stateless run at the same concurrency,
//! measured in this same process.

use crate::commands::{EngineArgs, KnowledgeArgs};
use crate::output;
use anyhow::{Context, Result};
use careflow_core::PatientMessage;
use careflow_engine::{AdapterConfig, Engine};
use careflow_workflow::{Mode, TriageRequest, TriageWorkflow, WorkflowConfig};
use clap::{Args, Subcommand};
use std::collections::BTreeMap;

use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Stateless vs stateful vs stateful + prefix cache, with and without step adapters.
    Workflow(WorkflowBench),
}

#[derive(Args)]
pub struct WorkflowBench {
    #[command(flatten)]
    engine: EngineArgs,
    /// Requests per mode (messages are reused round-robin).
    #[arg(long, default_value_t = 8)]
    requests: usize,
    /// Concurrencies to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    concurrency: Vec<usize>,
    /// Skip the per-step adapter modes.
    #[arg(long)]
    no_adapters: bool,
    #[arg(long)]
    json: bool,
}

/// Portal-style messages written for the benchmark (short, mixed complaints).
const MESSAGES: &[&str] = &[
    "I've had sharp lower back pain for 3 days. Should I be worried?",
    "My throat has been sore since Monday and it hurts to swallow, but I can drink fine.",
    "Can I get a refill of my blood pressure pills? I have 4 left.",
    "I have a headache that came on suddenly an hour ago, the worst of my life.",
    "My 4 year old has had a runny nose and a mild cough for two days, no fever.",
    "Burning when I pee since yesterday, no fever, no back pain.",
    "I twisted my ankle playing football, it's swollen but I can walk on it.",
    "I need to reschedule my appointment next Tuesday to the week after.",
];

#[derive(Debug, Clone, Serialize)]
pub struct ModeResult {
    pub name: String,
    pub concurrency: usize,
    pub adapters: bool,
    pub requests: usize,
    pub tokens_computed_per_request: f64,
    pub tokens_new_per_request: f64,
    pub tokens_generated_per_request: f64,
    pub work_ratio: f64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub speedup_vs_stateless: f64,
    pub errors: usize,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub modes: Vec<ModeResult>,
    pub load_average: LoadAverage,
    pub model: String,
    pub threads: usize,
    /// Tokens of the shared prefix, computed once per process in the prefix-cache modes.
    pub shared_prefix_tokens: u64,
    /// Throughput with per-step adapters / without, stateful + prefix cache, per concurrency.
    pub adapter_throughput_ratio: Vec<(usize, f64)>,
}

#[derive(Debug, Serialize)]
pub struct LoadAverage {
    pub start: f64,
    pub end: f64,
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

pub async fn run(c: BenchCommand) -> Result<()> {
    match c {
        BenchCommand::Workflow(b) => workflow_bench(b).await,
    }
}

async fn workflow_bench(b: WorkflowBench) -> Result<()> {
    let load_start = load_average();
    let (rules, guidelines) = KnowledgeArgs::default().load()?;
    // Step adapters for the adapter modes: rank-8 LoRAs shaped for the model. Their values do
    // not matter for speed (the cost is the extra matmuls), so small random deltas stand in
    // for distilled adapters until `careflow distill` produces real ones.
    let mut config = b.engine.config()?;
    config.max_sequences = config
        .max_sequences
        .max(b.concurrency.iter().copied().max().unwrap_or(1) + 4);
    let dir = tempfile::tempdir()?;
    let steps = ["plan", "retrieve", "analyze", "validate", "respond"];
    if !b.no_adapters {
        for (i, step) in steps.iter().enumerate() {
            let path = dir.path().join(format!("{step}.gguf"));
            let mut spec =
                careflow_engine::gguf::lora_spec_for_model(&config.model, 8, 100 + i as u64)
                    .map_err(anyhow::Error::msg)?;
            spec.amplitude = 0.01;
            careflow_engine::gguf::write_lora(&path, &spec)?;
            config.adapters.push(AdapterConfig {
                name: format!("step-{step}"),
                path,
                scale: 1.0,
            });
        }
    }
    let threads = config.threads();
    let engine: Arc<dyn Engine> = Arc::new(config.build().context("starting the engine")?);
    let step_adapters: BTreeMap<String, String> = steps
        .iter()
        .map(|s| (s.to_string(), format!("step-{s}")))
        .collect();

    let mut plan: Vec<(Mode, bool, usize)> = Vec::new();
    for &c in &b.concurrency {
        plan.push((Mode::Stateless, false, c));
        plan.push((Mode::Stateful, false, c));
        plan.push((Mode::StatefulPrefixCache, false, c));
        if !b.no_adapters {
            plan.push((Mode::StatefulPrefixCache, true, c));
        }
    }
    let total = (plan.len() * b.requests) as u64;
    let pb = output::progress(
        total,
        "{msg:32} [{bar:30}] {pos}/{len} requests, eta {eta}",
        "",
    );
    let mut results: Vec<ModeResult> = Vec::new();
    let mut shared_prefix_tokens = 0;
    for (mode, adapters, concurrency) in plan {
        let label = format!(
            "{}{} x{}",
            mode.name(),
            if adapters { "+adapters" } else { "" },
            concurrency
        );
        pb.set_message(label);
        let wf = Arc::new(TriageWorkflow::new(
            engine.clone(),
            None,
            rules.clone(),
            guidelines.clone(),
            WorkflowConfig {
                mode,
                adapters: if adapters {
                    step_adapters.clone()
                } else {
                    BTreeMap::new()
                },
                ..Default::default()
            },
        )?);
        if mode == Mode::StatefulPrefixCache {
            // Process start-up: the shared prefix is computed once, then only forked.
            let u = wf.warm().await?;
            shared_prefix_tokens = u.submitted;
        }
        let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let started = Instant::now();
        let mut handles = Vec::new();
        for i in 0..b.requests {
            let wf = wf.clone();
            let sem = sem.clone();
            let pb = pb.clone();
            let text = MESSAGES[i % MESSAGES.len()];
            handles.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                let t = Instant::now();
                let message = PatientMessage::parse(text)?;
                let out = wf
                    .run(TriageRequest {
                        message,
                        patient: None,
                    })
                    .await;
                pb.inc(1);
                anyhow::Ok((out, t.elapsed().as_secs_f64() * 1000.0))
            }));
        }
        let mut lat = Vec::new();
        let (mut computed, mut new, mut generated, mut errors) = (0f64, 0f64, 0f64, 0usize);
        for h in handles {
            match h.await? {
                Ok((Ok(o), ms)) => {
                    lat.push(ms);
                    computed += (o.totals.computed + o.totals.generated) as f64;
                    generated += o.totals.generated as f64;
                    new += o.transcript_tokens.saturating_sub(o.prefix_tokens) as f64;
                }
                _ => errors += 1,
            }
        }
        let wall = started.elapsed().as_secs_f64();
        let ok = lat.len().max(1) as f64;
        lat.sort_by(|a, b| a.total_cmp(b));
        results.push(ModeResult {
            name: mode.name().to_string(),
            concurrency,
            adapters,
            requests: b.requests,
            tokens_computed_per_request: computed / ok,
            tokens_new_per_request: new / ok,
            tokens_generated_per_request: generated / ok,
            work_ratio: if new > 0.0 { computed / new } else { f64::NAN },
            requests_per_s: lat.len() as f64 / wall,
            p50_ms: percentile(&lat, 0.50),
            p95_ms: percentile(&lat, 0.95),
            speedup_vs_stateless: f64::NAN,
            errors,
        });
    }
    pb.finish_and_clear();
    for i in 0..results.len() {
        let base = results
            .iter()
            .find(|r| r.name == Mode::Stateless.name() && r.concurrency == results[i].concurrency)
            .map(|r| r.requests_per_s)
            .unwrap_or(f64::NAN);
        results[i].speedup_vs_stateless = results[i].requests_per_s / base;
    }
    let adapter_throughput_ratio = b
        .concurrency
        .iter()
        .filter_map(|&c| {
            let find = |a: bool| {
                results
                    .iter()
                    .find(|r| {
                        r.concurrency == c
                            && r.adapters == a
                            && r.name == Mode::StatefulPrefixCache.name()
                    })
                    .map(|r| r.requests_per_s)
            };
            Some((c, find(true)? / find(false)?))
        })
        .collect();
    let report = BenchReport {
        modes: results,
        load_average: LoadAverage {
            start: load_start,
            end: load_average(),
        },
        model: engine.info().name.clone(),
        threads,
        shared_prefix_tokens,
        adapter_throughput_ratio,
    };
    if b.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let rows: Vec<Vec<String>> = report
            .modes
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.concurrency.to_string(),
                    if r.adapters { "yes" } else { "no" }.into(),
                    format!("{:.0}", r.tokens_computed_per_request),
                    format!("{:.0}", r.tokens_new_per_request),
                    format!("{:.2}", r.work_ratio),
                    format!("{:.3}", r.requests_per_s),
                    format!("{:.0}", r.p50_ms),
                    format!("{:.0}", r.p95_ms),
                    format!("{:.2}x", r.speedup_vs_stateless),
                    r.errors.to_string(),
                ]
            })
            .collect();
        output::table(
            &[
                "mode",
                "conc",
                "adapters",
                "computed/req",
                "new/req",
                "work",
                "req/s",
                "p50 ms",
                "p95 ms",
                "vs stateless",
                "errors",
            ],
            &rows,
        );
        println!(
            "\nshared prefix: {} tokens, computed once per process in prefix-cache modes",
            report.shared_prefix_tokens
        );
        for (c, r) in &report.adapter_throughput_ratio {
            println!(
                "per-step adapters at concurrency {c}: {:.2}x the throughput without",
                r
            );
        }
        println!(
            "model {}, {} threads, load average {:.2} -> {:.2}",
            report.model, report.threads, report.load_average.start, report.load_average.end
        );
        println!("work = tokens run through the model (prefill + generated) / transcript tokens beyond the shared prefix");
    }
    Ok(())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
