//! The subcommands other than `bench`.

use crate::config::{Overrides, RuntimeConfig};
use crate::output;
use crate::provision::{self, Source};
use anyhow::{anyhow, bail, Context, Result};
use careflow_core::{PatientId, PatientMessage};
use careflow_engine::{models, EmbeddedEngine, EngineConfig};
use careflow_knowledge::{Guidelines, RuleSet};
use careflow_records::Records;
use careflow_workflow::{Mode, TriageRequest, WorkflowConfig};
use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

/// The message the quick start triages.
pub const SEED_MESSAGE: &str = "I've had sharp lower back pain for 3 days. Should I be worried?";

#[derive(Args, Clone)]
pub struct EngineArgs {
    /// A known model name (see `careflow model list`) or a path to a GGUF file
    /// [default: smollm2-135m].
    #[arg(long, env = "CAREFLOW_MODEL")]
    pub model: Option<String>,
    /// Decoding threads (default: all cores). Never more than the cores that are free.
    #[arg(long, env = "CAREFLOW_THREADS")]
    pub threads: Option<usize>,
}

impl EngineArgs {
    pub fn name(&self) -> &str {
        self.model.as_deref().unwrap_or(models::DEFAULT_MODEL)
    }

    pub fn config(&self) -> Result<EngineConfig> {
        let path = models::resolve(self.name())
            .map_err(|e| anyhow!("{e}\nhint: `careflow model pull {}`", models::DEFAULT_MODEL))?;
        Ok(EngineConfig {
            threads: self.threads,
            ..EngineConfig::for_model(path)
        })
    }

    pub fn start(&self) -> Result<EmbeddedEngine> {
        Ok(self.config()?.build()?)
    }
}

#[derive(Args, Clone)]
pub struct DbArgs {
    /// `sqlite://PATH` or `postgres://…` (default: a SQLite file in careflow's data directory).
    #[arg(long, env = "CAREFLOW_DATABASE_URL")]
    pub database: Option<String>,
}

impl DbArgs {
    pub fn url(&self) -> String {
        self.database.clone().unwrap_or_else(default_database_url)
    }
    pub async fn connect(&self) -> Result<Records> {
        let url = self.url();
        Records::connect(&url)
            .await
            .with_context(|| format!("connecting to {}", redact(&url)))
    }
}

/// Hides a password in a database URL before it is printed.
pub use careflow_core::redact_url as redact;

pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CAREFLOW_DATA_DIR") {
        return PathBuf::from(d);
    }
    // A dotted home fallback keeps working where no XDG data dir is known.
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local/share"))
        .unwrap_or_else(std::env::temp_dir)
        .join("careflow")
}

pub fn default_database_url() -> String {
    format!("sqlite://{}", data_dir().join("careflow.db").display())
}

/// The OMOP sample shipped in the repository (OHDSI EunomiaDatasets, Apache-2.0).
pub fn bundled_omop_zip() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/omop/Synthea27Nj_5.4.zip"
    ))
}

fn read_message(raw: &OsString) -> Result<PatientMessage> {
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    let bytes = if raw == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the message from standard input")?;
        buf
    } else {
        raw.as_bytes().to_vec()
    };
    Ok(PatientMessage::from_bytes(&bytes)?)
}

/// Where the clinical knowledge comes from: the copies compiled into the binary, or
/// directories an operator maintains. A malformed file stops the command before any work.
#[derive(Args, Clone, Default)]
pub struct KnowledgeArgs {
    /// A directory of red-flag rule files (`*.toml`) to use instead of the built-in rules.
    #[arg(long, env = "CAREFLOW_RULES_DIR")]
    pub rules: Option<PathBuf>,
    /// A directory of guideline files (`*.md`) to use instead of the built-in corpus.
    #[arg(long, env = "CAREFLOW_GUIDELINES_DIR")]
    pub guidelines: Option<PathBuf>,
}

