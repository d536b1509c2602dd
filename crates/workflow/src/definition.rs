//! A workflow as data: the steps of a request, their prompts, adapters, output schemas, token
//! limits, retries and transitions, read from a TOML file (`data/workflows/*.toml`).
//!
//! The step *kinds* are code (what a step can do); the workflow file composes them:
//! - `generate`: render the prompt, append it, generate JSON under the step's schema; retry
//!   (by appending a correction, never by rewriting the session) when the output is unusable;
//! - `retrieve`: read the patient's record (the fixed summary, and optionally model-written SQL
//!   through the guard and the patient scope), evaluate the red-flag rules, search the guideline
//!   passages, and append what was found with the step's prompt;
//! - `validate`: the deterministic checks of [`crate::validate`] on the disposition proposed by
//!   an earlier `generate` step, and the routing decision (accept, escalate, human review);
//! - `respond`: generate the patient-facing reply under the step's schema.
//!
//! Prompts are templates: `{{name}}` is replaced by a value of the request (see [`VARIABLES`]) or
//! `{{step.field}}` by a field of an earlier `generate` step's JSON output. A schema is JSON; the
//! string `"$dispositions"` in it stands for the enum of careflow's labels and
//! `"$cited_passages"` for an array of the retrieved passage ids.
//!
//! Everything is checked when the file is loaded, and an error names the file, the step and the
//! field: a workflow never fails half way through a request because of a typo.

use crate::template::{self, Template};
use crate::WorkflowError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// The default triage workflow, shipped in the binary.
pub const TRIAGE_TOML: &str = include_str!("../../../data/workflows/triage.toml");
/// The second shipped workflow: medication refill requests.
pub const REFILL_TOML: &str = include_str!("../../../data/workflows/medication_refill.toml");

/// Request values a template may use (besides `{{step.field}}`).
pub const VARIABLES: [&str; 13] = [
    "message",
    "schema_card",
    "digest",
    "dialect",
    "findings",
    "record",
    "sql_result",
    "rules_fired",
    "passages",
    "final_disposition",
    "patient_phrase",
    "validation_notes",
    "passage_ids",
];

/// The target of a transition that ends the workflow.
pub const END: &str = "end";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Generate,
    Retrieve,
    Validate,
    Respond,
}

impl StepKind {
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Generate => "generate",
            StepKind::Retrieve => "retrieve",
            StepKind::Validate => "validate",
            StepKind::Respond => "respond",
        }
    }
}

/// A transition taken when a field of the step's JSON output has a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnRule {
    /// Top-level field of the step's output.
    pub field: String,
    /// The value that triggers the rule (string, boolean or number).
    pub equals: toml::Value,
    /// Continue at this step (or `end`) instead of `next`.
    #[serde(default)]
    pub goto: Option<String>,
    /// Mark the request for the frontier tier, with this reason (the cascade decides at
    /// Validate whether it can go).
    #[serde(default)]
    pub escalate: Option<String>,
}

impl OnRule {
    pub fn matches(&self, output: &Value) -> bool {
        let got = &output[self.field.as_str()];
        match &self.equals {
            toml::Value::String(s) => got.as_str() == Some(s.as_str()),
            toml::Value::Boolean(b) => got.as_bool() == Some(*b),
            toml::Value::Integer(i) => got.as_i64() == Some(*i),
            toml::Value::Float(f) => got.as_f64() == Some(*f),
            _ => false,
        }
    }
}

/// One step as written in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    pub name: String,
    pub kind: StepKind,
    /// The LoRA adapter this step runs under (`None`: the base model). Applied only to the
    /// step's own tokens, so the session's earlier KV stays valid (activated LoRA).
    #[serde(default)]
    pub adapter: Option<String>,
    /// The message the step appends (a template).
    #[serde(default)]
    pub prompt: Option<String>,
    /// JSON schema of the output (`generate`, `respond`), as a JSON string.
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Further attempts when the output does not parse or is cut off (each doubles
    /// `max_tokens` and appends a correction).
    #[serde(default)]
    pub retries: u32,
    /// The next step (default: the following one in the file; `end` stops).
    #[serde(default)]
    pub next: Option<String>,
    #[serde(default)]
    pub on: Vec<OnRule>,
    // retrieve
    /// The instruction for model-written SQL (a template); without it, only the fixed record
    /// summary is read.
    #[serde(default)]
    pub sql_prompt: Option<String>,
    #[serde(default)]
    pub sql_max_tokens: Option<usize>,
    #[serde(default)]
    pub sql_max_rows: Option<u64>,
    /// Guideline passages retrieved.
    #[serde(default)]
    pub passages: Option<usize>,
    // validate
    /// The `generate` step whose `disposition` field is the proposal.
    #[serde(default)]
    pub proposal: Option<String>,
    #[serde(default)]
    pub confidence_threshold: Option<f32>,
    // respond
    /// The schema field holding the reply text.
    #[serde(default)]
    pub reply_field: Option<String>,
}

