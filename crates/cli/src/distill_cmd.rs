//! `careflow distill`: a teacher's step-by-step traces become one chat dataset per step
//! (`generate`), the datasets become one adapter per step through `training/` (`train`), and the
//! student with its adapters is measured against the teacher on the same, held-in data (`eval`).
//!
//! - `generate` runs the workflow with the teacher (the configured frontier tier, e.g.
//!   `--frontier qwen2.5-coder-0.5b`) serving *every* step, over synthetic portal messages (a
//!   deterministic generator below) and, unlabelled, the messages of an evaluation suite. Each
//!   step's rendered prompt and output, with the turns before it, becomes one line of
//!   `OUT/<step>.jsonl` (`{"messages": [...], "meta": {...}}`). A trace whose proposed
//!   disposition is below its red-flag floor is dropped (it would teach under-triage); a step
//!   whose output broke its schema drops that step's example and the later steps' (their context
//!   would be wrong). Drops are counted per reason.
//! - `train` checks every dataset line (a bad one is named), then runs
//!   `python -m careflow_training.train` per step with a progress bar fed by its JSON lines, and
//!   loads each exported adapter in the engine: it must load (manifest, base sha256, llama.cpp's
//!   checks), change the step's logits, and reproduce the trainer's greedy probe.
//! - `eval`: per step, the student (small model + the step's adapter) answering from the
//!   teacher's context vs the teacher's answer — exact JSON and key fields (the enum and boolean
//!   fields of the step's schema) — against the student without the adapter; and the final
//!   disposition through the whole workflow with the adapters configured per step vs without.

use crate::commands::{EngineArgs, KnowledgeArgs, SetupArgs};
use crate::output;
use anyhow::{anyhow, bail, Context, Result};
use careflow_core::{Disposition, PatientMessage};
use careflow_engine::{
    models, AdapterConfig, AdapterManifest, ChatMessage, Engine, EngineConfig, GenerateParams,
    OpenSession, Turn,
};
use careflow_workflow::definition::{expand_schema, StepKind};
use careflow_workflow::{Mode, TriageOutcome, TriageRequest, TriageWorkflow, WorkflowConfig};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const LONG_ABOUT: &str = concat!(
    "Distil the teacher tier into per-step adapters for the small model.\n\n",
    "  careflow distill generate --frontier qwen2.5-coder-0.5b --synthetic 40 --suite data/eval/dev.jsonl --out traces/\n",
    "  careflow distill train --data traces/ --out adapters/ --only plan --steps 40 --rank 16\n",
    "  careflow distill eval --data traces/ --adapters adapters/\n\n",
    "The training environment (Python: torch, transformers, PEFT, gguf) comes from ",
    "`CAREFLOW_WITH_TRAINING=1 scripts/setup.sh`; see training/README.md for the GPU (QLoRA) recipe."
);

#[derive(Subcommand)]
pub enum DistillCommand {
    /// Run the teacher over portal messages and write one chat dataset per step
    /// (OUT/<step>.jsonl); traces that break a red-flag floor or a schema are dropped and counted.
    Generate(GenerateArgs),
    /// Train one adapter per step with training/ (aLoRA or LoRA; QLoRA on CUDA), export it as a
    /// GGUF LoRA with its manifest, and check that the engine loads it.
    Train(TrainArgs),
    /// How often the student agrees with the teacher on held-in data, per step and on the final
    /// disposition, with the adapters and without.
    Eval(EvalArgs),
}

pub async fn run(c: DistillCommand) -> Result<()> {
    match c {
        DistillCommand::Generate(a) => generate(a).await,
        DistillCommand::Train(a) => train(a).await,
        DistillCommand::Eval(a) => eval(a).await,
    }
}

// ---------------------------------------------------------------------------------------------
// generate

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub setup: SetupArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub knowledge: KnowledgeArgs,
    /// Directory the datasets are written to (`<step>.jsonl`, `generate.json`).
    #[arg(long)]
    pub out: PathBuf,
    /// Synthetic portal messages to generate (deterministic by `--seed`).
    #[arg(long, default_value_t = 40)]
    pub synthetic: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// An evaluation suite (JSONL with `message`) whose messages are added, unlabelled.
    #[arg(long)]
    pub suite: Option<PathBuf>,
    /// At most this many messages from the suite.
    #[arg(long)]
    pub suite_limit: Option<usize>,
    /// Only write datasets for these steps (comma-separated; default: every step that generates).
    #[arg(long, value_delimiter = ',')]
    pub steps: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