impl KnowledgeArgs {
    pub fn load(&self) -> Result<(RuleSet, Guidelines)> {
        let rules = match &self.rules {
            Some(dir) => RuleSet::from_dir(dir)
                .with_context(|| format!("loading red-flag rules from {}", dir.display()))?,
            None => RuleSet::embedded().context("loading the built-in red-flag rules")?,
        };
        let guidelines = match &self.guidelines {
            Some(dir) => Guidelines::from_dir(dir)
                .with_context(|| format!("loading guidelines from {}", dir.display()))?,
            None => Guidelines::embedded().context("loading the built-in guideline corpus")?,
        };
        Ok((rules, guidelines))
    }
}

#[derive(Args)]
pub struct TriageArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub knowledge: KnowledgeArgs,
    /// The date the record is read as of (YYYY-MM-DD; default today). The bundled sample's
    /// records end in October 2022.
    #[arg(long)]
    pub today: Option<String>,
    /// The patient (OMOP person_id) the message comes from; their record is read, scoped to them.
    #[arg(long)]
    pub patient: Option<String>,
    /// How steps reach the engine.
    #[arg(long, value_enum, default_value = "stateful-prefix-cache")]
    pub mode: ModeArg,
    #[command(flatten)]
    pub setup: SetupArgs,
    /// Print the outcome as JSON (top-level `disposition`).
    #[arg(long)]
    pub json: bool,
    /// The patient's message (`-` reads standard input).
    pub message: OsString,
}

/// What runs the workflow: the config file and the parts it names.
#[derive(Args, Clone, Default)]
pub struct SetupArgs {
    /// The configuration file (TOML; see `careflow.example.toml`). Environment variables and
    /// flags override it.
    #[arg(long, env = "CAREFLOW_CONFIG")]
    pub config: Option<PathBuf>,
    /// A workflow file (TOML) instead of the built-in triage workflow, e.g.
    /// `data/workflows/medication_refill.toml`.
    #[arg(long, env = "CAREFLOW_WORKFLOW")]
    pub workflow: Option<PathBuf>,
    /// A second local model as the frontier tier that escalations go to (a known model name
    /// or a GGUF path), e.g. `qwen2.5-coder-0.5b`. Remote frontiers (OpenAI-compatible,
    /// Anthropic) are set in the config file's `[frontier]`.
    #[arg(long, env = "CAREFLOW_FRONTIER_MODEL")]
    pub frontier: Option<String>,
    /// A prices file instead of the built-in dated one.
    #[arg(long, env = "CAREFLOW_PRICES")]
    pub prices: Option<PathBuf>,
    /// Do not write the outcome's steps to the cost ledger.
    #[arg(long)]
    pub no_ledger: bool,
}

impl SetupArgs {
    pub fn resolve(&self, engine: &EngineArgs, db: &DbArgs) -> Result<RuntimeConfig> {
        RuntimeConfig::resolve(&Overrides {
            config: self.config.clone(),
            model: engine.model.clone(),
            threads: engine.threads,
            database: db.database.clone(),
            workflow: self.workflow.clone(),
            frontier_model: self.frontier.clone(),
            prices: self.prices.clone(),
            no_ledger: self.no_ledger,
        })
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    Stateless,
    Stateful,
    StatefulPrefixCache,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Stateless => Mode::Stateless,
            ModeArg::Stateful => Mode::Stateful,
            ModeArg::StatefulPrefixCache => Mode::StatefulPrefixCache,
        }
    }
}

pub async fn triage(a: TriageArgs) -> Result<()> {
    let message = read_message(&a.message)?;
    let knowledge = a.knowledge.load()?;
    let patient = a
        .patient
        .as_deref()
        .map(str::parse::<PatientId>)
        .transpose()?;
    let rc = a.setup.resolve(&a.engine, &a.db)?;
    rc.check()?;
    let records = match patient {
        Some(_) => Some(connect(&rc.database_url()).await?),
        None => None,
    };
    let engine = rc.small_engine()?;
    let mut run = rc.file.run.clone();
    run.mode = a.mode.into();
    if a.today.is_some() {
        run.today = a.today.clone();
    }
    let (wf, ledger) = rc.build(engine, records, knowledge, run).await?;
    let outcome = wf.run(TriageRequest { message, patient }).await?;
    if let Some(l) = &ledger {
        l.record(&outcome.ledger_entries())
            .await
            .context("writing the outcome to the cost ledger")?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        output::print_outcome(&outcome);
    }
    Ok(())
}

