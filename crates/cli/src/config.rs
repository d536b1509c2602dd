//! careflow's configuration: one layered file (`careflow.toml`), then environment variables,
//! then command-line flags, turned into running parts by [`RuntimeConfig::build`].
//!
//! `careflow.example.toml` at the repository root documents every key. In short:
//!
//! ```toml
//! database = "sqlite:///var/lib/careflow/careflow.db"
//! workflow = "data/workflows/medication_refill.toml"   # default: the built-in triage workflow
//!
//! [small]                      # the small tier: the embedded engine
//! model = "smollm2-135m"       # a known model name or a GGUF path
//! threads = 2
//! price = "local_small"        # its entry in the prices file
//!
//! [frontier]                   # optional: where escalations go
//! kind = "embedded"            # embedded | openai | anthropic
//! model = "qwen2.5-coder-0.5b"
//! price = "local_frontier"
//! # kind = "anthropic", model = "claude-…", api_key_env = "ANTHROPIC_API_KEY", price = "flagship_api"
//!
//! [prices]
//! file = "data/prices.toml"    # default: the built-in dated price list
//!
//! [run]                        # how the workflow runs here (careflow_workflow::WorkflowConfig)
//! mode = "stateful_prefix_cache"
//! step_deadline_ms = 60000
//! [run.cascade]
//! daily_budget_usd = 50.0
//!
//! [ledger]
//! enabled = true
//! ```
//!
//! Environment: `CAREFLOW_CONFIG` (the file), `CAREFLOW_MODEL`, `CAREFLOW_THREADS`,
//! `CAREFLOW_DATABASE_URL`, `CAREFLOW_WORKFLOW`, `CAREFLOW_FRONTIER_MODEL` (an embedded frontier),
//! `CAREFLOW_PRICES`. API keys are read from the variable a remote tier names and never printed.

use crate::commands::{default_database_url, redact};
use anyhow::{anyhow, bail, Context, Result};
use careflow_engine::{models, AdapterConfig, EngineConfig};
use careflow_ledger::{Ledger, Prices};
use careflow_remote::RemoteConfig;
use careflow_workflow::{Budget, Tier, TriageWorkflow, WorkflowConfig, WorkflowDef};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub database: Option<String>,
    pub workflow: Option<PathBuf>,
    pub small: SmallConfig,
    /// Kept as a table: its `kind` says which shape the rest has.
    pub frontier: Option<toml::Table>,
    pub prices: PricesConfig,
    pub run: WorkflowConfig,
    pub ledger: LedgerConfig,
    /// `careflow serve`: listen address, limits, queue, patient-token issuer.
    pub gateway: careflow_gateway::GatewayConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmallConfig {
    pub model: Option<String>,
    pub threads: Option<usize>,
    pub price: String,
    pub adapters: Vec<AdapterConfig>,
    /// The small model on OpenAI-compatible servers (vLLM pods, other careflow gateways)
    /// instead of embedded: `[small.remote]` with `base_url`, or `replicas` for several
    /// (session affinity, health probes, failover). Step adapters are served model names
    /// (`adapters = { plan = "plan", … }` in this table).
    pub remote: Option<RemoteConfig>,
}

impl Default for SmallConfig {
    fn default() -> Self {
        SmallConfig {
            model: None,
            threads: None,
            price: careflow_ledger::tiers::LOCAL_SMALL.into(),
            adapters: Vec::new(),
            remote: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PricesConfig {
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    pub enabled: bool,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig { enabled: true }
    }
}

/// An embedded frontier tier: a second local GGUF model in the same process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddedFrontier {
    #[allow(dead_code)]
    kind: String,
    model: String,
    #[serde(default)]
    threads: Option<usize>,
}

/// Overrides from the command line (flags win over the environment, which wins over the file).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub model: Option<String>,
    pub threads: Option<usize>,
    pub database: Option<String>,
    pub workflow: Option<PathBuf>,
    pub frontier_model: Option<String>,
    pub prices: Option<PathBuf>,
    pub no_ledger: bool,
}

/// The configuration in force, after the layers.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub file: FileConfig,
}

