//! The workflow object ([`TriageWorkflow`]), its configuration, and the outcome of a request.
//! The steps themselves run in [`crate::run`], as the workflow file ([`WorkflowDef`]) says.

use crate::cascade::{Budget, CascadeConfig, Route, Tier};
use crate::conversation::Mode;
use crate::definition::WorkflowDef;
use crate::template::Vars;
use crate::validate::span_probability;
use crate::WorkflowError;
use careflow_core::{Disposition, PatientId, PatientMessage, TokenUsage};
use careflow_engine::{ChatMessage, Engine, Generation};
use careflow_knowledge::{FiredRule, Guidelines, RuleSet};
use careflow_records::Records;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

pub use crate::validate::Decision;

/// Run-time settings of a workflow (the workflow file says what the steps are; this says how
/// they run here). Data, from the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowConfig {
    pub mode: Mode,
    /// Adapter per step name, over the workflow file's (e.g. to benchmark synthetic adapters).
    pub adapters: BTreeMap<String, String>,
    /// Over the validate step's `confidence_threshold`.
    pub confidence_threshold: Option<f32>,
    /// Let the model write SQL for the record where the workflow asks for it (through the guard
    /// and the patient scope); the fixed record summary is always read as well.
    pub sql_step: bool,
    /// The date ages are computed at (YYYY-MM-DD); `None`: today.
    pub today: Option<String>,
    /// Deadline of one model step; past it the step counts as failed (its case escalates).
    pub step_deadline_ms: Option<u64>,
    /// Deadline of the whole request; past it the remaining model steps are skipped and the
    /// case goes to human review.
    pub request_deadline_ms: Option<u64>,
    pub cascade: CascadeConfig,
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        WorkflowConfig {
            mode: Mode::StatefulPrefixCache,
            adapters: BTreeMap::new(),
            confidence_threshold: None,
            sql_step: true,
            today: None,
            step_deadline_ms: None,
            request_deadline_ms: None,
            cascade: CascadeConfig::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TriageRequest {
    pub message: PatientMessage,
    pub patient: Option<PatientId>,
}

/// What one step did and cost.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// The step's name in the workflow file (`frontier` for the cascade's hand-off).
    pub step: String,
    pub kind: String,
    /// `small` or `frontier`.
    pub tier: String,
    /// The tier's entry in the prices file, when it is priced.
    pub price_key: Option<String>,
    pub model: String,
    pub adapter: Option<String>,
    pub usage: TokenUsage,
    pub cost_usd: f64,
    /// Model calls the step made (more than one after a retry).
    pub attempts: u32,
    pub millis: f64,
    /// The message the step appended (the rendered prompt; for the frontier, the hand-off).
    pub prompt: Option<String>,
    pub output: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct CitedPassage {
    pub id: String,
    pub title: String,
    pub source: String,
}

/// What the model-written SQL of a retrieve step did.
#[derive(Debug, Clone, Serialize)]
pub struct SqlReport {
    /// The SQL the model wrote (`None` if its output did not parse).
    pub sql: Option<String>,
    /// The guarded, patient-scoped SQL that ran.
    pub sql_run: Option<String>,
    pub rows: usize,
    /// Why the fixed record summary was used instead (guard rejection, database error).
    pub fallback_reason: Option<String>,
}

impl SqlReport {
    pub fn fell_back(&self) -> bool {
        self.fallback_reason.is_some()
    }
}

/// The result of a request: the decision, its reasons, who decided, and what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct TriageOutcome {
    pub request_id: String,
    pub workflow: String,
    pub disposition: Disposition,
    pub decision: Decision,
    pub confidence: f32,
    pub proposed: Option<Disposition>,
    pub floor: Option<Disposition>,
    pub reasons: Vec<String>,
    pub notes: Vec<String>,
    pub rules_fired: Vec<FiredRule>,
    pub cited: Vec<CitedPassage>,
    pub patient_reply: String,
    pub patient_id: Option<i64>,
    pub record_summary: Option<String>,
    pub sql: Option<SqlReport>,
    pub route: Route,
    pub steps: Vec<StepReport>,
    pub totals: TokenUsage,
    pub cost_usd: f64,
    pub prefix_tokens: u64,
    pub transcript_tokens: u64,
    pub mode: Mode,
    pub model: String,
    pub elapsed_ms: f64,
}

