//! `careflow plan`: capacity planning. A daily volume becomes tokens per second (with a
//! headroom factor for peaks), then GPUs and model-server replicas per GPU type, then a
//! monthly bill, next to the flagship API and a managed small model at the same volume, at
//! 1x, 10x and 100x. GPU types and their throughputs come from `data/gpus.toml` (embedded;
//! `--gpus FILE` reads another); API prices from the prices file, as `careflow cost` reads
//! them. Sizing and pricing go through careflow-ledger's `project`, the same arithmetic as
//! `careflow cost`: whole GPUs, `ceil(tokens/s needed / tokens/s per GPU)`, rented all day.

use crate::cost_cmd::{strategy_rows, thousands, tokens, usd, Strategy, STRATEGY_HEADERS};
use crate::output;
use anyhow::{anyhow, bail, Context, Result};
use careflow_ledger::{
    project, project_volume, scale_usage, tiers, Prices, TierPrice, Volume, SECONDS_PER_DAY,
};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The GPU types shipped with careflow (`data/gpus.toml`).
pub const EMBEDDED_GPUS: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/gpus.toml"));

/// Where the embedded GPU types say they come from, in messages.
const EMBEDDED_GPUS_ORIGIN: &str = "data/gpus.toml (embedded)";

/// The GPU type `--from-bench` applies to when `--gpu` is not given: the machine
/// `careflow bench workflow` runs on in this project.
const BENCH_DEFAULT_GPU: &str = "cpu-2core";

/// The workflow mode careflow serves in; its measured rate is the one that counts.
const SERVING_MODE: &str = "stateful+prefix_cache";
/// The mode that counts what a stateless agent computes per request.
const STATELESS_MODE: &str = "stateless";

/// Headroom above this is surely a typo (and would overflow nothing, but plan nothing real).
const MAX_HEADROOM: f64 = 100.0;

/// `careflow plan --help` (set on the subcommand in main.rs).
pub const LONG_ABOUT: &str = "Capacity planning: how many GPUs (and model-server replicas, \
one per GPU) a daily volume needs on each GPU type, what they cost a month, and what the same \
volume costs on a flagship API and on a managed small model, at 1x, 10x and 100x the volume.\n\n\
The volume is requests/day x steps x tokens/step, every step counted with its whole context \
(as a stateless agent sends it): 50,000 x 5 x 1,000 = 250M tokens/day, about 2,894 tokens/s on \
average. Self-hosted capacity is rented for the peak, not the average: tokens/s needed = \
average x --headroom (default 1.5). GPUs = ceil(tokens/s needed / tokens/s one GPU serves), \
rented 24 hours a day, 30 days a month. An API bills per token, so it needs no headroom.\n\n\
GPU types, $/hour and throughputs come from data/gpus.toml (built in; --gpus FILE reads \
another). They are planning assumptions, except the measured cpu-2core small-model figure. \
--tokens-per-second-per-gpu replaces the throughput of the --gpu type with your own figure; \
--from-bench replaces it with the one `careflow bench workflow --json` measured (requests/s \
in the stateful + prefix cache mode x the tokens a stateless agent computes per request). API \
prices come from data/prices.toml (built in; --prices FILE reads another).\n\n\
Examples:\n  \
careflow plan --requests-per-day 50000                   # the design's volume, every GPU type\n  \
careflow plan --requests-per-day 500000 --gpu l4         # 10x, on L4s only\n  \
careflow plan --requests-per-day 50000 --headroom 1.0 --model-class small\n  \
careflow plan --requests-per-day 50000 --gpu l4 --tokens-per-second-per-gpu 6500\n  \
careflow bench workflow --json > bench.json && careflow plan --requests-per-day 2000 --from-bench bench.json\n  \
careflow plan --requests-per-day 50000 --gpus my-gpus.toml --prices my-prices.toml --json";

