//! Running one request through a workflow definition: the step machine.
//!
//! One engine session per request (see [`Conversation`]); every step appends to it. The
//! deterministic parts — the patient's record facts, the red-flag rules, Validate, the floor,
//! the safety net — are computed here in code, whatever the workflow file's prompts say.

use crate::cascade::{Handoff, Route, Tier};
use crate::conversation::Conversation;
use crate::definition::{expand_schema, Step, StepKind};
use crate::prompts;
use crate::template::Vars;
use crate::triage::{
    label_probability, parse_json, rows_text, tidy_reply, today_utc, CitedPassage, SqlReport,
    StepReport, TriageOutcome, TriageRequest, TriageWorkflow,
};
use crate::validate::{self, Decision, Proposal, Validation};
use crate::WorkflowError;
use careflow_core::{Disposition, PatientId, RecordFacts, TokenUsage};
use careflow_engine::{ChatMessage, EngineError, FinishReason, GenerateParams, Generation};
use careflow_knowledge::{Passage, RuleOutcome};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What a request has gathered so far.
struct State {
    vars: Vars,
    generations: HashMap<String, Generation>,
    /// Escalation reasons raised by steps' `on` rules.
    flags: Vec<String>,
    /// Steps that failed (deadline, unusable output after retries), with why.
    failures: Vec<String>,
    facts: Option<RecordFacts>,
    rules: RuleOutcome,
    passages: Vec<Passage>,
    sql: Option<SqlReport>,
    validation: Option<Validation>,
    route: Option<Route>,
    reply: Option<String>,
    steps: Vec<StepReport>,
}

impl TriageWorkflow {
    pub async fn run(&self, req: TriageRequest) -> Result<TriageOutcome, WorkflowError> {
        let mut conv = Conversation::new(
            self.small.engine.clone(),
            self.config.mode,
            self.shared_prefix().to_vec(),
        );
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
        // The deterministic facts first: the record (scoped to this patient) and the rules.
        let facts = self.record_facts(req.patient).await?;
        let rules = self
            .rules
            .evaluate(message, facts.as_ref().unwrap_or(&RecordFacts::default()));
        let mut st = State {
            vars: Vars::default(),
            generations: HashMap::new(),
            flags: Vec::new(),
            failures: Vec::new(),
            facts,
            rules,
            passages: Vec::new(),
            sql: None,
            validation: None,
            route: None,
            reply: None,
            steps: Vec::new(),
        };
        self.set_request_vars(&mut st, message);

        let def = self.def.clone();
        let mut at = Some(def.start);
        let mut executed = 0usize;
        let limit = def.steps.len() * 4;
        while let Some(i) = at {
            executed += 1;
            if executed > limit {
                return Err(WorkflowError::Step {
                    step: "run",
                    reason: format!(
                        "workflow `{}` ran {limit} steps without reaching its end (a loop in its transitions?)",
                        def.name
                    ),
                });
            }
            let step = &def.steps[i];
            let remaining = self.remaining(started);
            if remaining.is_some_and(|r| r.is_zero()) {
                // Nothing more is computed for this request: Validate decides below, on what
                // there is, and the case goes to a clinician.
                st.failures.push(format!(
                    "the request's deadline passed before step {}",
                    step.def.name
                ));
                break;
            }
            at = match step.def.kind {
                StepKind::Generate => self.generate(conv, step, &mut st, remaining).await?,
                StepKind::Retrieve => {
                    self.retrieve(conv, step, &mut st, req, remaining).await?;
                    step.next
                }
                StepKind::Validate => {
                    self.validate(conv, step, &mut st, message, started).await?;
                    step.next
                }
                StepKind::Respond => {
                    if st.validation.is_none() {
                        // A transition skipped Validate: decide now (the recorded failure
                        // makes the case escalate), before any reply is written.
                        st.failures.push(format!(
                            "step {} was reached before the validate step",
                            step.def.name
                        ));
                        let (proposed, confidence, threshold) = self.proposal(&st);
                        self.decide(
                            &mut st,
                            proposed,
                            confidence,
                            Some(threshold),
                            message,
                            conv.transcript_tokens(),
                            started,
                        )
                        .await;
                        set_decision_vars(&mut st);
                    }
                    self.respond(conv, step, &mut st, remaining).await?;
                    step.next
                }
            };
        }
        // Whatever path the transitions took, nothing leaves without Validate's decision, and
        // every reply carries the deterministic disposition phrase and the safety net.
        if st.validation.is_none() {
            if !st.failures.iter().any(|f| f.contains("deadline")) {
                st.failures
                    .push("the workflow ended without its validate step".into());
            }
            let (proposed, confidence, threshold) = self.proposal(&st);
            self.decide(
                &mut st,
                proposed,
                confidence,
                Some(threshold),
                message,
                conv.transcript_tokens(),
                started,
            )
            .await;
        }
        self.finish(st, conv, req, started)
    }