/// The frontier tier's part of a workflow: the instruction that goes with the compact case
/// summary, and the schema of its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffDef {
    pub system: String,
    pub prompt: String,
    pub schema: String,
    pub max_tokens: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDef {
    name: String,
    description: String,
    version: String,
    /// The shared prefix (system message), identical for every request.
    system: String,
    #[serde(default)]
    start: Option<String>,
    handoff: HandoffDef,
    #[serde(rename = "step")]
    steps: Vec<StepDef>,
}

/// A checked step, ready to run.
#[derive(Debug, Clone)]
pub struct Step {
    pub def: StepDef,
    pub prompt: Option<Template>,
    pub sql_prompt: Option<Template>,
    pub schema: Option<Value>,
    /// Index of the next step (`None`: end).
    pub next: Option<usize>,
}

/// A checked workflow.
#[derive(Debug, Clone)]
pub struct WorkflowDef {
    pub name: String,
    pub description: String,
    pub version: String,
    pub source: String,
    pub system: Template,
    pub handoff: HandoffDef,
    pub handoff_prompt: Template,
    pub handoff_schema: Value,
    pub start: usize,
    pub steps: Vec<Step>,
}

impl WorkflowDef {
    /// The default triage workflow.
    pub fn triage() -> Result<Self, WorkflowError> {
        Self::parse(TRIAGE_TOML, "<embedded triage.toml>")
    }

    /// The shipped medication-refill workflow.
    pub fn medication_refill() -> Result<Self, WorkflowError> {
        Self::parse(REFILL_TOML, "<embedded medication_refill.toml>")
    }