#[derive(Args)]
pub struct PlanArgs {
    /// Requests per day, on average over the day (at least 1).
    #[arg(long, value_name = "N", value_parser = at_least_one, allow_hyphen_values = true)]
    requests_per_day: u64,
    /// Workflow steps per request.
    #[arg(long, value_name = "N", default_value_t = Volume::STATED.steps,
          value_parser = at_least_one, allow_hyphen_values = true)]
    steps: u64,
    /// Tokens per step, input (its whole context) and output together.
    #[arg(long, value_name = "N", default_value_t = Volume::STATED.tokens_per_step,
          value_parser = at_least_one, allow_hyphen_values = true)]
    tokens_per_step: u64,
    /// The share of each step's tokens that is generated, in [0, 1) (prices the APIs' output).
    #[arg(long, value_name = "F", default_value_t = Volume::STATED.output_share,
          allow_hyphen_values = true)]
    output_share: f64,
    /// Peak over average: self-hosted capacity is sized for average tokens/s x this
    /// (1.0 = the daily average, no headroom).
    #[arg(long, value_name = "X", default_value_t = 1.5, value_parser = headroom,
          allow_hyphen_values = true)]
    headroom: f64,
    /// The model size the GPU throughputs are for: ~7B-class (7b) or ~0.5B/135M-class (small).
    #[arg(long, value_enum, value_name = "CLASS", default_value_t = ModelClass::SevenB)]
    model_class: ModelClass,
    /// Plan for this GPU type only (default: every type in the GPU file).
    #[arg(long, value_name = "NAME")]
    gpu: Option<String>,
    /// Replace the throughput of the --gpu type with this figure (tokens/s one GPU serves).
    #[arg(long, value_name = "X", requires = "gpu", conflicts_with = "from_bench",
          value_parser = positive, allow_hyphen_values = true)]
    tokens_per_second_per_gpu: Option<f64>,
    /// Use the throughput that `careflow bench workflow --json` measured (saved in FILE) for
    /// the --gpu type (default: cpu-2core, the machine the benchmark runs on here).
    #[arg(long, value_name = "FILE.json")]
    from_bench: Option<PathBuf>,
    /// A GPU types file (TOML, same fields as data/gpus.toml); default: the built-in one.
    #[arg(long, value_name = "FILE")]
    gpus: Option<PathBuf>,
    /// A prices file for the API tiers (same fields as data/prices.toml); default: built in.
    #[arg(long, value_name = "FILE")]
    prices: Option<PathBuf>,
    /// One JSON document instead of tables.
    #[arg(long)]
    json: bool,
}

/// Which throughput column of the GPU file applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
pub enum ModelClass {
    /// A ~7B-class model (Qwen2.5-7B, Llama-3.1-8B).
    #[value(name = "7b")]
    #[serde(rename = "7b")]
    SevenB,
    /// A ~0.5B / 135M-class model (Qwen2.5-0.5B, SmolLM2-135M).
    #[value(name = "small")]
    #[serde(rename = "small")]
    Small,
}

impl ModelClass {
    fn label(self) -> &'static str {
        match self {
            ModelClass::SevenB => "a ~7B-class model",
            ModelClass::Small => "a ~0.5B/135M-class model",
        }
    }
}

fn at_least_one(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number of at least 1")),
    }
}

fn positive(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        Ok(_) => Err(format!("`{s}`: must be a number greater than zero")),
        Err(_) => Err(format!("`{s}` is not a number")),
    }
}

fn headroom(s: &str) -> Result<f64, String> {
    let x = s
        .trim()
        .parse::<f64>()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if !(1.0..=MAX_HEADROOM).contains(&x) {
        return Err(format!(
            "`{s}`: must be between 1.0 (size for the daily average) and {MAX_HEADROOM}"
        ));
    }
    Ok(x)
}

// ---------------------------------------------------------------------------------------
// The GPU file.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuFile {
    as_of: String,
    note: String,
    gpus: Vec<GpuType>,
}

/// One GPU type of the GPU file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuType {
    name: String,
    hardware: String,
    usd_per_hour: f64,
    tokens_per_second_7b: f64,
    tokens_per_second_small: f64,
    note: String,
    source: String,
}

struct Gpus {
    as_of: String,
    note: String,
    origin: String,
    types: Vec<GpuType>,
}