    /// Time left of the request's deadline (`None`: no deadline).
    fn remaining(&self, started: Instant) -> Option<Duration> {
        self.config
            .request_deadline_ms
            .map(|ms| Duration::from_millis(ms).saturating_sub(started.elapsed()))
    }

    fn step_deadline(&self, remaining: Option<Duration>) -> Option<Duration> {
        let step = self.config.step_deadline_ms.map(Duration::from_millis);
        match (step, remaining) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn set_request_vars(&self, st: &mut State, message: &str) {
        let v = &mut st.vars;
        v.set("message", message);
        v.set("schema_card", careflow_records::schema_card());
        v.set("digest", self.guidelines.digest());
        v.set(
            "dialect",
            match self.records.as_ref().map(|r| r.backend()) {
                Some(careflow_records::Backend::Postgres) => "PostgreSQL",
                _ => "SQLite",
            },
        );
        v.set(
            "findings",
            if st.rules.findings.is_empty() {
                "the patient's main problems".to_string()
            } else {
                st.rules.findings.join(", ")
            },
        );
        v.set(
            "record",
            match &st.facts {
                Some(f) => f.summary(),
                None => "none (the message is not linked to a patient record)".into(),
            },
        );
        v.set("rules_fired", rules_text(&st.rules));
        v.set("passages", " none retrieved");
        v.set("passage_ids", "");
        v.set("sql_result", "");
    }

    /// A `generate` step: JSON under the step's schema; on unusable output, append a correction
    /// and try again with twice the tokens, up to `retries` times.
    async fn generate(
        &self,
        conv: &mut Conversation,
        step: &Step,
        st: &mut State,
        remaining: Option<Duration>,
    ) -> Result<Option<usize>, WorkflowError> {
        let t = Instant::now();
        let name = step.def.name.clone();
        let adapter = self.adapter_for(&name);
        let Generated {
            output,
            generation,
            usage,
            attempts,
            failure,
            prompt,
        } = self
            .generate_json(conv, step, st, adapter.clone(), remaining)
            .await?;
        if let Some(f) = failure {
            st.failures.push(format!("step {name}: {f}"));
        }
        let mut next = step.next;
        if !output.is_null() {
            for rule in &step.def.on {
                if rule.matches(&output) {
                    if let Some(reason) = &rule.escalate {
                        st.flags.push(reason.clone());
                    }
                    if let Some(goto) = &rule.goto {
                        next = if goto == crate::definition::END {
                            None
                        } else {
                            self.def.steps.iter().position(|s| &s.def.name == goto)
                        };
                        break;
                    }
                }
            }
        }
        st.vars.outputs.insert(name.clone(), output.clone());
        if let Some(g) = generation {
            st.generations.insert(name.clone(), g);
        }
        st.steps.push(self.report(
            &self.small,
            step,
            adapter,
            usage,
            attempts,
            t,
            output,
            Some(prompt),
        ));
        Ok(next)
    }

    /// Generates the step's JSON; returns (output or Null, generation, usage, attempts, failure).
    async fn generate_json(
        &self,
        conv: &mut Conversation,
        step: &Step,
        st: &State,
        adapter: Option<String>,
        remaining: Option<Duration>,
    ) -> Result<Generated, WorkflowError> {
        let schema = step.schema.as_ref().map_or(Value::Null, |s| {
            expand_schema(s, &labels(), &passage_ids(&st.passages))
        });
        let mut max_tokens = step.def.max_tokens.unwrap_or(64);
        let first_prompt = step
            .prompt
            .as_ref()
            .map(|p| p.render(&st.vars))
            .unwrap_or_default();
        let mut prompt = first_prompt.clone();
        let mut usage = TokenUsage::default();
        let mut attempts = 0;
        let mut failure = None;
        for _ in 0..=step.def.retries {
            if remaining.is_some_and(|r| r.is_zero()) {
                failure = Some("the request's deadline passed before the step".to_string());
                break;
            }
            attempts += 1;
            let result = conv
                .step(
                    vec![ChatMessage::user(prompt.clone())],
                    adapter.clone(),
                    Some(GenerateParams::json(max_tokens, schema.clone())),
                    self.step_deadline(remaining),
                )
                .await;
            let (generation, cost) = match result {
                Ok(r) => r,
                Err(WorkflowError::Engine(EngineError::DeadlineExceeded(ms))) => {
                    failure = Some(format!("exceeded its deadline of {ms} ms"));
                    break;
                }
                Err(e) => return Err(e),
            };
            usage += cost;
            let parsed = parse_json(generation.as_ref());
            let complete = generation
                .as_ref()
                .is_some_and(|g| g.finish == FinishReason::Stop);
            if !parsed.is_null() && complete {
                return Ok(Generated {
                    output: parsed,
                    generation,
                    usage,
                    attempts,
                    failure: None,
                    prompt: first_prompt,
                });
            }
            failure = Some(format!(
                "output unusable after {attempts} attempt(s) (cut off at {max_tokens} tokens or not the JSON asked for)"
            ));
            // Steps only append: the correction goes after the failed answer.
            prompt = "Your answer was cut off or was not the JSON asked for. Answer again, \
                      shorter, in exactly that JSON."
                .to_string();
            max_tokens *= 2;
        }
        Ok(Generated {
            output: Value::Null,
            generation: None,
            usage,
            attempts,
            failure,
            prompt: first_prompt,
        })
    }

    /// A `retrieve` step: passages, optional model-written SQL, then the results appended.
    async fn retrieve(
        &self,
        conv: &mut Conversation,
        step: &Step,
        st: &mut State,
        req: &TriageRequest,
        remaining: Option<Duration>,
    ) -> Result<(), WorkflowError> {
        let t = Instant::now();
        let name = step.def.name.clone();
        let adapter = self.adapter_for(&name);
        let message = req.message.as_str();
        // The query is the patient's words plus the findings the rules recognised in them
        // (not the model's paraphrase, which a small model can get wrong).
        st.passages = self
            .guidelines
            .search(
                &format!("{message} {}", st.rules.findings.join(" ")),
                step.def.passages.unwrap_or(3),
            )
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let mut passages_text = String::new();
        for p in &st.passages {
            passages_text.push_str(&format!("\n[{}] {}: {}", p.id, p.title, p.text));
        }
        if st.passages.is_empty() {
            passages_text = " none matched".into();
        }
        st.vars.set("passages", passages_text);
        st.vars
            .set("passage_ids", passage_ids(&st.passages).join(", "));

        let mut usage = TokenUsage::default();
        let mut attempts = 0;
        let mut sql_instruction = None;
        if let Some(sql_prompt) = &step.sql_prompt {
            let instruction = sql_prompt.render(&st.vars);
            sql_instruction = Some(instruction.clone());
            let (report, rows, cost, tries) = self
                .model_sql(
                    conv,
                    step,
                    instruction,
                    req.patient,
                    st,
                    adapter.clone(),
                    remaining,
                )
                .await?;
            usage += cost;
            attempts += tries;
            st.vars.set(
                "sql_result",
                match &report {
                    Some(r) if r.fell_back() => format!(
                        "\nYour query was not used ({}); the standard record summary above stands in.",
                        r.fallback_reason.as_deref().unwrap_or("refused")
                    ),
                    Some(r) => format!("\nYour query returned {} rows:\n{rows}", r.rows),
                    None => String::new(),
                },
            );
            st.sql = report;
        }
        let (text, append) = append_prompt(conv, step, st, adapter.clone()).await?;
        usage += append;
        let output = serde_json::json!({
            "record": st.facts.is_some(),
            "sql_prompt": sql_instruction,
            "sql": st.sql,
            "rules_fired": st.rules.fired.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
            "floor": st.rules.floor,
            "passages": passage_ids(&st.passages),
        });
        st.steps.push(self.report(
            &self.small,
            step,
            adapter,
            usage,
            attempts,
            t,
            output,
            Some(text),
        ));
        Ok(())
    }

    /// The model writes a SELECT for the patient's record; the guard checks it and the
    /// database scopes it to the patient. Any failure falls back to the fixed summary (already
    /// read) and is reported, so the next step knows.
    #[allow(clippy::too_many_arguments)]
    async fn model_sql(
        &self,
        conv: &mut Conversation,
        step: &Step,
        instruction: String,
        patient: Option<PatientId>,
        st: &State,
        adapter: Option<String>,
        remaining: Option<Duration>,
    ) -> Result<(Option<SqlReport>, String, TokenUsage, u32), WorkflowError> {
        let (Some(patient), Some(records), true, true) = (
            patient,
            &self.records,
            st.facts.is_some(),
            self.config.sql_step,
        ) else {
            return Ok((None, String::new(), TokenUsage::default(), 0));
        };
        let result = conv
            .step(
                vec![ChatMessage::user(instruction)],
                adapter,
                Some(GenerateParams::json(
                    step.def.sql_max_tokens.unwrap_or(120),
                    prompts::sql_schema(),
                )),
                self.step_deadline(remaining),
            )
            .await;
        let (generation, cost) = match result {
            Ok(r) => r,
            Err(WorkflowError::Engine(EngineError::DeadlineExceeded(ms))) => {
                let report = SqlReport {
                    sql: None,
                    sql_run: None,
                    rows: 0,
                    fallback_reason: Some(format!("the SQL step exceeded its deadline of {ms} ms")),
                };
                return Ok((Some(report), String::new(), TokenUsage::default(), 1));
            }
            Err(e) => return Err(e),
        };
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
            return Ok((Some(report), String::new(), cost, 1));
        };
        let policy = careflow_records::GuardPolicy {
            max_limit: step.def.sql_max_rows.unwrap_or(20),
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
                Ok((Some(report), text, cost, 1))
            }
            Err(e) => {
                tracing::info!(error = %e, "model SQL refused; using the fixed record summary");
                let report = SqlReport {
                    sql: Some(sql),
                    sql_run: None,
                    rows: 0,
                    fallback_reason: Some(e.to_string()),
                };
                Ok((Some(report), String::new(), cost, 1))
            }
        }
    }

    /// The `validate` step: deterministic checks, the cascade, then the decision appended.
    async fn validate(
        &self,
        conv: &mut Conversation,
        step: &Step,
        st: &mut State,
        message: &str,
        started: Instant,
    ) -> Result<(), WorkflowError> {
        let t = Instant::now();
        let (proposed, confidence, threshold) = self.proposal(st);
        self.decide(
            st,
            proposed,
            confidence,
            Some(threshold),
            message,
            conv.transcript_tokens(),
            started,
        )
        .await;
        set_decision_vars(st);
        let adapter = self.adapter_for(&step.def.name);
        let (text, usage) = append_prompt(conv, step, st, adapter.clone()).await?;
        let output = serde_json::to_value(&st.validation).unwrap_or(Value::Null);
        st.steps
            .push(self.report(&self.small, step, adapter, usage, 0, t, output, Some(text)));
        Ok(())
    }

    /// The disposition the validate step checks (from the step it names), the probability the
    /// model gave its label, and the threshold in force.
    fn proposal(&self, st: &State) -> (Option<Disposition>, f32, f32) {
        let validate = self
            .def
            .steps
            .iter()
            .find(|s| s.def.kind == StepKind::Validate);
        let proposal_step = validate
            .and_then(|s| s.def.proposal.clone())
            .unwrap_or_default();
        let proposed = st
            .vars
            .outputs
            .get(&proposal_step)
            .and_then(|o| o["disposition"].as_str())
            .and_then(|s| s.parse::<Disposition>().ok());
        let confidence = st
            .generations
            .get(&proposal_step)
            .zip(proposed)
            .map(|(g, d)| label_probability(g, d))
            .unwrap_or(0.0);
        let threshold = self
            .config
            .confidence_threshold
            .or(validate.and_then(|s| s.def.confidence_threshold))
            .unwrap_or(0.6);
        (proposed, confidence, threshold)
    }

    /// Validate's checks on the small model's proposal, then the cascade: accept, escalate to
    /// the frontier tier, or human review — and why.
    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        st: &mut State,
        proposed: Option<Disposition>,
        confidence: f32,
        threshold: Option<f32>,
        message: &str,
        transcript_tokens: u64,
        started: Instant,
    ) {
        let threshold = threshold.unwrap_or(0.6);
        // `true`: ask Validate whether the small model's answer can stand on its own.
        let mut v = validate::validate(
            Proposal {
                disposition: proposed,
                confidence,
                rules: &st.rules,
            },
            threshold,
            true,
        );
        let mut reasons: Vec<String> = Vec::new();
        if v.decision != Decision::Accept {
            reasons.extend(v.notes.iter().cloned());
        }
        for f in &st.failures {
            reasons.push(f.clone());
            v.notes.push(f.clone());
        }
        let failed = !st.failures.is_empty();
        let flagged = self.config.cascade.escalate_flagged && !st.flags.is_empty();
        reasons.extend(st.flags.iter().cloned());
        let wants_frontier = v.decision != Decision::Accept || failed || flagged;
        if !wants_frontier {
            v.decision = Decision::Accept;
            st.route = Some(Route {
                decided_by: "small".into(),
                escalated: false,
                reasons: st.flags.clone(),
                outcome: "accepted from the small tier".into(),
                handoff: None,
            });
            st.validation = Some(v);
            return;
        }
        let to_review = |v: &mut Validation, why: String| {
            v.decision = Decision::HumanReview;
            v.notes.push(format!("sent to human review: {why}"));
            why
        };
        let Some(frontier) = &self.frontier else {
            // Without a frontier, a case flagged only by a step rule (e.g. "complex") stands on
            // Validate's checks; anything Validate would not accept goes to a clinician.
            if v.decision == Decision::Escalate || failed {
                let why = to_review(&mut v, "no frontier tier is configured".into());
                st.route = Some(route("human_review", reasons, why, None));
            } else {
                v.decision = Decision::Accept;
                v.notes.push(format!(
                    "flagged ({}) but no frontier tier is configured: accepted on Validate's checks",
                    st.flags.join("; ")
                ));
                st.route = Some(route(
                    "small",
                    reasons,
                    "accepted from the small tier".into(),
                    None,
                ));
            }
            st.validation = Some(v);
            return;
        };
        if let Err(why) = self.budget.check() {
            let why = to_review(&mut v, why);
            st.route = Some(route("human_review", reasons, why, None));
            st.validation = Some(v);
            return;
        }
        if self.remaining(started).is_some_and(|r| r.is_zero()) {
            let why = to_review(
                &mut v,
                "the request's deadline passed before the frontier call".into(),
            );
            st.route = Some(route("human_review", reasons, why, None));
            st.validation = Some(v);
            return;
        }
        let (summary, result, report) = self
            .call_frontier(frontier, st, message, &reasons, started)
            .await;
        let cost = report.cost_usd;
        self.budget.add(cost);
        st.steps.push(report);
        match result {
            Err(e) => {
                let why = to_review(&mut v, format!("the frontier tier is unavailable: {e}"));
                st.route = Some(route("human_review", reasons, why, None));
            }
            Ok((answer, generation, tokens_submitted)) => {
                let fd = answer["disposition"]
                    .as_str()
                    .and_then(|s| s.parse::<Disposition>().ok());
                let fconf = match (&generation, fd) {
                    (Some(g), Some(d)) if !g.logprobs.is_empty() => label_probability(g, d),
                    (Some(_), Some(_)) => 1.0,
                    _ => 0.0,
                };
                // The frontier's answer goes through the same checks; the floor still holds.
                let fv = validate::validate(
                    Proposal {
                        disposition: fd,
                        confidence: fconf,
                        rules: &st.rules,
                    },
                    self.config.cascade.frontier_confidence_threshold,
                    false,
                );
                let handoff = Handoff {
                    model: frontier.model(),
                    summary,
                    tokens_submitted,
                    transcript_tokens,
                    answer: answer.clone(),
                };
                let mut notes: Vec<String> =
                    v.notes.iter().map(|n| format!("small tier: {n}")).collect();
                notes.extend(fv.notes.iter().map(|n| format!("frontier tier: {n}")));
                let (decided_by, outcome) = if fv.decision == Decision::Accept {
                    ("frontier", "decided by the frontier tier".to_string())
                } else {
                    notes.push(
                        "sent to human review: the frontier's answer did not pass Validate".into(),
                    );
                    (
                        "human_review",
                        "the frontier's answer did not pass Validate".to_string(),
                    )
                };
                v = Validation {
                    proposed: v.proposed,
                    final_disposition: fv.final_disposition,
                    floor: fv.floor,
                    raised_to_floor: fv.raised_to_floor,
                    confidence: fv.confidence,
                    decision: if fv.decision == Decision::Accept {
                        Decision::Escalate
                    } else {
                        Decision::HumanReview
                    },
                    notes,
                };
                st.vars.outputs.insert("frontier".into(), answer);
                st.route = Some(route(decided_by, reasons, outcome, Some(handoff)));
            }
        }
        st.validation = Some(v);
    }

    /// One frontier call with the compact case summary; never the small session's transcript.
    #[allow(clippy::type_complexity)]
    async fn call_frontier(
        &self,
        frontier: &Tier,
        st: &State,
        message: &str,
        reasons: &[String],
        started: Instant,
    ) -> (
        String,
        Result<(Value, Option<Generation>, u64), WorkflowError>,
        StepReport,
    ) {
        let t = Instant::now();
        let mut vars = st.vars.clone();
        vars.set("message", message);
        vars.set("validation_notes", reasons.join("; "));
        let summary = self.def.handoff_prompt.render(&vars);
        let schema = expand_schema(
            &self.def.handoff_schema,
            &labels(),
            &passage_ids(&st.passages),
        );
        let deadline = {
            let d = Duration::from_millis(self.config.cascade.frontier_deadline_ms);
            Some(self.remaining(started).map_or(d, |r| r.min(d)))
        };
        let engine = frontier.engine.clone();
        let mut usage = TokenUsage::default();
        let result: Result<(Value, Option<Generation>, u64), WorkflowError> = async {
            let opened = engine
                .open(careflow_engine::OpenSession {
                    prefix: vec![ChatMessage::system(self.def.handoff.system.clone())],
                    cache_prefix: true,
                    ..Default::default()
                })
                .await?;
            usage += opened.usage;
            let out = engine
                .turn(
                    opened.id,
                    careflow_engine::Turn {
                        messages: vec![ChatMessage::user(summary.clone())],
                        generate: Some(GenerateParams::json(self.def.handoff.max_tokens, schema)),
                        deadline,
                        ..Default::default()
                    },
                )
                .await;
            let _ = engine.close(opened.id).await;
            let out = out?;
            usage += out.usage;
            let answer = parse_json(out.generation.as_ref());
            if answer.is_null() {
                return Err(WorkflowError::Step {
                    step: "frontier",
                    reason: "the frontier's answer was not the JSON asked for".into(),
                });
            }
            Ok((answer, out.generation, usage.submitted))
        }
        .await;
        let output = match &result {
            Ok((a, _, _)) => a.clone(),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        let report = StepReport {
            prompt: Some(summary.clone()),
            step: "frontier".into(),
            kind: "handoff".into(),
            tier: frontier.name.clone(),
            price_key: frontier.price.as_ref().map(|_| frontier.price_key.clone()),
            model: frontier.model(),
            adapter: None,
            usage,
            cost_usd: frontier.cost(&usage),
            attempts: 1,
            millis: t.elapsed().as_secs_f64() * 1000.0,
            output,
        };
        (summary, result, report)
    }

    /// The `respond` step: the model's words, then the deterministic phrase and safety net.
    async fn respond(
        &self,
        conv: &mut Conversation,
        step: &Step,
        st: &mut State,
        remaining: Option<Duration>,
    ) -> Result<(), WorkflowError> {
        let t = Instant::now();
        let adapter = self.adapter_for(&step.def.name);
        let g = self
            .generate_json(conv, step, st, adapter.clone(), remaining)
            .await?;
        if let Some(f) = &g.failure {
            tracing::info!(step = %step.def.name, "{f}; the reply is the standard phrase only");
        }
        let field = step.def.reply_field.as_deref().unwrap_or("reply");
        st.reply = Some(tidy_reply(g.output[field].as_str().unwrap_or_default()));
        st.steps.push(self.report(
            &self.small,
            step,
            adapter,
            g.usage,
            g.attempts,
            t,
            g.output,
            Some(g.prompt),
        ));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        tier: &Tier,
        step: &Step,
        adapter: Option<String>,
        usage: TokenUsage,
        attempts: u32,
        t: Instant,
        output: Value,
        prompt: Option<String>,
    ) -> StepReport {
        StepReport {
            prompt,
            step: step.def.name.clone(),
            kind: step.def.kind.name().into(),
            tier: tier.name.clone(),
            price_key: tier.price.as_ref().map(|_| tier.price_key.clone()),
            model: tier.model(),
            adapter,
            usage,
            cost_usd: tier.cost(&usage),
            attempts,
            millis: t.elapsed().as_secs_f64() * 1000.0,
            output,
        }
    }

    fn finish(
        &self,
        mut st: State,
        conv: &Conversation,
        req: &TriageRequest,
        started: Instant,
    ) -> Result<TriageOutcome, WorkflowError> {
        let Some(v) = st.validation.take() else {
            return Err(WorkflowError::Step {
                step: "validate",
                reason: "no decision was made".into(),
            });
        };
        let route = st
            .route
            .take()
            .unwrap_or_else(|| route("human_review", Vec::new(), "no route recorded".into(), None));
        let model_reply = st.reply.take().unwrap_or_default();
        let patient_reply = format!(
            "{}{}{}\n\n{}",
            model_reply,
            if model_reply.is_empty() { "" } else { "\n\n" },
            v.final_disposition.patient_phrase(),
            prompts::SAFETY_NET
        );
        // Reasons from whoever decided: the frontier's when it did, else the small model's.
        let proposal_step = self
            .def
            .steps
            .iter()
            .find(|s| s.def.kind == StepKind::Validate)
            .and_then(|s| s.def.proposal.clone())
            .unwrap_or_default();
        let source = if route.decided_by == "frontier" {
            "frontier".to_string()
        } else {
            proposal_step
        };
        let decided = st.vars.outputs.get(&source).cloned().unwrap_or(Value::Null);
        let mut reasons: Vec<String> = decided["reasons"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for r in &st.rules.fired {
            reasons.push(format!("red-flag rule {}: {}", r.id, r.title));
        }
        // Cited ids, each once, in the model's order, limited to passages that were retrieved.
        let mut cited: Vec<CitedPassage> = Vec::new();
        for id in decided["cited"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let retrieved = st.passages.iter().any(|p| p.id == id);
            if let (Some(p), true, false) = (
                self.guidelines.get(id),
                retrieved,
                cited.iter().any(|c| c.id == id),
            ) {
                cited.push(CitedPassage {
                    id: p.id.clone(),
                    title: p.title.clone(),
                    source: p.source.clone(),
                });
            }
        }
        let totals = st.steps.iter().map(|s| s.usage).sum();
        let cost_usd = st.steps.iter().map(|s| s.cost_usd).sum();
        Ok(TriageOutcome {
            request_id: new_request_id(),
            workflow: self.def.name.clone(),
            disposition: v.final_disposition,
            decision: v.decision,
            confidence: v.confidence,
            proposed: v.proposed,
            floor: st.rules.floor,
            reasons,
            notes: v.notes,
            rules_fired: st.rules.fired,
            cited,
            patient_reply,
            patient_id: req.patient.map(|p| p.0),
            record_summary: st.facts.as_ref().map(RecordFacts::summary),
            sql: st.sql,
            route,
            steps: st.steps,
            totals,
            cost_usd,
            prefix_tokens: conv.prefix_tokens(),
            transcript_tokens: conv.transcript_tokens(),
            mode: self.config.mode,
            model: self.small.model(),
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
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

fn route(
    decided_by: &str,
    reasons: Vec<String>,
    outcome: String,
    handoff: Option<Handoff>,
) -> Route {
    Route {
        decided_by: decided_by.into(),
        escalated: true,
        reasons,
        outcome,
        handoff,
    }
}

/// Appends the step's rendered prompt to the session without generating (retrieve, validate).
async fn append_prompt(
    conv: &mut Conversation,
    step: &Step,
    st: &State,
    adapter: Option<String>,
) -> Result<(String, TokenUsage), WorkflowError> {
    let text = step
        .prompt
        .as_ref()
        .map(|p| p.render(&st.vars))
        .unwrap_or_default();
    let (_, usage) = conv
        .step(vec![ChatMessage::user(text.clone())], adapter, None, None)
        .await?;
    Ok((text, usage))
}

/// The decision as template values for the steps after Validate.
fn set_decision_vars(st: &mut State) {
    let mut notes = String::new();
    if let Some(v) = &st.validation {
        for n in &v.notes {
            notes.push_str(&format!(" {n}."));
        }
        st.vars
            .set("final_disposition", v.final_disposition.label());
        st.vars
            .set("patient_phrase", v.final_disposition.patient_phrase());
    }
    st.vars.set("validation_notes", notes);
}

fn labels() -> Vec<&'static str> {
    Disposition::ALL.iter().map(|d| d.label()).collect()
}

fn passage_ids(passages: &[Passage]) -> Vec<String> {
    passages.iter().map(|p| p.id.clone()).collect()
}

fn rules_text(rules: &RuleOutcome) -> String {
    if rules.fired.is_empty() {
        return "none".into();
    }
    rules
        .fired
        .iter()
        .map(|r| format!("{} ({}: at least {})", r.title, r.id, r.level))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A request id: 128 random bits as hex (from the OS through the standard library's hasher
/// seed, mixed with the time and a counter, so ids are unique within and across processes).
fn new_request_id() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut parts = [0u64; 2];
    for (i, part) in parts.iter_mut().enumerate() {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(nanos);
        h.write_u64(n);
        h.write_usize(i);
        *part = h.finish();
    }
    format!("{:016x}{:016x}", parts[0], parts[1])
}

/// What a `generate` (or `respond`) step produced.
struct Generated {
    /// The step's JSON output (`Null` when unusable after the retries).
    output: Value,
    generation: Option<Generation>,
    usage: TokenUsage,
    attempts: u32,
    failure: Option<String>,
    /// The step's message as first sent (retries append a correction after it).
    prompt: String,
}