/// One message of the corpus.
#[derive(Debug, Clone)]
struct Source {
    id: String,
    origin: &'static str,
    text: String,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
struct StepCounts {
    kept: u64,
    schema: u64,
    below_floor: u64,
    error: u64,
}

async fn generate(a: GenerateArgs) -> Result<()> {
    let (rules, guidelines) = a.knowledge.load()?;
    let rc = a
        .setup
        .resolve(&a.engine, &crate::commands::DbArgs { database: None })?;
    rc.check()?;
    let def = rc.workflow_def()?;
    let generating: Vec<String> = def
        .steps
        .iter()
        .filter(|s| matches!(s.def.kind, StepKind::Generate | StepKind::Respond))
        .map(|s| s.def.name.clone())
        .collect();
    let wanted: Vec<String> = if a.steps.is_empty() {
        generating.clone()
    } else {
        for s in &a.steps {
            if !generating.contains(s) {
                bail!(
                    "--steps: the workflow `{}` has no step `{s}` that generates (steps: {})",
                    def.name,
                    generating.join(", ")
                );
            }
        }
        a.steps.clone()
    };
    let mut corpus: Vec<Source> = synthetic_messages(a.synthetic, a.seed, &rules)
        .into_iter()
        .enumerate()
        .map(|(i, text)| Source {
            id: format!("synth-{:04}", i + 1),
            origin: "synthetic",
            text,
        })
        .collect();
    if let Some(suite) = &a.suite {
        corpus.extend(suite_messages(suite, a.suite_limit)?);
    }
    if corpus.is_empty() {
        bail!("no messages: give --synthetic N or --suite FILE");
    }

    let prices = rc.prices()?;
    let teacher = rc.frontier(&prices)?.ok_or_else(|| {
        anyhow!(
            "distill generate needs a teacher: --frontier MODEL (e.g. qwen2.5-coder-0.5b, or \
             smollm2-135m for a quick pipeline check) or a [frontier] table in the config file"
        )
    })?;
    let teacher_name = teacher.model();
    let run = WorkflowConfig {
        mode: Mode::StatefulPrefixCache,
        adapters: BTreeMap::new(),
        sql_step: false,
        ..rc.file.run.clone()
    };
    // The teacher serves every step: it is the workflow's only tier.
    let wf = TriageWorkflow::new(teacher.engine.clone(), None, rules, guidelines, run)?
        .with_definition(def)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;

    let pb = output::progress(
        corpus.len() as u64,
        "{msg:24} [{bar:30}] {pos}/{len} eta {eta}",
        format!("teacher {teacher_name}"),
    );
    let mut lines: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut counts: BTreeMap<String, StepCounts> = wanted
        .iter()
        .map(|s| (s.clone(), StepCounts::default()))
        .collect();
    let mut traces = json!({"run": 0, "complete": 0, "schema": 0, "below_floor": 0, "error": 0});
    let mut bump = |k: &str| {
        traces[k] = json!(traces[k].as_u64().unwrap_or(0) + 1);
    };
    for src in &corpus {
        bump("run");
        let message = match PatientMessage::parse(&src.text) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(id = %src.id, "skipped: {e}");
                bump("error");
                for c in counts.values_mut() {
                    c.error += 1;
                }
                pb.inc(1);
                continue;
            }
        };
        let result = wf
            .run(TriageRequest {
                message,
                patient: None,
            })
            .await;
        pb.inc(1);
        tracing::info!(id = %src.id, done = pb.position(), total = corpus.len(), "teacher trace");
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(id = %src.id, "the teacher's run failed: {e}");
                bump("error");
                for c in counts.values_mut() {
                    c.error += 1;
                }
                continue;
            }
        };
        let below_floor = matches!(
            (outcome.proposed, outcome.floor),
            (Some(p), Some(f)) if p.is_below(f)
        );
        let trace = trace_examples(&wf, &outcome, src, &teacher_name);
        if below_floor {
            bump("below_floor");
            for c in counts.values_mut() {
                c.below_floor += 1;
            }
            continue;
        }
        if trace.broken_at.is_some() {
            bump("schema");
        } else {
            bump("complete");
        }
        for step in &wanted {
            let Some(c) = counts.get_mut(step) else {
                continue;
            };
            match trace.examples.iter().find(|(s, _)| s == step) {
                Some((_, line)) => {
                    c.kept += 1;
                    lines
                        .entry(step.clone())
                        .or_default()
                        .push(serde_json::to_string(line)?);
                }
                None => c.schema += 1,
            }
        }
    }
    pb.finish_and_clear();

    let mut files = Vec::new();
    for step in &wanted {
        let path = a.out.join(format!("{step}.jsonl"));
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?,
        );
        for l in lines.get(step).into_iter().flatten() {
            writeln!(f, "{l}")?;
        }
        f.flush()?;
        files.push(path.display().to_string());
    }
    let summary = json!({
        "teacher": teacher_name,
        "workflow": wf.definition().name,
        "messages": {"synthetic": a.synthetic, "suite": corpus.len() - a.synthetic.min(corpus.len()), "seed": a.seed},
        "traces": traces,
        "steps": counts,
        "files": files,
        "out": a.out.display().to_string(),
    });
    std::fs::write(
        a.out.join("generate.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let rows: Vec<Vec<String>> = wanted
            .iter()
            .filter_map(|s| counts.get(s).map(|c| (s, c)))
            .map(|(s, c)| {
                vec![
                    s.clone(),
                    c.kept.to_string(),
                    c.schema.to_string(),
                    c.below_floor.to_string(),
                    c.error.to_string(),
                ]
            })
            .collect();
        output::table(
            &[
                "step",
                "examples",
                "dropped: schema",
                "below red-flag floor",
                "error",
            ],
            &rows,
        );
        println!(
            "teacher {teacher_name}: {} traces, {} complete; wrote {}",
            summary["traces"]["run"],
            summary["traces"]["complete"],
            a.out.display()
        );
    }
    Ok(())
}

struct Trace {
    /// (step, dataset line) for every step whose example is usable.
    examples: Vec<(String, Value)>,
    /// The first step whose output broke its schema.
    broken_at: Option<String>,
}

/// The transcript the teacher's session held, rebuilt from the outcome's steps (each step's
/// rendered prompt and its output), as one example per generating step.
fn trace_examples(
    wf: &TriageWorkflow,
    outcome: &TriageOutcome,
    src: &Source,
    teacher: &str,
) -> Trace {
    let def = wf.definition();
    let labels: Vec<&str> = Disposition::ALL.iter().map(|d| d.label()).collect();
    let mut transcript: Vec<ChatMessage> = wf.shared_prefix().to_vec();
    let mut passages: Vec<String> = Vec::new();
    let mut examples = Vec::new();
    let mut broken_at = None;
    for r in &outcome.steps {
        let Some(step) = def.step(&r.step) else {
            continue; // the cascade's hand-off is not part of the session
        };
        let prompt = r.prompt.clone().unwrap_or_default();
        match step.def.kind {
            StepKind::Generate | StepKind::Respond => {
                if r.output.is_null() || prompt.is_empty() {
                    broken_at = Some(r.step.clone());
                    break;
                }
                transcript.push(ChatMessage::user(prompt));
                let answer = ChatMessage::new("assistant", compact_json(&r.output));
                let schema = step
                    .schema
                    .as_ref()
                    .map(|s| expand_schema(s, &labels, &passages))
                    .unwrap_or(Value::Null);
                let mut messages: Vec<Value> = transcript
                    .iter()
                    .map(|m| json!({"role": m.role, "content": m.content}))
                    .collect();
                messages.push(json!({"role": "assistant", "content": answer.content}));
                examples.push((
                    r.step.clone(),
                    json!({
                        "messages": messages,
                        "meta": {
                            "id": src.id,
                            "source": src.origin,
                            "message": src.text,
                            "step": r.step,
                            "teacher": teacher,
                            "attempts": r.attempts,
                            "schema": schema,
                            "max_tokens": step.def.max_tokens.unwrap_or(64),
                            "teacher_disposition": outcome.disposition.label(),
                            "teacher_proposed": outcome.proposed.map(|d| d.label()),
                            "floor": outcome.floor.map(|d| d.label()),
                        }
                    }),
                ));
                transcript.push(answer);
            }
            StepKind::Retrieve => {
                passages = r.output["passages"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                if let (Some(sql_prompt), Some(sql)) = (
                    r.output["sql_prompt"].as_str(),
                    r.output["sql"]["sql"].as_str(),
                ) {
                    transcript.push(ChatMessage::user(sql_prompt));
                    transcript.push(ChatMessage::new(
                        "assistant",
                        compact_json(&json!({ "sql": sql })),
                    ));
                }
                transcript.push(ChatMessage::user(prompt));
            }
            StepKind::Validate => transcript.push(ChatMessage::user(prompt)),
        }
    }
    Trace {
        examples,
        broken_at,
    }
}

/// JSON as the engine's constrained decoder writes it: `{"a": 1, "b": [2, 3]}`.
fn compact_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), compact_json(v)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(compact_json).collect();
            format!("[{}]", parts.join(", "))
        }
        other => other.to_string(),
    }
}