    pub fn load(path: &Path) -> Result<Self, WorkflowError> {
        let text = std::fs::read_to_string(path).map_err(|e| WorkflowError::Definition {
            file: path.display().to_string(),
            step: None,
            field: "-".into(),
            reason: format!("cannot read the file: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, source: &str) -> Result<Self, WorkflowError> {
        let err = |step: Option<&str>, field: &str, reason: String| WorkflowError::Definition {
            file: source.to_string(),
            step: step.map(str::to_string),
            field: field.to_string(),
            reason,
        };
        let file: FileDef = toml::from_str(text).map_err(|e| {
            // toml names the key path and the line; keep its message whole.
            let field = e
                .span()
                .map(|s| format!("line {}", line_of(text, s.start)))
                .unwrap_or_else(|| "-".into());
            err(
                step_at(text, e.span().map(|s| s.start)).as_deref(),
                &field,
                e.message().to_string(),
            )
        })?;
        if file.steps.is_empty() {
            return Err(err(
                None,
                "step",
                "a workflow needs at least one step".into(),
            ));
        }
        let mut names: Vec<&str> = Vec::new();
        for s in &file.steps {
            if s.name == END || !valid_name(&s.name) {
                return Err(err(
                    Some(&s.name),
                    "name",
                    "a step name is lower-case letters, digits and `_`, and not `end`".into(),
                ));
            }
            if names.contains(&s.name.as_str()) {
                return Err(err(
                    Some(&s.name),
                    "name",
                    "two steps have this name".into(),
                ));
            }
            names.push(&s.name);
        }
        let generate_steps: BTreeSet<&str> = file
            .steps
            .iter()
            .filter(|s| s.kind == StepKind::Generate)
            .map(|s| s.name.as_str())
            .collect();
        let index = |target: &str| names.iter().position(|n| *n == target);
        let check_template = |step: Option<&str>, field: &str, text: &str| {
            let t = Template::parse(text).map_err(|r| err(step, field, r))?;
            for var in t.variables() {
                let known = match var.split_once('.') {
                    Some((s, f)) => generate_steps.contains(s) && !f.is_empty(),
                    None => VARIABLES.contains(&var),
                };
                if !known {
                    return Err(err(
                        step,
                        field,
                        format!(
                            "unknown variable {{{{{var}}}}} (known: {}, or step.field of a generate step)",
                            VARIABLES.join(", ")
                        ),
                    ));
                }
            }
            Ok(t)
        };
        let parse_schema = |step: Option<&str>, field: &str, text: &str| {
            let v: Value = serde_json::from_str(text)
                .map_err(|e| err(step, field, format!("not valid JSON: {e}")))?;
            if !v.is_object() {
                return Err(err(step, field, "a schema is a JSON object".into()));
            }
            Ok(v)
        };

        let system = check_template(None, "system", &file.system)?;
        let handoff_prompt = check_template(None, "handoff.prompt", &file.handoff.prompt)?;
        let handoff_schema = parse_schema(None, "handoff.schema", &file.handoff.schema)?;
        if handoff_schema["properties"]["disposition"].is_null() {
            return Err(err(
                None,
                "handoff.schema",
                "the frontier's answer needs a `disposition` property".into(),
            ));
        }
        if file.handoff.max_tokens == 0 {
            return Err(err(None, "handoff.max_tokens", "must be at least 1".into()));
        }

        let mut steps = Vec::new();
        let mut validates = 0;
        let mut responds = 0;
        for (i, s) in file.steps.iter().enumerate() {
            let name = Some(s.name.as_str());
            let needs = |field: &str, present: bool| {
                if present {
                    Ok(())
                } else {
                    Err(err(
                        name,
                        field,
                        format!("a {} step needs `{field}`", s.kind.name()),
                    ))
                }
            };
            let prompt = s
                .prompt
                .as_deref()
                .map(|p| check_template(name, "prompt", p))
                .transpose()?;
            let sql_prompt = s
                .sql_prompt
                .as_deref()
                .map(|p| check_template(name, "sql_prompt", p))
                .transpose()?;
            let schema = s
                .schema
                .as_deref()
                .map(|p| parse_schema(name, "schema", p))
                .transpose()?;
            needs("prompt", prompt.is_some())?;
            match s.kind {
                StepKind::Generate | StepKind::Respond => {
                    needs("schema", schema.is_some())?;
                    needs("max_tokens", s.max_tokens.is_some_and(|n| n > 0))?;
                }
                StepKind::Retrieve => {
                    if s.sql_prompt.is_some() {
                        needs("sql_max_tokens", s.sql_max_tokens.is_some_and(|n| n > 0))?;
                    }
                }
                StepKind::Validate => {
                    validates += 1;
                    let Some(p) = s.proposal.as_deref() else {
                        return Err(err(
                            name,
                            "proposal",
                            "a validate step needs `proposal`".into(),
                        ));
                    };
                    let Some(pi) = index(p) else {
                        return Err(err(name, "proposal", format!("no step named `{p}`")));
                    };
                    let ps = &file.steps[pi];
                    let has_disposition = ps.kind == StepKind::Generate
                        && ps
                            .schema
                            .as_deref()
                            .and_then(|t| serde_json::from_str::<Value>(t).ok())
                            .is_some_and(|v| !v["properties"]["disposition"].is_null());
                    if !has_disposition || pi >= i {
                        return Err(err(
                            name,
                            "proposal",
                            format!("`{p}` must be an earlier generate step whose schema has a `disposition` property"),
                        ));
                    }
                    if let Some(t) = s.confidence_threshold {
                        if !(0.0..=1.0).contains(&t) {
                            return Err(err(
                                name,
                                "confidence_threshold",
                                "must be within 0..1".into(),
                            ));
                        }
                    }
                }
            }
            if s.kind == StepKind::Respond {
                responds += 1;
                let field = s.reply_field.as_deref().unwrap_or("reply");
                if schema
                    .as_ref()
                    .is_some_and(|v| v["properties"][field].is_null())
                {
                    return Err(err(
                        name,
                        "reply_field",
                        format!("the schema has no `{field}` property"),
                    ));
                }
            }
            if !s.on.is_empty() && s.kind != StepKind::Generate {
                return Err(err(
                    name,
                    "on",
                    "only generate steps have outputs to branch on".into(),
                ));
            }
            for (k, rule) in s.on.iter().enumerate() {
                let field = format!("on[{k}]");
                if rule.goto.is_none() && rule.escalate.is_none() {
                    return Err(err(name, &field, "needs `goto` or `escalate`".into()));
                }
                if schema
                    .as_ref()
                    .is_some_and(|v| v["properties"][rule.field.as_str()].is_null())
                {
                    return Err(err(
                        name,
                        &format!("{field}.field"),
                        format!("the step's schema has no `{}` property", rule.field),
                    ));
                }
                if let Some(g) = &rule.goto {
                    if g != END && index(g).is_none() {
                        return Err(err(
                            name,
                            &format!("{field}.goto"),
                            format!("no step named `{g}`"),
                        ));
                    }
                }
            }
            let next = match s.next.as_deref() {
                Some(END) => None,
                Some(n) => Some(
                    index(n).ok_or_else(|| err(name, "next", format!("no step named `{n}`")))?,
                ),
                None => (i + 1 < file.steps.len()).then_some(i + 1),
            };
            steps.push(Step {
                def: s.clone(),
                prompt,
                sql_prompt,
                schema,
                next,
            });
        }
        if validates != 1 {
            return Err(err(
                None,
                "step",
                format!("a workflow has exactly one validate step (found {validates})"),
            ));
        }
        if responds != 1 {
            return Err(err(
                None,
                "step",
                format!("a workflow has exactly one respond step (found {responds})"),
            ));
        }
        let start = match file.start.as_deref() {
            Some(s) => {
                index(s).ok_or_else(|| err(None, "start", format!("no step named `{s}`")))?
            }
            None => 0,
        };
        Ok(WorkflowDef {
            name: file.name,
            description: file.description,
            version: file.version,
            source: source.to_string(),
            system,
            handoff: file.handoff,
            handoff_prompt,
            handoff_schema,
            start,
            steps,
        })
    }

    /// Adapter names the workflow's steps use.
    pub fn adapters(&self) -> Vec<(String, String)> {
        self.steps
            .iter()
            .filter_map(|s| s.def.adapter.clone().map(|a| (s.def.name.clone(), a)))
            .collect()
    }

    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.def.name == name)
    }

    /// Checks the adapters the steps name against those the engine has loaded.
    pub fn check_adapters(&self, loaded: &[String]) -> Result<(), WorkflowError> {
        for (step, adapter) in self.adapters() {
            if !loaded.contains(&adapter) {
                return Err(WorkflowError::Definition {
                    file: self.source.clone(),
                    step: Some(step),
                    field: "adapter".into(),
                    reason: format!(
                        "the engine has no adapter `{adapter}` (loaded: {})",
                        if loaded.is_empty() {
                            "none".to_string()
                        } else {
                            loaded.join(", ")
                        }
                    ),
                });
            }
        }
        Ok(())
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The name of the `[[step]]` table an error offset falls in, when it can be told.
fn step_at(text: &str, offset: Option<usize>) -> Option<String> {
    let before = &text[..offset?.min(text.len())];
    let table = before.rfind("[[step]]")?;
    let after_table = &text[table..];
    after_table.lines().find_map(|l| {
        let l = l.trim();
        let rest = l.strip_prefix("name")?.trim_start().strip_prefix('=')?;
        Some(rest.trim().trim_matches('"').to_string())
    })
}

/// Replaces `"$dispositions"` and `"$cited_passages"` in a schema.
pub fn expand_schema(schema: &Value, labels: &[&str], passage_ids: &[String]) -> Value {
    match schema {
        Value::String(s) if s == "$dispositions" => serde_json::json!({ "enum": labels }),
        Value::String(s) if s == "$cited_passages" => {
            if passage_ids.is_empty() {
                serde_json::json!({"type": "array", "maxItems": 0})
            } else {
                serde_json::json!({
                    "type": "array",
                    "items": {"enum": passage_ids},
                    "maxItems": passage_ids.len().min(3)
                })
            }
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), expand_schema(v, labels, passage_ids)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|v| expand_schema(v, labels, passage_ids))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Renders a template; re-exported for the runner.
pub fn render(t: &Template, vars: &template::Vars) -> String {
    t.render(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> (Option<String>, String, String) {
        match WorkflowDef::parse(text, "bad.toml") {
            Err(WorkflowError::Definition {
                file,
                step,
                field,
                reason,
            }) => {
                assert_eq!(file, "bad.toml");
                (step, field, reason)
            }
            Err(e) => panic!("not a definition error: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    /// The shipped triage file with one line replaced.
    fn triage_with(from: &str, to: &str) -> String {
        assert!(TRIAGE_TOML.contains(from), "fixture drifted: {from}");
        TRIAGE_TOML.replacen(from, to, 1)
    }

    #[test]
    fn the_shipped_workflows_load() {
        let t = WorkflowDef::triage().unwrap();
        let names: Vec<&str> = t.steps.iter().map(|s| s.def.name.as_str()).collect();
        assert_eq!(
            names,
            ["plan", "retrieve", "analyze", "validate", "respond"]
        );
        let r = WorkflowDef::medication_refill().unwrap();
        assert_eq!(r.name, "medication_refill");
        assert_eq!(
            r.step("validate").unwrap().def.proposal.as_deref(),
            Some("check")
        );
        assert_ne!(t.system, r.system, "a different shared prefix");
    }

    #[test]
    fn an_unknown_placeholder_names_the_step_and_field() {
        let (step, field, reason) = error_of(&triage_with(
            "tells them to: {{patient_phrase}}",
            "tells them to: {{patient_frase}}",
        ));
        assert_eq!(step.as_deref(), Some("respond"));
        assert_eq!(field, "prompt");
        assert!(reason.contains("patient_frase"), "{reason}");
    }

    #[test]
    fn a_wrong_type_names_the_step_and_line() {
        let (step, field, reason) =
            error_of(&triage_with("max_tokens = 60", "max_tokens = \"sixty\""));
        assert_eq!(step.as_deref(), Some("plan"));
        assert!(field.starts_with("line "), "{field}");
        assert!(reason.contains("invalid type"), "{reason}");
        let (_, _, reason) = error_of(&triage_with("max_tokens = 60", "max_tokenz = 60"));
        assert!(reason.contains("max_tokenz"), "{reason}");
    }

    #[test]
    fn broken_schemas_transitions_and_proposals_are_refused() {
        let (step, field, reason) = error_of(&triage_with(
            "\"complaint\": {\"type\"",
            "\"complaint\" {\"type\"",
        ));
        assert_eq!((step.as_deref(), field.as_str()), (Some("plan"), "schema"));
        assert!(reason.contains("not valid JSON"));

        let (step, field, _) = error_of(&triage_with(
            "escalate = \"the plan marks the case complex\"",
            "goto = \"nowhere\"",
        ));
        assert_eq!(
            (step.as_deref(), field.as_str()),
            (Some("plan"), "on[0].goto")
        );

        let (step, field, _) = error_of(&triage_with(
            "proposal = \"analyze\"",
            "proposal = \"plan\"",
        ));
        assert_eq!(
            (step.as_deref(), field.as_str()),
            (Some("validate"), "proposal")
        );

        let (step, field, _) = error_of(&triage_with(
            "reply_field = \"reply\"",
            "reply_field = \"text\"",
        ));
        assert_eq!(
            (step.as_deref(), field.as_str()),
            (Some("respond"), "reply_field")
        );

        let (_, field, reason) =
            error_of(&triage_with("kind = \"validate\"", "kind = \"generate\""));
        assert!(
            field == "step" || field == "max_tokens" || field == "schema",
            "{field}: {reason}"
        );
    }

    #[test]
    fn adapters_the_engine_lacks_are_named() {
        let def = WorkflowDef::parse(
            &triage_with(
                "kind = \"generate\"\nprompt",
                "kind = \"generate\"\nadapter = \"plan-lora\"\nprompt",
            ),
            "x.toml",
        )
        .unwrap();
        let e = def.check_adapters(&[]).unwrap_err().to_string();
        assert!(e.contains("step `plan`") && e.contains("plan-lora"), "{e}");
        assert!(def.check_adapters(&["plan-lora".into()]).is_ok());
    }

    #[test]
    fn schema_placeholders_expand() {
        let s = serde_json::json!({"properties": {"d": "$dispositions", "c": "$cited_passages"}});
        let e = expand_schema(&s, &["routine", "admin"], &["p1".into()]);
        assert_eq!(e["properties"]["d"]["enum"][1], "admin");
        assert_eq!(e["properties"]["c"]["items"]["enum"][0], "p1");
        let none = expand_schema(&s, &["routine"], &[]);
        assert_eq!(none["properties"]["c"]["maxItems"], 0);
    }
}