impl TriageOutcome {
    /// One ledger entry per step that ran, priced on its tier (the price key when the tier has
    /// one, else the tier's name). The decision is recorded on the validate step's entry.
    pub fn ledger_entries(&self) -> Vec<careflow_ledger::LedgerEntry> {
        let at_ms = careflow_ledger::now_ms();
        self.steps
            .iter()
            .map(|s| careflow_ledger::LedgerEntry {
                request_id: self.request_id.clone(),
                at_ms,
                workflow: self.workflow.clone(),
                step: s.step.clone(),
                tier: s.price_key.clone().unwrap_or_else(|| s.tier.clone()),
                model: s.model.clone(),
                adapter: s.adapter.clone(),
                usage: s.usage,
                cost_usd: s.cost_usd,
                decision: (s.kind == "validate")
                    .then(|| format!("{} by {}", self.disposition.label(), self.route.decided_by)),
            })
            .collect()
    }
}

/// A workflow ready to serve requests: its definition, its tiers, the knowledge it reads.
pub struct TriageWorkflow {
    pub(crate) small: Tier,
    pub(crate) frontier: Option<Tier>,
    pub(crate) records: Option<Records>,
    pub(crate) rules: RuleSet,
    pub(crate) guidelines: Guidelines,
    pub(crate) config: WorkflowConfig,
    pub(crate) def: Arc<WorkflowDef>,
    pub(crate) budget: Arc<Budget>,
    prefix: Vec<ChatMessage>,
}

impl TriageWorkflow {
    /// The default triage workflow on `engine` (the small tier), without a frontier tier.
    pub fn new(
        engine: Arc<dyn Engine>,
        records: Option<Records>,
        rules: RuleSet,
        guidelines: Guidelines,
        config: WorkflowConfig,
    ) -> Result<Self, WorkflowError> {
        let def = Arc::new(WorkflowDef::triage()?);
        config.cascade.check().map_err(WorkflowError::Config)?;
        let budget = Arc::new(Budget::new(config.cascade.daily_budget_usd, 0.0));
        let mut wf = TriageWorkflow {
            small: Tier::new("small", engine),
            frontier: None,
            records,
            rules,
            guidelines,
            config,
            def,
            budget,
            prefix: Vec::new(),
        };
        wf.prefix = wf.render_prefix();
        wf.check_adapters()?;
        Ok(wf)
    }

    /// Runs `def` instead of the default triage workflow.
    pub fn with_definition(mut self, def: WorkflowDef) -> Result<Self, WorkflowError> {
        self.def = Arc::new(def);
        self.prefix = self.render_prefix();
        self.check_adapters()?;
        Ok(self)
    }

    /// Prices the small tier's tokens.
    pub fn with_small_tier(mut self, tier: Tier) -> Self {
        self.small = tier;
        self
    }

    /// Adds the frontier tier the cascade escalates to.
    pub fn with_frontier(mut self, tier: Tier) -> Self {
        self.frontier = Some(tier);
        self
    }

    /// Shares a budget (seeded from the ledger) instead of a fresh one.
    pub fn with_budget(mut self, budget: Arc<Budget>) -> Self {
        self.budget = budget;
        self
    }

    pub fn config(&self) -> &WorkflowConfig {
        &self.config
    }