fn suite_messages(path: &Path, limit: Option<usize>) -> Result<Vec<Source>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if limit.is_some_and(|n| out.len() >= n) {
            break;
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| anyhow!("{}:{}: not valid JSON ({e})", path.display(), i + 1))?;
        let message = v["message"]
            .as_str()
            .ok_or_else(|| anyhow!("{}:{}: no \"message\"", path.display(), i + 1))?;
        out.push(Source {
            id: v["id"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("line-{}", i + 1)),
            origin: "suite",
            text: message.to_string(),
        });
    }
    Ok(out)
}

/// A deterministic stream of pseudo-random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Synthetic portal messages in the project's own words: everyday complaints x durations x
/// modifiers, red-flag phrasings (the `fires` examples of the red-flag rules that set an urgent
/// floor), and administrative requests. Deterministic by `seed`.
pub fn synthetic_messages(n: usize, seed: u64, rules: &careflow_knowledge::RuleSet) -> Vec<String> {
    const COMPLAINTS: &[&str] = &[
        "a headache",
        "lower back pain",
        "a sore throat",
        "a dry cough",
        "an itchy rash on my arm",
        "stomach ache",
        "a burning feeling when I pee",
        "earache",
        "a swollen ankle after I twisted it",
        "diarrhoea",
        "a blocked nose and sinus pain",
        "feeling dizzy when I stand up",
        "a painful knee",
        "trouble sleeping",
        "a mild fever",
        "heartburn after meals",
        "a red, sore eye",
        "toothache",
        "feeling low and tired all the time",
        "a cut on my hand that looks a bit red",
    ];
    const DURATIONS: &[&str] = &[
        "since this morning",
        "since last night",
        "for 2 days",
        "for 3 days",
        "for about a week",
        "for two weeks",
        "on and off for a month",
        "for a few months now",
    ];
    const MODIFIERS: &[&str] = &[
        "",
        "It's getting a bit worse.",
        "Paracetamol helps a little.",
        "I'm still eating and drinking normally.",
        "It keeps me awake at night.",
        "I'm 67 and otherwise well.",
        "I'm 24 and usually healthy.",
        "It started after a cold.",
        "No other symptoms.",
        "It's mild but annoying.",
    ];
    const OPENERS: &[&str] = &["", "Hi, ", "Hello, ", "Morning - ", "Quick question: "];
    const CLOSERS: &[&str] = &[
        "",
        " Should I be worried?",
        " Do I need to be seen?",
        " What should I do?",
        " Is this something to see the doctor about?",
        " Can I manage this at home?",
    ];
    const MEDS: &[&str] = &[
        "sertraline",
        "ramipril",
        "my inhaler",
        "metformin",
        "levothyroxine",
        "the contraceptive pill",
        "atorvastatin",
    ];
    const DAYS: &[&str] = &["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"];
    const ADMIN: &[&str] = &[
        "Can I get a repeat prescription for {med} please?",
        "I've nearly run out of {med}, could you send a new prescription to my pharmacy?",
        "I need to move my appointment on {day} to another day.",
        "Can I book a blood test for next week?",
        "Could I have a sick note for last week? I was off work with flu.",
        "What time does the surgery open on {day}?",
        "Please cancel my appointment on {day}, I can't make it.",
        "My employer needs a letter saying I'm fit to return to work.",
    ];
    let urgent: Vec<&str> = rules
        .rules()
        .iter()
        .filter(|r| {
            matches!(
                r.level,
                Disposition::EmergencyNow | Disposition::UrgentSameDay
            )
        })
        .flat_map(|r| r.fires.iter().map(String::as_str))
        .collect();
    let mut rng = Rng(seed ^ 0x00C0_FFEE);
    let mut out = Vec::with_capacity(n);
    let mut seen = BTreeSet::new();
    let mut guard = 0;
    while out.len() < n && guard < n * 50 {
        guard += 1;
        let roll = rng.next() % 100;
        let text = if roll < 25 && !urgent.is_empty() {
            let base = rng.pick(&urgent).to_string();
            let dur = if rng.chance(50) {
                format!(" {}", rng.pick(DURATIONS))
            } else {
                String::new()
            };
            format!("{}{base}{dur}.{}", rng.pick(OPENERS), rng.pick(CLOSERS))
        } else if roll < 40 {
            let t = rng.pick(ADMIN);
            format!(
                "{}{}",
                rng.pick(OPENERS),
                t.replace("{med}", rng.pick(MEDS))
                    .replace("{day}", rng.pick(DAYS))
            )
        } else {
            let modifier = rng.pick(MODIFIERS);
            format!(
                "{}I've had {} {}.{}{}",
                rng.pick(OPENERS),
                rng.pick(COMPLAINTS),
                rng.pick(DURATIONS),
                if modifier.is_empty() {
                    String::new()
                } else {
                    format!(" {modifier}")
                },
                rng.pick(CLOSERS)
            )
        };
        let text = capitalise(text.trim());
        if seen.insert(text.clone()) {
            out.push(text);
        }
    }
    out
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// train

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum AdapterMode {
    /// Activated LoRA: applied only to the step's own tokens; the shared-prefix KV stays valid.
    Alora,
    /// Plain LoRA: applied to every token (one adapter for the whole session).
    Lora,
}

impl AdapterMode {
    fn name(self) -> &'static str {
        match self {
            AdapterMode::Alora => "alora",
            AdapterMode::Lora => "lora",
        }
    }
}