#[derive(Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub knowledge: KnowledgeArgs,
    /// The date the record is read as of: the bundled sample's records end in October 2022.
    #[arg(long, default_value = "2022-10-15")]
    pub today: String,
    /// The OMOP zip loaded into an empty database.
    #[arg(long)]
    pub omop: Option<PathBuf>,
    /// The message to triage.
    #[arg(long, default_value = SEED_MESSAGE)]
    pub message: String,
    #[arg(long)]
    pub json: bool,
}

pub async fn demo(a: DemoArgs) -> Result<()> {
    let (rules, guidelines) = a.knowledge.load()?;
    // 1. The default model, from the cache or pulled.
    if a.engine.name() == models::DEFAULT_MODEL {
        let known = models::find(models::DEFAULT_MODEL)
            .ok_or_else(|| anyhow!("no default model in the registry"))?;
        if !known.path().is_file() {
            provision::pull(known, Source::Auto).await?;
        }
    }
    // 2. Demo records: the bundled OMOP sample, loaded once.
    let records = a.db.connect().await?;
    records.init().await?;
    let persons = records
        .counts()
        .await?
        .into_iter()
        .find(|(t, _)| t == "person")
        .map_or(0, |(_, n)| n);
    if persons == 0 {
        let zip = a.omop.clone().unwrap_or_else(bundled_omop_zip);
        eprintln!("loading demo records from {}", zip.display());
        let pb = progress("loading OMOP rows");
        let report = records
            .load_omop_zip(&zip, Some(careflow_records::SYNTHEA_ZIP_SHA256), &|d, t| {
                pb.set_length(t);
                pb.set_position(d);
            })
            .await?;
        pb.finish_and_clear();
        eprintln!(
            "loaded {} persons into {}",
            report.persons,
            redact(&a.db.url())
        );
    }
    let patient = records
        .patients(1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("the demo database has no patients"))?;
    // 3. The triage.
    eprintln!("triaging as patient {patient}: \"{}\"", a.message);
    let rc = SetupArgs::default().resolve(&a.engine, &a.db)?;
    let engine = Arc::new(rc.small_engine_config()?.build()?);
    let run = WorkflowConfig {
        today: Some(a.today.clone()),
        ..rc.file.run.clone()
    };
    let (wf, ledger) = rc
        .build(engine, Some(records), (rules, guidelines), run)
        .await?;
    let outcome = wf
        .run(TriageRequest {
            message: PatientMessage::parse(&a.message)?,
            patient: Some(patient),
        })
        .await?;
    if let Some(l) = &ledger {
        l.record(&outcome.ledger_entries()).await?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        output::print_outcome(&outcome);
    }
    Ok(())
}

async fn connect(url: &str) -> Result<Records> {
    Records::connect(url)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))
}

fn progress(msg: &'static str) -> ProgressBar {
    output::progress(0, "{msg:20} [{bar:30}] {pos}/{len} eta {eta}", msg)
}

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Fetch a known model into the cache and verify its sha256.
    Pull {
        /// A name from `careflow model list`.
        name: String,
        #[arg(long, value_enum, default_value = "auto")]
        source: Source,
    },
    /// The known models and whether each is in the cache.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub async fn model(c: ModelCommand) -> Result<()> {
    match c {
        ModelCommand::Pull { name, source } => {
            let known = models::find(&name).ok_or_else(|| {
                let names: Vec<&str> = models::KNOWN_MODELS.iter().map(|m| m.name).collect();
                anyhow!("unknown model `{name}` (known: {})", names.join(", "))
            })?;
            let path = provision::pull(known, source).await?;
            println!("{}", path.display());
            Ok(())
        }
        ModelCommand::List { json } => {
            let rows: Vec<serde_json::Value> = models::KNOWN_MODELS
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "name": m.name,
                        "description": m.description,
                        "size": m.size,
                        "sha256": m.sha256,
                        "cached": m.path().is_file(),
                        "path": m.path(),
                        "hub": format!("{}/{}", m.hf_repo, m.hf_file),
                        "wheels": m.wheels.iter().map(|w| format!("{}=={}", w.package, w.version)).collect::<Vec<_>>(),
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let table: Vec<Vec<String>> = models::KNOWN_MODELS
                    .iter()
                    .map(|m| {
                        vec![
                            m.name.to_string(),
                            format!("{:.0} MB", m.size as f64 / 1e6),
                            if m.path().is_file() { "yes" } else { "no" }.to_string(),
                            m.description.to_string(),
                        ]
                    })
                    .collect();
                output::table(&["model", "size", "cached", "description"], &table);
            }
            Ok(())
        }
    }
}