impl Gpus {
    fn load(path: Option<&Path>) -> Result<Gpus> {
        match path {
            None => Gpus::parse(EMBEDDED_GPUS, EMBEDDED_GPUS_ORIGIN),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading the GPU types file {}", p.display()))?;
                Gpus::parse(&text, &p.display().to_string())
            }
        }
    }

    fn parse(text: &str, origin: &str) -> Result<Gpus> {
        let file: GpuFile =
            toml::from_str(text).map_err(|e| anyhow!("{origin}: {}", e.to_string().trim_end()))?;
        if file.gpus.is_empty() {
            bail!("{origin}: field `gpus`: no GPU type defined ([[gpus]] entries)");
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, g) in file.gpus.iter().enumerate() {
            let at = |field: &str, reason: &str| {
                anyhow!(
                    "{origin}: gpus[{i}]{}, field `{field}`: {reason}",
                    if g.name.is_empty() {
                        String::new()
                    } else {
                        format!(" (`{}`)", g.name)
                    }
                )
            };
            let name_ok = !g.name.is_empty()
                && g.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !name_ok {
                return Err(at(
                    "name",
                    "must be non-empty lowercase letters, digits and `-`",
                ));
            }
            if seen.contains(&g.name.as_str()) {
                return Err(at("name", "defined twice"));
            }
            seen.push(&g.name);
            for (field, v) in [
                ("usd_per_hour", g.usd_per_hour),
                ("tokens_per_second_7b", g.tokens_per_second_7b),
                ("tokens_per_second_small", g.tokens_per_second_small),
            ] {
                if !v.is_finite() || v <= 0.0 {
                    return Err(at(field, &format!("must be greater than zero (found {v})")));
                }
            }
            for (field, v) in [
                ("hardware", &g.hardware),
                ("note", &g.note),
                ("source", &g.source),
            ] {
                if v.trim().is_empty() {
                    return Err(at(field, "must not be empty"));
                }
            }
        }
        Ok(Gpus {
            as_of: file.as_of,
            note: file.note,
            origin: origin.to_string(),
            types: file.gpus,
        })
    }

    fn get(&self, name: &str) -> Result<&GpuType> {
        self.types.iter().find(|g| g.name == name).ok_or_else(|| {
            anyhow!(
                "unknown GPU type `{name}` (known in {}: {})",
                self.origin,
                self.types
                    .iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}

// ---------------------------------------------------------------------------------------
// A benchmark file (`careflow bench workflow --json`).

#[derive(Debug, Clone, Serialize)]
struct BenchThroughput {
    file: String,
    model: String,
    /// The mode whose rate is used (careflow serves in it).
    mode: String,
    concurrency: u64,
    adapters: bool,
    requests_per_s: f64,
    /// What careflow computed per request in that mode.
    tokens_computed_per_request: f64,
    /// What a stateless agent computes per request (the `stateless` mode).
    stateless_tokens_per_request: f64,
    /// requests_per_s x stateless_tokens_per_request: the throughput in the plan's unit.
    tokens_per_second: f64,
}

struct BenchMode {
    name: String,
    concurrency: u64,
    adapters: bool,
    requests_per_s: f64,
    tokens_computed_per_request: f64,
    errors: u64,
}

fn read_bench(path: &Path) -> Result<BenchThroughput> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the benchmark file {file}"))?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        anyhow!("{file}: not JSON ({e}); expected the output of `careflow bench workflow --json`")
    })?;
    let field_err = |field: &str, reason: &str| {
        anyhow!(
            "{file}: field `{field}`: {reason} (expected the output of `careflow bench workflow --json`)"
        )
    };
    let modes = match doc.get("modes") {
        None => return Err(field_err("modes", "missing")),
        Some(serde_json::Value::Array(m)) if m.is_empty() => {
            return Err(field_err("modes", "empty"))
        }
        Some(serde_json::Value::Array(m)) => m,
        Some(_) => return Err(field_err("modes", "expected a list")),
    };
    let mut parsed = Vec::with_capacity(modes.len());
    for (i, m) in modes.iter().enumerate() {
        let f = |name: &str| format!("modes[{i}].{name}");
        let get = |name: &str| m.get(name).ok_or_else(|| field_err(&f(name), "missing"));
        let number = |name: &str| -> Result<f64> {
            match get(name)?.as_f64() {
                Some(x) if x.is_finite() && x >= 0.0 => Ok(x),
                _ => Err(field_err(&f(name), "expected a number of at least 0")),
            }
        };
        let whole = |name: &str| -> Result<u64> {
            get(name)?
                .as_u64()
                .ok_or_else(|| field_err(&f(name), "expected a whole number"))
        };
        parsed.push(BenchMode {
            name: get("name")?
                .as_str()
                .ok_or_else(|| field_err(&f("name"), "expected a string"))?
                .to_string(),
            concurrency: whole("concurrency")?,
            adapters: get("adapters")?
                .as_bool()
                .ok_or_else(|| field_err(&f("adapters"), "expected true or false"))?,
            requests_per_s: number("requests_per_s")?,
            tokens_computed_per_request: number("tokens_computed_per_request")?,
            errors: match m.get("errors") {
                None => 0,
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| field_err(&f("errors"), "expected a whole number"))?,
            },
        });
    }
    let best = parsed
        .iter()
        .filter(|m| {
            m.name == SERVING_MODE
                && m.errors == 0
                && m.requests_per_s > 0.0
                && m.tokens_computed_per_request > 0.0
        })
        .max_by(|a, b| a.requests_per_s.total_cmp(&b.requests_per_s))
        .ok_or_else(|| {
            field_err(
                "modes",
                &format!(
                    "no `{SERVING_MODE}` mode that completed requests without errors (careflow serves in that mode)"
                ),
            )
        })?;
    let stateless_ok = |m: &&BenchMode| {
        m.name == STATELESS_MODE && m.errors == 0 && m.tokens_computed_per_request > 0.0
    };
    let stateless = parsed
        .iter()
        .filter(stateless_ok)
        .find(|m| m.concurrency == best.concurrency && !m.adapters)
        .or_else(|| parsed.iter().find(stateless_ok))
        .ok_or_else(|| {
            field_err(
                "modes",
                &format!(
                    "no `{STATELESS_MODE}` mode without errors, which counts the tokens a stateless agent computes per request"
                ),
            )
        })?;
    let model = match doc.get("model") {
        None => "unknown".to_string(),
        Some(v) => v
            .as_str()
            .ok_or_else(|| field_err("model", "expected a string"))?
            .to_string(),
    };
    Ok(BenchThroughput {
        file,
        model,
        mode: best.name.clone(),
        concurrency: best.concurrency,
        adapters: best.adapters,
        requests_per_s: best.requests_per_s,
        tokens_computed_per_request: best.tokens_computed_per_request,
        stateless_tokens_per_request: stateless.tokens_computed_per_request,
        tokens_per_second: best.requests_per_s * stateless.tokens_computed_per_request,
    })
}