#[derive(Args)]
pub struct TrainArgs {
    /// The datasets of `distill generate` (`<step>.jsonl`).
    #[arg(long, required_unless_present = "check_env")]
    pub data: Option<PathBuf>,
    /// Only check that the training environment (Python with torch, transformers, PEFT, gguf)
    /// is there, and say how to install it when it is not.
    #[arg(long)]
    pub check_env: bool,
    /// Where the adapters go (`<step>.gguf`, `<step>.json` manifest) [default: careflow's
    /// cache dir/adapters].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Optimizer steps per adapter.
    #[arg(long, default_value_t = 40)]
    pub steps: u32,
    #[arg(long, default_value_t = 16)]
    pub rank: u32,
    #[arg(long, value_enum, default_value = "alora")]
    pub mode: AdapterMode,
    /// Only these steps (repeatable; default: every dataset in --data).
    #[arg(long)]
    pub only: Vec<String>,
    /// Examples per optimizer step (gradient accumulation).
    #[arg(long, default_value_t = 8)]
    pub batch: u32,
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// Tokens per example (the context is cut from the left beyond it).
    #[arg(long, default_value_t = 4096)]
    pub max_len: u32,
    /// The base model: the small model the adapters are served with (known name or GGUF path),
    /// and its decoding/training threads.
    #[command(flatten)]
    pub engine: EngineArgs,
    #[arg(long)]
    pub json: bool,
}

/// The adapters' default home.
pub fn default_adapters_dir() -> PathBuf {
    models::cache_dir().join("adapters")
}

/// Where `training/` lives: `$CAREFLOW_TRAINING_DIR`, else the repository's.
fn training_dir() -> PathBuf {
    std::env::var_os("CAREFLOW_TRAINING_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../training")))
}

/// The Python that trains: `$CAREFLOW_TRAINING_PYTHON`, else the venv scripts/setup.sh makes
/// (`<cache>/venv`), else `python3`.
fn training_python() -> PathBuf {
    if let Some(p) = std::env::var_os("CAREFLOW_TRAINING_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = models::cache_dir().join("venv/bin/python");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("python3")
}

fn python_command(python: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(python);
    let dir = training_dir();
    let path = match std::env::var_os("PYTHONPATH") {
        Some(p) if !p.is_empty() => {
            let mut joined = dir.into_os_string();
            joined.push(":");
            joined.push(p);
            joined
        }
        _ => dir.into_os_string(),
    };
    cmd.env("PYTHONPATH", path)
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .env("PYTHONUNBUFFERED", "1")
        .env("TOKENIZERS_PARALLELISM", "false");
    cmd
}

/// Fails with what to do when the training environment is not there.
fn check_training_env(python: &Path) -> Result<()> {
    let hint = format!(
        "run `CAREFLOW_WITH_TRAINING=1 scripts/setup.sh` (it creates {} with the pinned packages \
         of training/pyproject.toml), or set CAREFLOW_TRAINING_PYTHON to a Python that has them",
        models::cache_dir().join("venv").display()
    );
    if !training_dir().join("careflow_training").is_dir() {
        bail!(
            "the training package is not at {} (set CAREFLOW_TRAINING_DIR to the repository's training/)",
            training_dir().display()
        );
    }
    let out = python_command(python)
        .args([
            "-c",
            "import torch, transformers, peft, gguf, careflow_training",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err.lines().last().unwrap_or("").to_string();
            bail!(
                "the training environment is missing: {} cannot import the training packages ({last}).\nhint: {hint}",
                python.display()
            )
        }
        Err(e) => bail!(
            "the training environment is missing: cannot run {} ({e}).\nhint: {hint}",
            python.display()
        ),
    }
}

/// Checks every line of a chat dataset; the first bad one is named (`FILE:LINE: why`).
pub fn check_dataset(path: &Path) -> Result<usize> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        check_chat_line(line).map_err(|why| anyhow!("{}:{}: {why}", path.display(), i + 1))?;
        n += 1;
    }
    if n == 0 {
        bail!("{}: the dataset has no examples", path.display());
    }
    Ok(n)
}

fn check_chat_line(line: &str) -> std::result::Result<Value, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON ({e})"))?;
    let msgs = v
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("no \"messages\" array (a chat example needs one)")?;
    for (i, m) in msgs.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or_default();
        if !["system", "user", "assistant"].contains(&role) {
            return Err(format!(
                "messages[{i}].role is {}, not one of system, user, assistant",
                m["role"]
            ));
        }
        let content = m["content"]
            .as_str()
            .ok_or_else(|| format!("messages[{i}].content is not a string"))?;
        if content.contains("<|im_start|>") || content.contains("<|im_end|>") {
            return Err(format!("messages[{i}].content contains chat markup"));
        }
    }
    let n = msgs.len();
    if msgs[n - 1]["role"] != "assistant" {
        return Err("the last message must be the assistant's answer (the target)".into());
    }
    if msgs[n - 1]["content"]
        .as_str()
        .is_none_or(|c| c.trim().is_empty())
    {
        return Err("the assistant's answer is empty".into());
    }
    if n < 2 || msgs[n - 2]["role"] != "user" {
        return Err("the answer must follow the step's user message".into());
    }
    Ok(v)
}