impl RuntimeConfig {
    /// File (flag `--config`, else `CAREFLOW_CONFIG`), then environment, then flags.
    pub fn resolve(o: &Overrides) -> Result<Self> {
        let path = o
            .config
            .clone()
            .or_else(|| std::env::var_os("CAREFLOW_CONFIG").map(PathBuf::from));
        let mut file = match &path {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        // Environment over the file.
        if let Some(v) = env("CAREFLOW_MODEL") {
            file.small.model = Some(v);
        }
        if let Some(v) = env("CAREFLOW_THREADS") {
            file.small.threads = Some(
                v.parse()
                    .map_err(|_| anyhow!("CAREFLOW_THREADS: `{v}` is not a number"))?,
            );
        }
        if let Some(v) = env("CAREFLOW_DATABASE_URL") {
            file.database = Some(v);
        }
        if let Some(v) = env("CAREFLOW_WORKFLOW") {
            file.workflow = Some(PathBuf::from(v));
        }
        if let Some(v) = env("CAREFLOW_PRICES") {
            file.prices.file = Some(PathBuf::from(v));
        }
        if let Some(v) = env("CAREFLOW_FRONTIER_MODEL") {
            file.frontier = Some(embedded_frontier_table(&v));
        }
        // Flags over the environment.
        if let Some(v) = &o.model {
            file.small.model = Some(v.clone());
        }
        if o.threads.is_some() {
            file.small.threads = o.threads;
        }
        if let Some(v) = &o.database {
            file.database = Some(v.clone());
        }
        if let Some(v) = &o.workflow {
            file.workflow = Some(v.clone());
        }
        if let Some(v) = &o.prices {
            file.prices.file = Some(v.clone());
        }
        if let Some(v) = &o.frontier_model {
            file.frontier = Some(embedded_frontier_table(v));
        }
        if o.no_ledger {
            file.ledger.enabled = false;
        }
        Ok(RuntimeConfig { file })
    }

    /// Loads what can be checked without starting an engine (the workflow file, the prices,
    /// the cascade settings), so a typo fails before minutes of model loading.
    pub fn check(&self) -> Result<()> {
        let prices = self.prices()?;
        self.workflow_def()?;
        prices.tier(&self.file.small.price).context("small.price")?;
        if let Some(remote) = &self.file.small.remote {
            self.check_small_remote(remote)?;
        }
        self.file
            .run
            .cascade
            .check()
            .map_err(|e| anyhow!("run.{e}"))?;
        Ok(())
    }

    pub fn database_url(&self) -> String {
        self.file
            .database
            .clone()
            .unwrap_or_else(default_database_url)
    }

    /// The small tier's engine: embedded (the model file, loaded here) or the remote servers of
    /// `[small.remote]`.
    pub fn small_engine(&self) -> Result<Arc<dyn careflow_engine::Engine>> {
        let Some(remote) = &self.file.small.remote else {
            return Ok(Arc::new(
                self.small_engine_config()?
                    .build()
                    .context("starting the small engine")?,
            ));
        };
        self.check_small_remote(remote)?;
        remote.build().map_err(|e| anyhow!("small.remote: {e}"))
    }

    fn check_small_remote(&self, remote: &RemoteConfig) -> Result<()> {
        let small = &self.file.small;
        if small.model.is_some() {
            bail!(
                "small.model: [small.remote] serves the small model; leave small.model (and \
                 CAREFLOW_MODEL, --model) unset, or remove [small.remote]"
            );
        }
        if !small.adapters.is_empty() {
            bail!(
                "small.adapters: GGUF adapters are for the embedded model; a remote server \
                 serves adapters as model names (small.remote.adapters)"
            );
        }
        remote
            .validate()
            .map(|_| ())
            .map_err(|e| anyhow!("small.remote: {e}"))
    }

    pub fn small_engine_config(&self) -> Result<EngineConfig> {
        let name = self
            .file
            .small
            .model
            .clone()
            .unwrap_or_else(|| models::DEFAULT_MODEL.to_string());
        let path = models::resolve(&name)
            .map_err(|e| anyhow!("small.model: {e}\nhint: `careflow model pull {name}`"))?;
        Ok(EngineConfig {
            threads: self.file.small.threads,
            adapters: self.file.small.adapters.clone(),
            ..EngineConfig::for_model(path)
        })
    }

    pub fn prices(&self) -> Result<Prices> {
        Ok(match &self.file.prices.file {
            Some(p) => Prices::load(p)?,
            None => Prices::embedded()?,
        })
    }

    pub fn workflow_def(&self) -> Result<WorkflowDef> {
        Ok(match &self.file.workflow {
            Some(p) => WorkflowDef::load(p)?,
            None => WorkflowDef::triage()?,
        })
    }

    /// The frontier tier, if one is configured (engine started, priced).
    pub fn frontier(&self, prices: &Prices) -> Result<Option<Tier>> {
        let Some(table) = &self.file.frontier else {
            return Ok(None);
        };
        let kind = table
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or_else(|| anyhow!("frontier.kind: missing (embedded, openai or anthropic)"))?;
        let mut table = table.clone();
        let price = match table.remove("price") {
            Some(toml::Value::String(s)) => Some(s),
            Some(_) => bail!("frontier.price: must be the name of a tier in the prices file"),
            None => None,
        };
        let (engine, default_price): (Arc<dyn careflow_engine::Engine>, &str) = match kind {
            "embedded" => {
                let f: EmbeddedFrontier = toml::Value::Table(table)
                    .try_into()
                    .map_err(|e| anyhow!("frontier: {e}"))?;
                let path = models::resolve(&f.model).map_err(|e| {
                    anyhow!(
                        "frontier.model: {e}\nhint: `careflow model pull {}`",
                        f.model
                    )
                })?;
                let config = EngineConfig {
                    threads: f.threads.or(self.file.small.threads),
                    // The frontier sees one compact summary per escalated request.
                    max_sequences: 6,
                    kv_cells: 8192,
                    session_max_tokens: 4096,
                    ..EngineConfig::for_model(path)
                };
                (
                    Arc::new(config.build().context("starting the frontier engine")?),
                    careflow_ledger::tiers::LOCAL_FRONTIER,
                )
            }
            "openai" | "anthropic" => {
                let remote: RemoteConfig = toml::Value::Table(table)
                    .try_into()
                    .map_err(|e| anyhow!("frontier: {e}"))?;
                (
                    remote.build().context("frontier")?,
                    careflow_ledger::tiers::FLAGSHIP_API,
                )
            }
            other => bail!("frontier.kind: `{other}` is not one of embedded, openai, anthropic"),
        };
        let key = price.unwrap_or_else(|| default_price.to_string());
        let tier_price = prices
            .tier(&key)
            .with_context(|| "frontier.price".to_string())?
            .clone();
        Ok(Some(Tier::new("frontier", engine).priced(&key, tier_price)))
    }

    /// The workflow with its tiers, and the ledger its outcomes are written to.
    pub async fn build(
        &self,
        small_engine: Arc<dyn careflow_engine::Engine>,
        records: Option<careflow_records::Records>,
        knowledge: (careflow_knowledge::RuleSet, careflow_knowledge::Guidelines),
        run: WorkflowConfig,
    ) -> Result<(TriageWorkflow, Option<Ledger>)> {
        let prices = self.prices()?;
        let def = self.workflow_def()?;
        let small_price = prices
            .tier(&self.file.small.price)
            .context("small.price")?
            .clone();
        let small =
            Tier::new("small", small_engine.clone()).priced(&self.file.small.price, small_price);
        let (rules, guidelines) = knowledge;
        let mut wf = TriageWorkflow::new(small_engine, records, rules, guidelines, run)?
            .with_definition(def)?
            .with_small_tier(small);
        let ledger = if self.file.ledger.enabled {
            let url = self.database_url();
            if let Some(dir) = url
                .strip_prefix("sqlite://")
                .and_then(|p| Path::new(p).parent())
            {
                std::fs::create_dir_all(dir).ok();
            }
            Some(
                Ledger::connect(&url)
                    .await
                    .with_context(|| format!("opening the ledger at {}", redact(&url)))?,
            )
        } else {
            None
        };
        if let Some(frontier) = self.frontier(&prices)? {
            // The day's spend so far, so a restart does not reset the budget.
            let spent = match &ledger {
                Some(l) => {
                    let day_start = careflow_ledger::now_ms() / careflow_ledger::DAY_MS
                        * careflow_ledger::DAY_MS;
                    l.spent_since(Some(&frontier.price_key), day_start).await?
                }
                None => 0.0,
            };
            let budget = Arc::new(Budget::new(wf.config().cascade.daily_budget_usd, spent));
            wf = wf.with_frontier(frontier).with_budget(budget);
        }
        Ok((wf, ledger))
    }
}

fn embedded_frontier_table(model: &str) -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("kind".into(), toml::Value::String("embedded".into()));
    t.insert("model".into(), toml::Value::String(model.into()));
    t
}

fn load_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow!("config file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../careflow.example.toml"
        ));
        let file = load_file(path).unwrap();
        assert_eq!(file.small.price, "local_small");
        let frontier = file.frontier.as_ref().unwrap();
        assert_eq!(frontier["kind"].as_str(), Some("embedded"));
        assert!(file.ledger.enabled);
        let rc = RuntimeConfig { file };
        rc.check().unwrap();
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[run]\nmod = \"stateless\"\n").unwrap();
        let e = load_file(&p).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("mod"), "{e}");
    }
}