// ---------------------------------------------------------------------------------------
// The plan.

#[derive(Serialize)]
struct Plan {
    gpus_file: Origin,
    prices: Origin,
    demand: Demand,
    model_class: ModelClass,
    /// Present with --from-bench.
    bench: Option<BenchThroughput>,
    /// One entry per GPU type, in the GPU file's order.
    self_hosted: Vec<GpuPlan>,
    /// The flagship API and the managed small model at the same volume (no headroom).
    api: Vec<Strategy>,
    /// The GPU type with the lowest monthly cost at 1x (the first of equals).
    cheapest_self_hosted: Option<String>,
}

#[derive(Serialize)]
struct Origin {
    as_of: String,
    origin: String,
}

#[derive(Serialize)]
struct Demand {
    requests_per_day: u64,
    steps: u64,
    tokens_per_step: u64,
    output_share: f64,
    tokens_per_day: u64,
    /// Averages over the day.
    requests_per_second: f64,
    tokens_per_second: f64,
    headroom: f64,
    /// What self-hosted capacity is sized for: the averages x headroom.
    requests_per_second_needed: f64,
    tokens_per_second_needed: f64,
}

#[derive(Serialize)]
struct GpuPlan {
    gpu: String,
    hardware: String,
    usd_per_hour: f64,
    tokens_per_second_per_gpu: f64,
    /// `gpus_file`, `flag` (--tokens-per-second-per-gpu) or `bench` (--from-bench).
    throughput_from: &'static str,
    gpus: u64,
    /// Model-server replicas: one per GPU (a ~7B model fits one GPU; no tensor parallelism).
    replicas: u64,
    /// Average tokens/s / (GPUs x tokens/s per GPU).
    utilization_at_average: f64,
    usd_per_day: f64,
    usd_per_month: f64,
    scaling: Vec<GpuScale>,
    note: String,
    source: String,
}