/// The datasets in `dir` (`<step>.jsonl`), filtered by `only`.
fn datasets(dir: &Path, only: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .filter_map(|p| {
            let step = p.file_stem()?.to_string_lossy().into_owned();
            Some((step, p))
        })
        .collect();
    found.sort();
    for s in only {
        if !found.iter().any(|(f, _)| f == s) {
            bail!("--only {s}: there is no {s}.jsonl in {}", dir.display());
        }
    }
    if !only.is_empty() {
        found.retain(|(s, _)| only.contains(s));
    }
    if found.is_empty() {
        bail!(
            "no datasets (<step>.jsonl) in {}: run `careflow distill generate --out {}` first",
            dir.display(),
            dir.display()
        );
    }
    Ok(found)
}

/// What one trainer run reported.
#[derive(Debug, Default)]
struct TrainRun {
    metrics: Value,
    manifest: Option<PathBuf>,
    error: Option<String>,
}

async fn train(a: TrainArgs) -> Result<()> {
    if a.check_env {
        let python = training_python();
        check_training_env(&python)?;
        println!(
            "training environment ok: {} with {}",
            python.display(),
            training_dir().display()
        );
        return Ok(());
    }
    let data = a
        .data
        .clone()
        .ok_or_else(|| anyhow!("--data DIR: the datasets of `careflow distill generate`"))?;
    let sets = datasets(&data, &a.only)?;
    let mut sizes = Vec::new();
    for (_, path) in &sets {
        sizes.push(check_dataset(path)?);
    }
    let base = a.engine.config()?.model;
    let python = training_python();
    check_training_env(&python)?;
    let out = a.out.clone().unwrap_or_else(default_adapters_dir);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let threads = a.engine.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });

    let mut results: Vec<(String, usize, TrainRun)> = Vec::new();
    for ((step, path), n) in sets.iter().zip(sizes) {
        let mut cmd = python_command(&python);
        cmd.args(["-m", "careflow_training.train", "--base"])
            .arg(&base)
            .arg("--dataset")
            .arg(path)
            .args(["--step", step, "--mode", a.mode.name()])
            .args(["--rank", &a.rank.to_string()])
            .args(["--steps", &a.steps.to_string()])
            .args(["--batch", &a.batch.to_string()])
            .args(["--lr", &a.lr.to_string()])
            .args(["--max-len", &a.max_len.to_string()])
            .args(["--threads", &threads.to_string(), "--out"])
            .arg(&out);
        let log = out.join(format!("{step}.train.log"));
        let pb = output::progress(
            u64::from(a.steps),
            "{msg:40} [{bar:30}] {pos}/{len} eta {eta}",
            format!("{step}: loading the base"),
        );
        let run = {
            let pb = pb.clone();
            let step = step.clone();
            let log = log.clone();
            tokio::task::spawn_blocking(move || run_trainer(cmd, &log, &step, &pb))
                .await
                .map_err(|e| anyhow!("the trainer thread failed: {e}"))??
        };
        pb.finish_and_clear();
        if let Some(e) = &run.error {
            bail!(
                "training the `{step}` adapter failed: {e}\n(full log: {})",
                log.display()
            );
        }
        results.push((step.clone(), n, run));
    }

    // Every adapter must load in the engine (manifest, base sha256, llama.cpp's checks) and
    // change the step's logits; its greedy probe is compared with the trainer's.
    let mut adapters = Vec::new();
    for (step, _, run) in &results {
        let manifest = run
            .manifest
            .clone()
            .ok_or_else(|| anyhow!("the `{step}` trainer did not report its manifest"))?;
        adapters.push(AdapterConfig::from_manifest(&manifest)?);
    }
    let engine = EngineConfig {
        adapters: adapters.clone(),
        threads: a.engine.threads,
        kv_cells: 8192,
        max_sequences: 4,
        ..EngineConfig::for_model(&base)
    }
    .build()
    .context("loading the trained adapters in the engine")?;
    let mut rows = Vec::new();
    let mut report = Vec::new();
    for ((step, n, run), adapter) in results.iter().zip(&adapters) {
        let (_, dataset) = sets
            .iter()
            .find(|(s, _)| s == step)
            .ok_or_else(|| anyhow!("dataset of {step}"))?;
        let check = engine_check(&engine, &adapter.name, dataset, &run.metrics).await?;
        let m = &run.metrics;
        rows.push(vec![
            step.clone(),
            a.mode.name().to_string(),
            n.to_string(),
            format!("{} -> {}", m["train_loss_first"], m["train_loss_last"]),
            // Forward + backward alone when the trainer reports it (the base's context passes
            // excluded), else everything in the training loop.
            format!(
                "{}",
                if m["train_tokens_per_s"].is_null() {
                    &m["tokens_per_s"]
                } else {
                    &m["train_tokens_per_s"]
                }
            ),
            format!("{}", m["total_seconds"]),
            format!("{:.3}", check["logit_change"].as_f64().unwrap_or_default()),
            format!("{}/{}", check["probe_match"], check["probe_tokens"]),
            adapter.path.display().to_string(),
        ]);
        report.push(json!({
            "step": step,
            "adapter": adapter.name,
            "manifest": adapter.path,
            "examples": n,
            "metrics": m,
            "engine_check": check,
        }));
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"out": out, "adapters": report}))?
        );
    } else {
        output::table(
            &[
                "step",
                "mode",
                "examples",
                "loss",
                "tokens/s",
                "seconds",
                "logit change",
                "probe",
                "manifest",
            ],
            &rows,
        );
        println!(
            "every adapter loaded in the engine; use them with [small] adapters = [{{ name = \"STEP\", path = \"{}/STEP.json\" }}] and [run.adapters]",
            out.display()
        );
    }
    Ok(())
}

