//! Plan → Retrieve → Analyze → Validate → Respond over one conversation with the engine.

use crate::conversation::{Conversation, Mode};
use crate::prompts;
use crate::validate::{self, span_probability, Proposal, Validation};
use crate::WorkflowError;
use careflow_core::{Disposition, PatientId, PatientMessage, RecordFacts, Step, TokenUsage};
use careflow_engine::{ChatMessage, Engine, GenerateParams, Generation};
use careflow_knowledge::{FiredRule, Guidelines, Passage, RuleOutcome, RuleSet};
use careflow_records::Records;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

pub use crate::validate::Decision;

/// The adapter each step runs under (`None`: the base model).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StepAdapters {
    pub plan: Option<String>,
    pub retrieve: Option<String>,
    pub analyze: Option<String>,
    pub validate: Option<String>,
    pub respond: Option<String>,
}

impl StepAdapters {
    pub fn for_step(&self, step: Step) -> Option<String> {
        match step {
            Step::Plan => self.plan.clone(),
            Step::Retrieve => self.retrieve.clone(),
            Step::Analyze => self.analyze.clone(),
            Step::Validate => self.validate.clone(),
            Step::Respond => self.respond.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowConfig {
    pub mode: Mode,
    pub adapters: StepAdapters,
    /// Below this probability of its disposition label, the model's answer is not accepted.
    pub confidence_threshold: f32,
    /// Guideline passages retrieved per request.
    pub passages: usize,
    pub plan_max_tokens: usize,
    pub analyze_max_tokens: usize,
    pub respond_max_tokens: usize,
    /// Let the model write SQL for the record (through the guard and the patient scope);
    /// the fixed record summary is always read as well, and stands in when the SQL fails.
    pub sql_step: bool,
    pub sql_max_tokens: usize,
    /// Rows of model-written SQL shown to the model.
    pub sql_max_rows: u64,
    /// The date ages are computed at (YYYY-MM-DD); `None`: today.
    pub today: Option<String>,
    /// Whether a frontier tier can take escalations (otherwise they go to human review).
    pub frontier_available: bool,
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        WorkflowConfig {
            mode: Mode::StatefulPrefixCache,
            adapters: StepAdapters::default(),
            confidence_threshold: 0.6,
            passages: 3,
            plan_max_tokens: 60,
            analyze_max_tokens: 140,
            respond_max_tokens: 140,
            sql_step: true,
            sql_max_tokens: 120,
            sql_max_rows: 20,
            today: None,
            frontier_available: false,
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
    pub step: Step,
    pub adapter: Option<String>,
    pub usage: TokenUsage,
    pub millis: f64,
    pub output: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct CitedPassage {
    pub id: String,
    pub title: String,
    pub source: String,
}

/// What the model-written SQL of the Retrieve step did.
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

/// The result of a triage: the decision, its reasons, and what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct TriageOutcome {
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
    pub steps: Vec<StepReport>,
    pub totals: TokenUsage,
    pub prefix_tokens: u64,
    pub transcript_tokens: u64,
    pub mode: Mode,
    pub model: String,
    pub elapsed_ms: f64,
}

pub struct TriageWorkflow {
    engine: Arc<dyn Engine>,
    records: Option<Records>,
    rules: RuleSet,
    guidelines: Guidelines,
    config: WorkflowConfig,
    prefix: Vec<ChatMessage>,
}

impl TriageWorkflow {
    pub fn new(
        engine: Arc<dyn Engine>,
        records: Option<Records>,
        rules: RuleSet,
        guidelines: Guidelines,
        config: WorkflowConfig,
    ) -> Self {
        let prefix = prompts::shared_prefix(careflow_records::schema_card(), &guidelines.digest());
        TriageWorkflow {
            engine,
            records,
            rules,
            guidelines,
            config,
            prefix,
        }
    }

    pub fn config(&self) -> &WorkflowConfig {
        &self.config
    }

    pub fn with_config(mut self, config: WorkflowConfig) -> Self {
        self.config = config;
        self
    }

    pub fn shared_prefix(&self) -> &[ChatMessage] {
        &self.prefix
    }

    /// Computes the shared prefix into the prefix cache once (process start-up).
    pub async fn warm(&self) -> Result<TokenUsage, WorkflowError> {
        let opened = self
            .engine
            .open(careflow_engine::OpenSession {
                prefix: self.prefix.clone(),
                cache_prefix: true,
                ..Default::default()
            })
            .await?;
        self.engine.close(opened.id).await?;
        Ok(opened.usage)
    }

    pub async fn run(&self, req: TriageRequest) -> Result<TriageOutcome, WorkflowError> {
        let mut conv =
            Conversation::new(self.engine.clone(), self.config.mode, self.prefix.clone());
        let result = self.run_steps(&mut conv, &req).await;
        conv.close().await;
        result
    }

    async fn run_steps(
        &self,
        conv: &mut Conversation,
        req: &TriageRequest,
    ) -> Result<TriageOutcome, WorkflowError> {
        let started = Instant::now();
        let message = req.message.as_str();
        let mut steps = Vec::new();

        // Plan.
        let t = Instant::now();
        let adapter = self.config.adapters.for_step(Step::Plan);
        let (plan, cost) = conv
            .step(
                vec![ChatMessage::user(prompts::plan_instruction(message))],
                adapter.clone(),
                Some(GenerateParams::json(
                    self.config.plan_max_tokens,
                    prompts::plan_schema(),
                )),
            )
            .await?;
        let plan = parse_json(plan.as_ref());
        steps.push(report(Step::Plan, adapter, cost, t, plan.clone()));

        // Retrieve: the patient's record (scoped to this patient), the rules, the passages.
        let t = Instant::now();
        let facts = self.record_facts(req.patient).await?;
        let rules = self
            .rules
            .evaluate(message, facts.as_ref().unwrap_or(&RecordFacts::default()));
        // The query is the patient's words plus the findings the rules recognised in them
        // (not the model's paraphrase, which a small model can get wrong).
        let passages: Vec<Passage> = self
            .guidelines
            .search(
                &format!("{message} {}", rules.findings.join(" ")),
                self.config.passages,
            )
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let adapter = self.config.adapters.for_step(Step::Retrieve);
        let (sql, sql_text, cost) = self
            .model_sql(conv, req.patient, facts.is_some(), &rules, adapter.clone())
            .await?;
        let retrieved =
            retrieved_message(facts.as_ref(), sql.as_ref(), &sql_text, &rules, &passages);
        let (_, append) = conv
            .step(vec![ChatMessage::user(retrieved)], adapter.clone(), None)
            .await?;
        let mut cost = cost;
        cost += append;
        let passage_ids: Vec<String> = passages.iter().map(|p| p.id.clone()).collect();
        steps.push(report(
            Step::Retrieve,
            adapter,
            cost,
            t,
            serde_json::json!({
                "record": facts.is_some(),
                "sql": sql,
                "rules_fired": rules.fired.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
                "floor": rules.floor,
                "passages": passage_ids,
            }),
        ));

        // Analyze.
        let t = Instant::now();
        let adapter = self.config.adapters.for_step(Step::Analyze);
        let (analysis, cost) = conv
            .step(
                vec![ChatMessage::user(prompts::analyze_instruction())],
                adapter.clone(),
                Some(GenerateParams::json(
                    self.config.analyze_max_tokens,
                    prompts::analyze_schema(&passage_ids),
                )),
            )
            .await?;
        let analysis_json = parse_json(analysis.as_ref());
        let proposed = analysis_json["disposition"]
            .as_str()
            .and_then(|s| s.parse::<Disposition>().ok());
        let confidence = analysis
            .as_ref()
            .zip(proposed)
            .map(|(g, d)| label_probability(g, d))
            .unwrap_or(0.0);
        steps.push(report(
            Step::Analyze,
            adapter,
            cost,
            t,
            analysis_json.clone(),
        ));

        // Validate (deterministic), then tell the session what was decided.
        let t = Instant::now();
        let validation = validate::validate(
            Proposal {
                disposition: proposed,
                confidence,
                rules: &rules,
            },
            self.config.confidence_threshold,
            self.config.frontier_available,
        );
        let adapter = self.config.adapters.for_step(Step::Validate);
        let (_, cost) = conv
            .step(
                vec![ChatMessage::user(validation_message(&validation))],
                adapter.clone(),
                None,
            )
            .await?;
        steps.push(report(
            Step::Validate,
            adapter,
            cost,
            t,
            serde_json::to_value(&validation).unwrap_or(Value::Null),
        ));

        // Respond.
        let t = Instant::now();
        let adapter = self.config.adapters.for_step(Step::Respond);
        let (reply, cost) = conv
            .step(
                vec![ChatMessage::user(prompts::respond_instruction(
                    validation.final_disposition,
                ))],
                adapter.clone(),
                Some(GenerateParams::json(
                    self.config.respond_max_tokens,
                    prompts::respond_schema(),
                )),
            )
            .await?;
        let reply_json = parse_json(reply.as_ref());
        steps.push(report(Step::Respond, adapter, cost, t, reply_json.clone()));
        let model_reply = tidy_reply(reply_json["reply"].as_str().unwrap_or_default());
        let model_reply = model_reply.as_str();
        let patient_reply = format!(
            "{}{}{}\n\n{}",
            model_reply,
            if model_reply.is_empty() { "" } else { "\n\n" },
            validation.final_disposition.patient_phrase(),
            prompts::SAFETY_NET
        );

        let mut reasons: Vec<String> = analysis_json["reasons"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for r in &rules.fired {
            reasons.push(format!("red-flag rule {}: {}", r.id, r.title));
        }
        // Cited ids, each once, in the model's order, limited to passages that exist.
        let mut cited: Vec<CitedPassage> = Vec::new();
        for id in analysis_json["cited"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if let (Some(p), false) = (self.guidelines.get(id), cited.iter().any(|c| c.id == id)) {
                cited.push(CitedPassage {
                    id: p.id.clone(),
                    title: p.title.clone(),
                    source: p.source.clone(),
                });
            }
        }
        let totals = steps.iter().map(|s| s.usage).sum();
        Ok(TriageOutcome {
            disposition: validation.final_disposition,
            decision: validation.decision,
            confidence,
            proposed,
            floor: rules.floor,
            reasons,
            notes: validation.notes,
            rules_fired: rules.fired,
            cited,
            patient_reply,
            patient_id: req.patient.map(|p| p.0),
            record_summary: facts.as_ref().map(RecordFacts::summary),
            sql,
            steps,
            totals,
            prefix_tokens: conv.prefix_tokens(),
            transcript_tokens: conv.transcript_tokens(),
            mode: self.config.mode,
            model: self.engine.info().name.clone(),
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// The model writes a SELECT for the patient's record; the guard checks it and the
    /// database scopes it to the patient. Any failure falls back to the fixed summary (already
    /// read) and is reported, so the next step knows.
    async fn model_sql(
        &self,
        conv: &mut Conversation,
        patient: Option<PatientId>,
        have_record: bool,
        rules: &RuleOutcome,
        adapter: Option<String>,
    ) -> Result<(Option<SqlReport>, String, TokenUsage), WorkflowError> {
        let (Some(patient), Some(records), true, true) =
            (patient, &self.records, have_record, self.config.sql_step)
        else {
            return Ok((None, String::new(), TokenUsage::default()));
        };
        let dialect = match records.backend() {
            careflow_records::Backend::Sqlite => "SQLite",
            careflow_records::Backend::Postgres => "PostgreSQL",
        };
        let hint = if rules.findings.is_empty() {
            "the patient's main problems".to_string()
        } else {
            rules.findings.join(", ")
        };
        let (generation, cost) = conv
            .step(
                vec![ChatMessage::user(prompts::sql_instruction(dialect, &hint))],
                adapter,
                Some(GenerateParams::json(
                    self.config.sql_max_tokens,
                    prompts::sql_schema(),
                )),
            )
            .await?;
        let written = parse_json(generation.as_ref())["sql"]
            .as_str()
            .map(str::to_string);
        let Some(sql) = written else {
            let report = SqlReport {
                sql: None,
                sql_run: None,
                rows: 0,
                fallback_reason: Some("the model's SQL output did not parse".into()),
            };
            return Ok((Some(report), String::new(), cost));
        };
        let policy = careflow_records::GuardPolicy {
            max_limit: self.config.sql_max_rows,
            ..Default::default()
        };
        match records.query_scoped(patient, &sql, &policy).await {
            Ok(result) => {
                let text = rows_text(&result);
                let report = SqlReport {
                    sql: Some(sql),
                    sql_run: Some(result.sql_run.clone()),
                    rows: result.rows.len(),
                    fallback_reason: None,
                };
                Ok((Some(report), text, cost))
            }
            Err(e) => {
                tracing::info!(error = %e, "model SQL refused; using the fixed record summary");
                let report = SqlReport {
                    sql: Some(sql),
                    sql_run: None,
                    rows: 0,
                    fallback_reason: Some(e.to_string()),
                };
                Ok((Some(report), String::new(), cost))
            }
        }
    }

    async fn record_facts(
        &self,
        patient: Option<PatientId>,
    ) -> Result<Option<RecordFacts>, WorkflowError> {
        let Some(patient) = patient else {
            return Ok(None);
        };
        let Some(records) = &self.records else {
            return Err(WorkflowError::Step {
                step: "retrieve",
                reason: format!("patient {patient} given but no records database is configured"),
            });
        };
        let today = self.config.today.clone().unwrap_or_else(today_utc);
        match records.patient_facts(patient, &today).await? {
            Some(f) => Ok(Some(f)),
            None => Err(WorkflowError::UnknownPatient(patient.0)),
        }
    }
}

fn report(
    step: Step,
    adapter: Option<String>,
    usage: TokenUsage,
    t: Instant,
    output: Value,
) -> StepReport {
    StepReport {
        step,
        adapter,
        usage,
        millis: t.elapsed().as_secs_f64() * 1000.0,
        output,
    }
}

fn parse_json(g: Option<&Generation>) -> Value {
    g.and_then(|g| serde_json::from_str(&g.text).ok())
        .unwrap_or(Value::Null)
}

/// The probability the model gave the disposition label it chose.
fn label_probability(g: &Generation, d: Disposition) -> f32 {
    let needle = format!("\"disposition\": \"{}\"", d.label());
    match g.text.find(&needle) {
        Some(at) => {
            let start = at + needle.len() - d.label().len() - 1;
            span_probability(&g.piece_lens, &g.logprobs, start, d.label().len())
        }
        None => 0.0,
    }
}

fn retrieved_message(
    facts: Option<&RecordFacts>,
    sql: Option<&SqlReport>,
    sql_rows: &str,
    rules: &RuleOutcome,
    passages: &[Passage],
) -> String {
    let mut s = String::from("RETRIEVE results.\nRecord: ");
    match facts {
        Some(f) => s.push_str(&f.summary()),
        None => s.push_str("none (the message is not linked to a patient record)"),
    }
    match sql {
        Some(r) if r.fell_back() => s.push_str(&format!(
            "\nYour query was not used ({}); the standard record summary above stands in.",
            r.fallback_reason.as_deref().unwrap_or("refused")
        )),
        Some(r) => s.push_str(&format!(
            "\nYour query returned {} rows:\n{sql_rows}",
            r.rows
        )),
        None => {}
    }
    s.push_str("\nRed-flag rules that fired: ");
    if rules.fired.is_empty() {
        s.push_str("none");
    } else {
        let fired: Vec<String> = rules
            .fired
            .iter()
            .map(|r| format!("{} ({}: at least {})", r.title, r.id, r.level))
            .collect();
        s.push_str(&fired.join("; "));
    }
    s.push_str("\nGuideline passages:");
    if passages.is_empty() {
        s.push_str(" none matched");
    }
    for p in passages {
        s.push_str(&format!("\n[{}] {}: {}", p.id, p.title, p.text));
    }
    s
}

/// A small model repeats itself and stops mid-sentence: keep each sentence once, in order,
/// and drop a trailing fragment.
fn tidy_reply(text: &str) -> String {
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
fn rows_text(result: &careflow_records::QueryResult) -> String {
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

fn validation_message(v: &Validation) -> String {
    let mut s = format!(
        "VALIDATE. Final disposition: {}.",
        v.final_disposition.label()
    );
    for n in &v.notes {
        s.push_str(&format!(" {n}."));
    }
    s
}

/// Today's date in UTC as YYYY-MM-DD (civil-from-days, no time-zone database needed).
pub fn today_utc() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
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