#[derive(Subcommand)]
pub enum DbCommand {
    /// Create the tables (idempotent).
    Init {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Load an OMOP CDM CSV zip (e.g. data/omop/Synthea27Nj_5.4.zip).
    LoadOmop {
        #[command(flatten)]
        db: DbArgs,
        path: PathBuf,
        /// Expected sha256 of the zip (the bundled sample's is checked by default).
        #[arg(long)]
        sha256: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run one SELECT for one patient through the same guard and patient scope as the
    /// workflow's Retrieve step (for operators, audits and security tests): prints the rows,
    /// or the reason the statement was refused.
    Query {
        #[command(flatten)]
        db: DbArgs,
        /// The patient (OMOP person_id) the statement is scoped to.
        #[arg(long)]
        patient: String,
        /// Most rows returned (a larger LIMIT is lowered to this).
        #[arg(long, default_value_t = 200)]
        max_rows: u64,
        /// Statement timeout in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        #[arg(long)]
        json: bool,
        /// The SQL statement.
        sql: String,
    },
    /// Generate deterministic synthetic patients.
    Synth {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        persons: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

pub async fn db(c: DbCommand) -> Result<()> {
    match c {
        DbCommand::Init { db } => {
            let r = db.connect().await?;
            r.init().await?;
            println!("initialised {}", redact(&db.url()));
        }
        DbCommand::LoadOmop {
            db,
            path,
            sha256,
            json,
        } => {
            if !path.is_file() {
                bail!("no such file: {}", path.display());
            }
            let expected = sha256.or_else(|| {
                (path.file_name() == bundled_omop_zip().file_name())
                    .then(|| careflow_records::SYNTHEA_ZIP_SHA256.to_string())
            });
            let r = db.connect().await?;
            r.init().await?;
            let pb = progress("loading OMOP rows");
            let report = r
                .load_omop_zip(&path, expected.as_deref(), &|d, t| {
                    pb.set_length(t);
                    pb.set_position(d);
                })
                .await?;
            pb.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                let rows: Vec<Vec<String>> = report
                    .rows_per_table
                    .iter()
                    .map(|(t, n)| vec![t.clone(), n.to_string()])
                    .collect();
                output::table(&["table", "rows"], &rows);
                println!("{} persons", report.persons);
            }
        }
        DbCommand::Query {
            db,
            patient,
            max_rows,
            timeout_ms,
            json,
            sql,
        } => {
            let patient: PatientId = patient.parse()?;
            let r = db.connect().await?;
            let policy = careflow_records::GuardPolicy {
                max_limit: max_rows,
                statement_timeout_ms: timeout_ms,
            };
            let result = r.query_scoped(patient, &sql, &policy).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                let cols: Vec<&str> = result.columns.iter().map(String::as_str).collect();
                let rows: Vec<Vec<String>> = result
                    .rows
                    .iter()
                    .map(|row| {
                        row.iter()
                            .map(|v| match v {
                                serde_json::Value::String(s) => s.clone(),
                                serde_json::Value::Null => "NULL".into(),
                                other => other.to_string(),
                            })
                            .collect()
                    })
                    .collect();
                output::table(&cols, &rows);
                eprintln!("{} rows (patient {patient})", rows.len());
            }
        }
        DbCommand::Synth { db, persons, seed } => {
            let r = db.connect().await?;
            r.init().await?;
            let pb = progress("synthesising persons");
            let n = r
                .synth(persons, seed, &|d, t| {
                    pb.set_length(t);
                    pb.set_position(d);
                })
                .await?;
            pb.finish_and_clear();
            println!("added {n} synthetic persons to {}", redact(&db.url()));
        }
    }
    Ok(())
}