/// Runs one trainer, feeding `pb` from its JSON lines; its standard error goes to `log`.
fn run_trainer(
    mut cmd: std::process::Command,
    log: &Path,
    step: &str,
    pb: &indicatif::ProgressBar,
) -> Result<TrainRun> {
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(log_file)
        .stdin(std::process::Stdio::null())
        .spawn()
        .context("starting the trainer")?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("the trainer has no standard output"))?;
    let mut run = TrainRun::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(ev) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        match ev["event"].as_str() {
            Some("start") => {
                if let Some(n) = ev["steps"].as_u64() {
                    pb.set_length(n);
                }
                pb.set_message(format!("{step}: loading the base"));
            }
            Some("loaded") => pb.set_message(format!("{step}: training")),
            Some("step") => {
                tracing::info!(step, progress = %line, "training");
                pb.set_position(ev["step"].as_u64().unwrap_or(0));
                pb.set_message(format!(
                    "{step}: loss {:.3}, {} tok/s",
                    ev["loss"].as_f64().unwrap_or_default(),
                    ev["tokens_per_s"]
                ));
            }
            Some("done") => {
                run.metrics = ev["metrics"].clone();
                run.manifest = ev["manifest"].as_str().map(PathBuf::from);
            }
            Some("error") => {
                run.error = ev["message"].as_str().map(str::to_string);
            }
            _ => {}
        }
    }
    let status = child.wait().context("waiting for the trainer")?;
    if !status.success() && run.error.is_none() {
        let tail: Vec<String> = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .rev()
            .take(8)
            .map(str::to_string)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        run.error = Some(format!(
            "the trainer exited with {status}:\n{}",
            tail.join("\n")
        ));
    }
    if run.error.is_none() && run.manifest.is_none() {
        run.error = Some("the trainer ended without reporting its adapter".into());
    }
    Ok(run)
}

/// The example at `line` (1-based) of a dataset.
fn dataset_line(path: &Path, line: u64) -> Result<Value> {
    let text = std::fs::read_to_string(path)?;
    let l = text
        .lines()
        .nth(line.saturating_sub(1) as usize)
        .ok_or_else(|| anyhow!("{}: no line {line}", path.display()))?;
    check_chat_line(l).map_err(|e| anyhow!("{}:{line}: {e}", path.display()))
}

/// Split of an example: the system prefix, the context turns, the step's prompt, the answer.
struct Parts {
    prefix: Vec<ChatMessage>,
    context: Vec<ChatMessage>,
    prompt: String,
    answer: String,
}