#[derive(Serialize)]
struct GpuScale {
    factor: u32,
    tokens_per_second_needed: f64,
    gpus: u64,
    replicas: u64,
    usd_per_month: f64,
}

/// The API strategies shown next to the GPUs.
const API_STRATEGIES: [(&str, &str); 2] = [
    (tiers::FLAGSHIP_API, "flagship API"),
    (tiers::MANAGED_SMALL, "managed small model"),
];

pub async fn run(a: PlanArgs) -> Result<()> {
    let plan = build(&a)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print_plan(&plan);
    }
    Ok(())
}

fn build(a: &PlanArgs) -> Result<Plan> {
    let volume = Volume {
        requests_per_day: a.requests_per_day,
        steps: a.steps,
        tokens_per_step: a.tokens_per_step,
        output_share: a.output_share,
    };
    volume.validate()?;
    let prices = match &a.prices {
        Some(path) => Prices::load(path)?,
        None => Prices::embedded().context("the built-in prices")?,
    };
    let gpus = Gpus::load(a.gpus.as_deref())?;
    let bench = a.from_bench.as_deref().map(read_bench).transpose()?;

    // The GPU types planned, each with the throughput that applies and where it came from.
    let selected: Vec<(GpuType, f64, &'static str)> = {
        let chosen = match (&a.gpu, &bench) {
            (Some(name), _) => vec![gpus.get(name)?.clone()],
            (None, Some(_)) => vec![gpus.get(BENCH_DEFAULT_GPU)?.clone()],
            (None, None) => gpus.types.clone(),
        };
        chosen
            .into_iter()
            .map(|g| {
                let (tps, from) = match (a.tokens_per_second_per_gpu, &bench) {
                    (Some(x), _) => (x, "flag"),
                    (None, Some(b)) => (b.tokens_per_second, "bench"),
                    (None, None) => match a.model_class {
                        ModelClass::SevenB => (g.tokens_per_second_7b, "gpus_file"),
                        ModelClass::Small => (g.tokens_per_second_small, "gpus_file"),
                    },
                };
                (g, tps, from)
            })
            .collect()
    };
    if let Some(b) = &bench {
        if !(b.tokens_per_second.is_finite() && b.tokens_per_second > 0.0) {
            bail!(
                "{}: the measured throughput is not a positive number of tokens/s",
                b.file
            );
        }
    }

    // Each GPU type as a self-hosted tier, priced by the ledger's own projection.
    let gpu_prices = Prices {
        as_of: gpus.as_of.clone(),
        note: gpus.note.clone(),
        origin: gpus.origin.clone(),
        tiers: selected
            .iter()
            .map(|(g, tps, _)| {
                (
                    g.name.clone(),
                    TierPrice::SelfHosted {
                        gpu_per_hour: g.usd_per_hour,
                        tokens_per_second: *tps,
                        hardware: g.hardware.clone(),
                        note: g.note.clone(),
                        source: g.source.clone(),
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
    };
    let daily = volume.daily_usage();
    let peak = scale_usage(&daily, a.headroom);
    let average_tps = volume.tokens_per_second();
    let mut self_hosted = Vec::with_capacity(selected.len());
    for (g, tps, from) in &selected {
        let p = project(&gpu_prices, &g.name, &peak)?;
        let gpus_needed = p.gpus.unwrap_or(0);
        let capacity = gpus_needed as f64 * tps;
        self_hosted.push(GpuPlan {
            gpu: g.name.clone(),
            hardware: g.hardware.clone(),
            usd_per_hour: g.usd_per_hour,
            tokens_per_second_per_gpu: *tps,
            throughput_from: from,
            gpus: gpus_needed,
            replicas: gpus_needed,
            utilization_at_average: if capacity > 0.0 {
                average_tps / capacity
            } else {
                0.0
            },
            usd_per_day: p.usd_per_day,
            usd_per_month: p.usd_per_month,
            scaling: p
                .scaling
                .iter()
                .map(|s| GpuScale {
                    factor: s.factor,
                    tokens_per_second_needed: s.tokens_per_second,
                    gpus: s.gpus.unwrap_or(0),
                    replicas: s.gpus.unwrap_or(0),
                    usd_per_month: s.usd_per_month,
                })
                .collect(),
            note: g.note.clone(),
            source: g.source.clone(),
        });
    }
    let api = API_STRATEGIES
        .iter()
        .map(|(tier, label)| {
            Ok(Strategy {
                label: (*label).to_string(),
                projection: project_volume(&prices, tier, &volume)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let cheapest_self_hosted = self_hosted
        .iter()
        .min_by(|x, y| x.usd_per_month.total_cmp(&y.usd_per_month))
        .map(|g| g.gpu.clone());
    let requests_per_second = volume.requests_per_day as f64 / SECONDS_PER_DAY;
    Ok(Plan {
        gpus_file: Origin {
            as_of: gpus.as_of,
            origin: gpus.origin,
        },
        prices: Origin {
            as_of: prices.as_of.clone(),
            origin: prices.origin.clone(),
        },
        demand: Demand {
            requests_per_day: volume.requests_per_day,
            steps: volume.steps,
            tokens_per_step: volume.tokens_per_step,
            output_share: volume.output_share,
            tokens_per_day: volume.tokens_per_day(),
            requests_per_second,
            tokens_per_second: average_tps,
            headroom: a.headroom,
            requests_per_second_needed: requests_per_second * a.headroom,
            tokens_per_second_needed: average_tps * a.headroom,
        },
        model_class: a.model_class,
        bench,
        self_hosted,
        api,
        cheapest_self_hosted,
    })
}

// ---------------------------------------------------------------------------------------
// The table for people.

fn gpus_text(n: u64) -> String {
    if n == 1 {
        "1 GPU".into()
    } else {
        format!("{n} GPUs")
    }
}

fn print_plan(p: &Plan) {
    let d = &p.demand;
    println!(
        "Volume: {} requests/day x {} steps x {} tokens = {} tokens/day, every step counted \
         with its whole context",
        thousands(d.requests_per_day),
        d.steps,
        thousands(d.tokens_per_step),
        thousands(d.tokens_per_day)
    );
    println!(
        "Average: {} tokens/s ({:.2} requests/s). Sized for peaks at {}x: {} tokens/s needed.",
        thousands(d.tokens_per_second.round() as u64),
        d.requests_per_second,
        d.headroom,
        thousands(d.tokens_per_second_needed.round() as u64)
    );
    match &p.bench {
        Some(b) => println!(
            "Throughput: measured in {} ({}, mode {} at concurrency {}{}): {:.3} requests/s x \
             {} tokens a stateless agent computes per request = {} tokens/s per unit \
             (careflow computed {} per request)",
            b.file,
            b.model,
            b.mode,
            b.concurrency,
            if b.adapters {
                ", per-step adapters"
            } else {
                ""
            },
            b.requests_per_s,
            thousands(b.stateless_tokens_per_request.round() as u64),
            thousands(b.tokens_per_second.round() as u64),
            thousands(b.tokens_computed_per_request.round() as u64)
        ),
        None => println!(
            "Throughput: {}, continuous batching and prefix caching; GPU types from {}, as of {} \
             (planning assumptions)",
            p.model_class.label(),
            p.gpus_file.origin,
            p.gpus_file.as_of
        ),
    }
    println!(
        "API prices: {}, as of {}\n",
        p.prices.origin, p.prices.as_of
    );

    println!("Self-hosted (one model-server replica per GPU, rented all day):\n");
    let rows: Vec<Vec<String>> = p
        .self_hosted
        .iter()
        .map(|g| {
            let mut row = vec![
                g.gpu.clone(),
                format!("${:.2}", g.usd_per_hour),
                format!(
                    "{}{}",
                    thousands(g.tokens_per_second_per_gpu.round() as u64),
                    match g.throughput_from {
                        "flag" => " (flag)",
                        "bench" => " (measured)",
                        _ => "",
                    }
                ),
                thousands(g.gpus),
                format!("{:.0}%", g.utilization_at_average * 100.0),
                usd(g.usd_per_month),
            ];
            row.extend(
                g.scaling
                    .iter()
                    .skip(1)
                    .map(|s| format!("{} ({})", usd(s.usd_per_month), thousands(s.gpus))),
            );
            row
        })
        .collect();
    output::table(
        &[
            "gpu",
            "$/hour",
            "tokens/s per GPU",
            "GPUs = replicas",
            "busy at average",
            "$/month",
            "10x $/month (GPUs)",
            "100x",
        ],
        &rows,
    );

    println!("\nAPIs at the same volume (billed per token, so no headroom):\n");
    output::table(&STRATEGY_HEADERS, &strategy_rows(&p.api));

    let cheapest = p
        .cheapest_self_hosted
        .as_ref()
        .and_then(|name| p.self_hosted.iter().find(|g| &g.gpu == name));
    let flagship = p
        .api
        .iter()
        .find(|s| s.projection.tier == tiers::FLAGSHIP_API);
    if let (Some(g), Some(f)) = (cheapest, flagship) {
        if g.usd_per_month > 0.0 {
            println!(
                "\nCheapest self-hosted: {} ({}), {}/month, {:.0}x less than the flagship API's {}/month.",
                g.gpu,
                gpus_text(g.gpus),
                usd(g.usd_per_month),
                f.projection.usd_per_month / g.usd_per_month,
                usd(f.projection.usd_per_month)
            );
        }
    }
    println!(
        "GPUs = ceil(tokens/s needed / tokens/s per GPU); tokens/s needed at 10x and 100x: {}. \
         A month is 30 days; {} tokens/day is {} tokens/s on average.",
        p.self_hosted
            .first()
            .map(|g| g
                .scaling
                .iter()
                .skip(1)
                .map(|s| tokens(s.tokens_per_second_needed))
                .collect::<Vec<_>>()
                .join(" and "))
            .unwrap_or_default(),
        tokens(d.tokens_per_day as f64),
        thousands(d.tokens_per_second.round() as u64)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_gpu_file_parses_and_has_an_l4_and_the_measured_cpu_machine() {
        let g = Gpus::parse(EMBEDDED_GPUS, EMBEDDED_GPUS_ORIGIN).unwrap();
        assert!(g.get("l4").is_ok());
        assert!(g.get(BENCH_DEFAULT_GPU).is_ok());
        let e = g.get("tpu").unwrap_err().to_string();
        assert!(e.contains("l4") && e.contains("cpu-2core"), "{e}");
    }

    #[test]
    fn bad_gpu_files_name_the_field() {
        let e = Gpus::parse("as_of = \"x\"\nnote = \"\"\ngpus = []\n", "f.toml")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("f.toml") && e.contains("gpus"), "{e}");
        let entry = |extra: &str| {
            format!(
                "as_of = \"x\"\nnote = \"\"\n[[gpus]]\nname = \"g\"\nhardware = \"h\"\n\
                 usd_per_hour = 1.0\ntokens_per_second_7b = 1\ntokens_per_second_small = 2\n\
                 note = \"n\"\nsource = \"s\"\n{extra}"
            )
        };
        assert!(Gpus::parse(&entry(""), "f.toml").is_ok());
        let e = Gpus::parse(&entry("color = 1\n"), "f.toml")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("color"), "{e}");
        let e = Gpus::parse(
            &entry("").replace("usd_per_hour = 1.0", "usd_per_hour = 0.0"),
            "f.toml",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("usd_per_hour") && e.contains("`g`"), "{e}");
    }
}