    pub fn definition(&self) -> &WorkflowDef {
        &self.def
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    pub fn has_frontier(&self) -> bool {
        self.frontier.is_some()
    }

    pub fn shared_prefix(&self) -> &[ChatMessage] {
        &self.prefix
    }

    /// The adapter a step runs under: the config's override, else the workflow file's.
    pub(crate) fn adapter_for(&self, step: &str) -> Option<String> {
        self.config
            .adapters
            .get(step)
            .cloned()
            .or_else(|| self.def.step(step).and_then(|s| s.def.adapter.clone()))
    }

    fn check_adapters(&self) -> Result<(), WorkflowError> {
        let loaded = &self.small.engine.info().adapters;
        self.def.check_adapters(loaded)?;
        for (step, adapter) in &self.config.adapters {
            if self.def.step(step).is_none() {
                return Err(WorkflowError::Config(format!(
                    "adapters: the workflow `{}` has no step `{step}`",
                    self.def.name
                )));
            }
            if !loaded.contains(adapter) {
                return Err(WorkflowError::Config(format!(
                    "adapters.{step}: the engine has no adapter `{adapter}`"
                )));
            }
        }
        Ok(())
    }

    fn render_prefix(&self) -> Vec<ChatMessage> {
        let mut vars = Vars::default();
        vars.set("schema_card", careflow_records::schema_card());
        vars.set("digest", self.guidelines.digest());
        vec![ChatMessage::system(self.def.system.render(&vars))]
    }

    /// Computes the shared prefix into the prefix cache once (process start-up).
    pub async fn warm(&self) -> Result<TokenUsage, WorkflowError> {
        let engine = &self.small.engine;
        let opened = engine
            .open(careflow_engine::OpenSession {
                prefix: self.prefix.clone(),
                cache_prefix: true,
                ..Default::default()
            })
            .await?;
        engine.close(opened.id).await?;
        Ok(opened.usage)
    }
}

pub(crate) fn parse_json(g: Option<&Generation>) -> Value {
    g.and_then(|g| serde_json::from_str(&g.text).ok())
        .unwrap_or(Value::Null)
}

/// The probability the model gave the disposition label it chose.
pub(crate) fn label_probability(g: &Generation, d: Disposition) -> f32 {
    let needle = format!("\"disposition\": \"{}\"", d.label());
    match g.text.find(&needle) {
        Some(at) => {
            let start = at + needle.len() - d.label().len() - 1;
            span_probability(&g.piece_lens, &g.logprobs, start, d.label().len())
        }
        None => 0.0,
    }
}

/// A small model repeats itself and stops mid-sentence: keep each sentence once, in order,
/// and drop a trailing fragment.
pub(crate) fn tidy_reply(text: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let end = rest.find(['.', '!', '?']).map(|i| i + 1);
        let Some(end) = end else { break }; // an unfinished sentence is dropped
        let sentence = rest[..end].trim();
        if !sentence.is_empty() && !kept.iter().any(|k| k.eq_ignore_ascii_case(sentence)) {
            kept.push(sentence);
        }
        rest = rest[end..].trim_start();
    }
    kept.join(" ")
}

/// Query rows as compact text for the model: a header line, then one line per row.
pub(crate) fn rows_text(result: &careflow_records::QueryResult) -> String {
    let mut out = result.columns.join(" | ");
    for row in &result.rows {
        out.push('\n');
        let cells: Vec<String> = row
            .iter()
            .map(|v| match v {
                Value::String(s) => s.chars().take(60).collect(),
                Value::Null => "-".into(),
                other => other.to_string(),
            })
            .collect();
        out.push_str(&cells.join(" | "));
    }
    out
}

/// Today's date in UTC as YYYY-MM-DD (civil-from-days, no time-zone database needed).
pub fn today_utc() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    careflow_core::time::utc_date(days)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_keep_each_sentence_once_and_drop_a_fragment() {
        assert_eq!(
            tidy_reply(
                "Rest and drink water. Rest and drink water. rest and drink water. Call us if"
            ),
            "Rest and drink water."
        );
        assert_eq!(
            tidy_reply("Take care! See a nurse today?"),
            "Take care! See a nurse today?"
        );
        assert_eq!(tidy_reply("no full stop"), "");
    }

    #[test]
    fn today_is_a_plausible_date() {
        let t = today_utc();
        assert_eq!(t.len(), 10);
        assert!(t.as_str() > "2024-01-01", "{t}");
    }

    #[test]
    fn label_probability_reads_the_label_tokens_only() {
        // `{"disposition": "routine"}` split as forced prefix + two label tokens + suffix.
        let text = "{\"disposition\": \"routine\"}".to_string();
        let pieces = ["{\"disposition\": \"", "rout", "ine", "\"}"];
        let g = Generation {
            text,
            tokens: vec![1, 2, 3, 4],
            piece_lens: pieces.iter().map(|p| p.len()).collect(),
            logprobs: vec![0.0, (0.5f32).ln(), (0.8f32).ln(), 0.0],
            finish: careflow_engine::FinishReason::Stop,
        };
        let p = label_probability(&g, Disposition::Routine);
        assert!((p - 0.4).abs() < 1e-5, "{p}");
    }
}