fn parts(example: &Value) -> Result<Parts> {
    let msgs: Vec<ChatMessage> = example["messages"]
        .as_array()
        .ok_or_else(|| anyhow!("no messages"))?
        .iter()
        .map(|m| {
            ChatMessage::new(
                m["role"].as_str().unwrap_or("user"),
                m["content"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let n = msgs.len();
    if n < 2 {
        bail!("an example needs the step's prompt and answer");
    }
    let start = usize::from(msgs[0].role == "system");
    Ok(Parts {
        prefix: msgs[..start].to_vec(),
        context: msgs[start..n - 2].to_vec(),
        prompt: msgs[n - 2].content.clone(),
        answer: msgs[n - 1].content.clone(),
    })
}

/// One step answered from the example's context: the prefix (cached), the context under the
/// base model, then the step's prompt under `adapter`.
async fn answer_step(
    engine: &dyn Engine,
    p: &Parts,
    adapter: Option<String>,
    generate: GenerateParams,
    return_logits: bool,
) -> Result<(Option<careflow_engine::Generation>, Option<Vec<f32>>)> {
    let s = engine
        .open(OpenSession {
            prefix: p.prefix.clone(),
            cache_prefix: true,
            ..Default::default()
        })
        .await?;
    let result = async {
        if !p.context.is_empty() {
            engine
                .turn(
                    s.id,
                    Turn {
                        messages: p.context.clone(),
                        ..Default::default()
                    },
                )
                .await?;
        }
        engine
            .turn(
                s.id,
                Turn {
                    messages: vec![ChatMessage::user(p.prompt.clone())],
                    adapter,
                    generate: Some(generate),
                    return_logits,
                    ..Default::default()
                },
            )
            .await
    }
    .await;
    let _ = engine.close(s.id).await;
    let out = result?;
    Ok((out.generation, out.logits))
}

/// The adapter changes the step's logits, and its greedy continuation matches the trainer's.
async fn engine_check(
    engine: &careflow_engine::EmbeddedEngine,
    adapter: &str,
    dataset: &Path,
    metrics: &Value,
) -> Result<Value> {
    let probe = &metrics["probe"];
    let line = probe["example_line"].as_u64().unwrap_or(1);
    let want: Vec<i64> = probe["adapter"]["tokens"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let example = dataset_line(dataset, line)?;
    let p = parts(&example)?;
    let n = want.len().max(8);
    let (with_g, with_l) = answer_step(
        engine,
        &p,
        Some(adapter.to_string()),
        GenerateParams::text(n),
        true,
    )
    .await?;
    let (without_g, without_l) =
        answer_step(engine, &p, None, GenerateParams::text(n), true).await?;
    let change = match (with_l, without_l) {
        (Some(a), Some(b)) => a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max),
        _ => 0.0,
    };
    let got: Vec<i64> = with_g
        .as_ref()
        .map(|g| g.tokens.iter().map(|t| i64::from(*t)).collect())
        .unwrap_or_default();
    let matching = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
    Ok(json!({
        "loads": true,
        "logit_change": change,
        "example_line": line,
        "greedy_with_adapter": with_g.map(|g| g.text).unwrap_or_default(),
        "greedy_without": without_g.map(|g| g.text).unwrap_or_default(),
        "probe_tokens": want.len(),
        "probe_match": matching,
    }))
}

// ---------------------------------------------------------------------------------------------
// eval

#[derive(Args)]
pub struct EvalArgs {
    /// The datasets of `distill generate` (held-in: the data the adapters were trained on).
    #[arg(long)]
    pub data: PathBuf,
    /// The adapters (`<name>.json` manifests) [default: careflow's cache dir/adapters].
    #[arg(long)]
    pub adapters: Option<PathBuf>,
    /// Only these steps (repeatable; default: every step with both a dataset and an adapter).
    #[arg(long)]
    pub only: Vec<String>,
    /// At most this many examples per step (and messages through the workflow).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Skip the final-disposition comparison through the whole workflow.
    #[arg(long)]
    pub no_workflow: bool,
    /// The student: the small model the adapters were trained for.
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub knowledge: KnowledgeArgs,
    /// A workflow file instead of the built-in triage workflow (the one the traces came from).
    #[arg(long)]
    pub workflow: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// The enum and boolean fields of a step's output schema: the fields that decide something.
fn key_fields(schema: &Value) -> Vec<String> {
    schema["properties"]
        .as_object()
        .map(|props| {
            props
                .iter()
                .filter(|(_, p)| p.get("enum").is_some() || p["type"] == "boolean")
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Default, Clone, Copy)]
struct Tally {
    n: u64,
    exact: u64,
    key: u64,
    valid: u64,
}

impl Tally {
    fn add(&mut self, got: &Value, want: &Value, keys: &[String]) {
        self.n += 1;
        if !got.is_null() {
            self.valid += 1;
        }
        if got == want {
            self.exact += 1;
        }
        // Without enum or boolean fields (a free-text step) the key fields are the answer.
        let key_match = if keys.is_empty() {
            got == want
        } else {
            keys.iter().all(|k| got.get(k) == want.get(k))
        };
        if !got.is_null() && key_match {
            self.key += 1;
        }
    }
    fn rate(x: u64, n: u64) -> f64 {
        if n == 0 {
            0.0
        } else {
            x as f64 / n as f64
        }
    }
    fn json(&self) -> Value {
        json!({
            "n": self.n,
            "exact": Self::rate(self.exact, self.n),
            "key_fields": Self::rate(self.key, self.n),
            "valid_json": Self::rate(self.valid, self.n),
        })
    }
}

async fn eval(a: EvalArgs) -> Result<()> {
    let adapters_dir = a.adapters.clone().unwrap_or_else(default_adapters_dir);
    let manifests: Vec<(PathBuf, AdapterManifest)> = careflow_engine::manifest::list(&adapters_dir)
        .with_context(|| format!("reading {}", adapters_dir.display()))?
        .into_iter()
        .filter_map(|(p, m)| m.ok().map(|m| (p, m)))
        .collect();
    let sets = datasets(&a.data, &a.only)?;
    let mut pairs: Vec<(String, PathBuf, PathBuf, AdapterManifest)> = Vec::new();
    for (step, data) in &sets {
        match manifests.iter().find(|(_, m)| &m.step == step) {
            Some((mp, m)) => pairs.push((step.clone(), data.clone(), mp.clone(), m.clone())),
            None if a.only.contains(step) => bail!(
                "--only {step}: no adapter for step `{step}` in {}",
                adapters_dir.display()
            ),
            None => {}
        }
    }
    if pairs.is_empty() {
        bail!(
            "no step has both a dataset in {} and an adapter in {}: run `careflow distill train` first",
            a.data.display(),
            adapters_dir.display()
        );
    }
    let mut config = a.engine.config()?;
    config.adapters = pairs
        .iter()
        .map(|(_, _, mp, m)| AdapterConfig {
            name: m.name.clone(),
            path: mp.clone(),
            scale: 1.0,
        })
        .collect();
    config.kv_cells = 16384;
    config.max_sequences = 6;
    let engine = Arc::new(config.build().context("starting the student engine")?);
    let student = engine.info().name.clone();

    let mut step_reports = Vec::new();
    let mut rows = Vec::new();
    let mut teacher = String::new();
    let mut finals: BTreeMap<String, (String, Option<String>, String)> = BTreeMap::new();
    for (step, data, _, m) in &pairs {
        let text = std::fs::read_to_string(data)?;
        let mut examples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v =
                check_chat_line(line).map_err(|e| anyhow!("{}:{}: {e}", data.display(), i + 1))?;
            examples.push(v);
        }
        if let Some(n) = a.limit {
            examples.truncate(n);
        }
        let pb = output::progress(
            examples.len() as u64,
            "{msg:24} [{bar:30}] {pos}/{len} eta {eta}",
            format!("step {step}"),
        );
        let (mut with, mut without) = (Tally::default(), Tally::default());
        let mut keys = Vec::new();
        for ex in &examples {
            let meta = &ex["meta"];
            if teacher.is_empty() {
                teacher = meta["teacher"].as_str().unwrap_or_default().to_string();
            }
            if let (Some(id), Some(msg), Some(d)) = (
                meta["id"].as_str(),
                meta["message"].as_str(),
                meta["teacher_disposition"].as_str(),
            ) {
                finals.entry(id.to_string()).or_insert((
                    msg.to_string(),
                    meta["teacher_proposed"].as_str().map(str::to_string),
                    d.to_string(),
                ));
            }
            let p = parts(ex)?;
            let want: Value = serde_json::from_str(&p.answer).unwrap_or(Value::Null);
            let schema = meta["schema"].clone();
            keys = key_fields(&schema);
            let max_tokens = meta["max_tokens"].as_u64().unwrap_or(140) as usize;
            let params = || {
                if schema.is_null() {
                    GenerateParams::text(max_tokens)
                } else {
                    GenerateParams::json(max_tokens, schema.clone())
                }
            };
            for (adapter, tally) in [(Some(m.name.clone()), &mut with), (None, &mut without)] {
                let (g, _) = answer_step(engine.as_ref(), &p, adapter, params(), false).await?;
                let got: Value = g
                    .and_then(|g| serde_json::from_str(&g.text).ok())
                    .unwrap_or(Value::Null);
                tally.add(&got, &want, &keys);
            }
            pb.inc(1);
            tracing::info!(step = %step, done = pb.position(), "student answered");
        }
        pb.finish_and_clear();
        rows.push(vec![
            step.clone(),
            with.n.to_string(),
            format!("{:.2}", Tally::rate(with.exact, with.n)),
            format!("{:.2}", Tally::rate(without.exact, without.n)),
            if keys.is_empty() {
                "-".into()
            } else {
                format!(
                    "{:.2} vs {:.2} ({})",
                    Tally::rate(with.key, with.n),
                    Tally::rate(without.key, without.n),
                    keys.join(", ")
                )
            },
        ]);
        step_reports.push(json!({
            "step": step,
            "adapter": m.name,
            "mode": m.mode,
            "key_fields": keys,
            "with_adapter": with.json(),
            "without_adapter": without.json(),
        }));
    }

    let mut final_report = Value::Null;
    if !a.no_workflow && !finals.is_empty() {
        let (rules, guidelines) = a.knowledge.load()?;
        let def = match &a.workflow {
            Some(p) => careflow_workflow::WorkflowDef::load(p)?,
            None => careflow_workflow::WorkflowDef::triage()?,
        };
        let mut msgs: Vec<(String, Option<String>, String)> = finals.into_values().collect();
        if let Some(n) = a.limit {
            msgs.truncate(n);
        }
        let pb = output::progress(
            msgs.len() as u64 * 2,
            "{msg:24} [{bar:30}] {pos}/{len} eta {eta}",
            "final disposition",
        );
        let mut result = Map::new();
        for (label, with_adapters) in [("with_adapters", true), ("without_adapters", false)] {
            let run = WorkflowConfig {
                mode: Mode::StatefulPrefixCache,
                sql_step: false,
                adapters: if with_adapters {
                    pairs
                        .iter()
                        .map(|(s, _, _, m)| (s.clone(), m.name.clone()))
                        .collect()
                } else {
                    BTreeMap::new()
                },
                ..Default::default()
            };
            let wf =
                TriageWorkflow::new(engine.clone(), None, rules.clone(), guidelines.clone(), run)?
                    .with_definition(def.clone())?;
            let (mut agree, mut proposed_agree, mut n) = (0u64, 0u64, 0u64);
            // Tokens computed and reused per request, and those of the adapted steps alone: an
            // aLoRA step must not cost a token more than the same step without its adapter.
            let (mut computed, mut reused, mut adapted) = (0u64, 0u64, 0u64);
            for (msg, teacher_proposed, teacher_final) in &msgs {
                let outcome = wf
                    .run(TriageRequest {
                        message: PatientMessage::parse(msg)?,
                        patient: None,
                    })
                    .await?;
                n += 1;
                computed += outcome.totals.computed;
                reused += outcome.totals.reused;
                adapted += outcome
                    .steps
                    .iter()
                    .filter(|s| pairs.iter().any(|(step, _, _, _)| step == &s.step))
                    .map(|s| s.usage.computed)
                    .sum::<u64>();
                tracing::info!(run = label, done = n, "workflow request");
                if outcome.disposition.label() == teacher_final {
                    agree += 1;
                }
                if outcome.proposed.map(|d| d.label()) == teacher_proposed.as_deref() {
                    proposed_agree += 1;
                }
                pb.inc(1);
            }
            result.insert(
                label.into(),
                json!({
                    "n": n,
                    "final_disposition": Tally::rate(agree, n),
                    "proposed_disposition": Tally::rate(proposed_agree, n),
                    "computed_per_request": Tally::rate(computed, n),
                    "reused_per_request": Tally::rate(reused, n),
                    "adapted_steps_computed_per_request": Tally::rate(adapted, n),
                }),
            );
        }
        pb.finish_and_clear();
        final_report = Value::Object(result);
    }

    let report = json!({
        "teacher": teacher,
        "student": student,
        "data": a.data,
        "adapters": adapters_dir,
        "held_in": true,
        "steps": step_reports,
        "workflow": final_report,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("student {student} vs teacher {teacher}, on held-in data (agreement):");
        output::table(
            &[
                "step",
                "examples",
                "exact: with adapter",
                "without",
                "key fields: with vs without",
            ],
            &rows,
        );
        if !final_report.is_null() {
            let w = &final_report["with_adapters"];
            let wo = &final_report["without_adapters"];
            println!(
                "final disposition through the workflow ({} messages): {:.2} with adapters vs {:.2} without (proposed: {:.2} vs {:.2})",
                w["n"],
                w["final_disposition"].as_f64().unwrap_or_default(),
                wo["final_disposition"].as_f64().unwrap_or_default(),
                w["proposed_disposition"].as_f64().unwrap_or_default(),
                wo["proposed_disposition"].as_f64().unwrap_or_default(),
            );
            println!(
                "tokens per request: computed {:.0} vs {:.0}, reused {:.0} vs {:.0}; the adapted steps computed {:.0} vs {:.0}",
                w["computed_per_request"].as_f64().unwrap_or_default(),
                wo["computed_per_request"].as_f64().unwrap_or_default(),
                w["reused_per_request"].as_f64().unwrap_or_default(),
                wo["reused_per_request"].as_f64().unwrap_or_default(),
                w["adapted_steps_computed_per_request"].as_f64().unwrap_or_default(),
                wo["adapted_steps_computed_per_request"].as_f64().unwrap_or_default(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_written_as_the_constrained_decoder_writes_it() {
        let v: Value = serde_json::from_str(
            r#"{"complaint":"back pain","needs_record":true,"cited":["a","b"],"n":[]}"#,
        )
        .unwrap();
        assert_eq!(
            compact_json(&v),
            r#"{"complaint": "back pain", "needs_record": true, "cited": ["a", "b"], "n": []}"#
        );
    }

    #[test]
    fn synthetic_messages_are_deterministic_distinct_and_mixed() {
        let rules = careflow_knowledge::RuleSet::embedded().unwrap();
        let a = synthetic_messages(60, 3, &rules);
        assert_eq!(a, synthetic_messages(60, 3, &rules));
        assert_ne!(a, synthetic_messages(60, 4, &rules));
        assert_eq!(a.len(), 60);
        assert_eq!(a.iter().collect::<BTreeSet<_>>().len(), 60);
        let fired = a
            .iter()
            .filter(|m| {
                rules
                    .evaluate(m, &Default::default())
                    .floor
                    .is_some_and(|f| !f.is_below(Disposition::UrgentSameDay))
            })
            .count();
        assert!(fired >= 5, "red-flag phrasings: {fired}");
        assert!(a.iter().all(|m| PatientMessage::parse(m).is_ok()));
    }

    #[test]
    fn a_bad_chat_line_says_why() {
        assert!(check_chat_line("{").unwrap_err().contains("not valid JSON"));
        assert!(
            check_chat_line(r#"{"messages": [{"role": "user", "content": "x"}]}"#)
                .unwrap_err()
                .contains("assistant")
        );
        assert!(check_chat_line(
            r#"{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "{}"}]}"#
        )
        .is_ok());
    }

    #[test]
    fn key_fields_are_the_enum_and_boolean_fields() {
        let s = json!({"properties": {
            "complaint": {"type": "string"},
            "needs_record": {"type": "boolean"},
            "complexity": {"enum": ["simple", "complex"]}
        }});
        assert_eq!(key_fields(&s), vec!["needs_record", "complexity"]);
    }
}
