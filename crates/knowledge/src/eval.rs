//! Evaluation suites: JSONL files of portal messages, each with the disposition it should get.
//!
//! One JSON object per line (blank lines are skipped):
//!
//! ```json
//! {"id": "dev-001", "message": "…", "patient_id": null, "gold": "emergency_now",
//!  "rules": ["back.cauda_equina"], "rationale": "one line", "tags": ["negation"]}
//! ```
//!
//! - `id` (required): unique within the file;
//! - `message` (required): the portal message, as the patient wrote it;
//! - `gold` (required): a label of careflow's scale (`emergency_now`, `urgent_same_day`,
//!   `within_24_72h`, `routine`, `self_care`, `admin`) or of the published scales
//!   (`emergent`, `non_emergent`, `within_1_day`, `within_1_week`, `self_care`);
//! - `patient_id` (optional): `null` or a positive whole number (a person in the records);
//! - `rules` (optional): the rule ids that should fire on the message;
//! - `rationale` (optional): one line on why the gold label is what it is;
//! - `tags` (optional): labels for slicing results (`negation`, `child`, …).
//!
//! Any other key is refused, so a misspelt field never passes silently. Every error names the
//! file, the line (from 1) and the field ([`KnowledgeError::Suite`]).

use crate::KnowledgeError;
use careflow_core::Disposition;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

/// Gold labels of the published portal-triage scales (3-level and 4-level) that a suite may use
/// instead of careflow's own (see [`Disposition::to_three_level`] and
/// [`Disposition::to_four_level`]).
pub const PUBLISHED_LABELS: [&str; 5] = [
    "emergent",
    "non_emergent",
    "within_1_day",
    "within_1_week",
    "self_care",
];

/// The keys a suite line may carry.
const KEYS: [&str; 7] = [
    "id",
    "message",
    "patient_id",
    "gold",
    "rules",
    "rationale",
    "tags",
];

/// One message of an evaluation suite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvalItem {
    pub id: String,
    pub message: String,
    /// The person in the records the message comes from, when the case needs record facts.
    pub patient_id: Option<i64>,
    /// The gold label as written: a careflow label or a published-scale label.
    pub gold: String,
    /// Rule ids that should fire on the message (may be empty).
    pub rules: Vec<String>,
    pub rationale: Option<String>,
    pub tags: Vec<String>,
    /// The line of the file the item was read from (from 1).
    pub line: usize,
}

impl EvalItem {
    /// The gold label on careflow's scale; `None` when the suite uses a published scale
    /// (`self_care` is the same word on both and reads as [`Disposition::SelfCare`]).
    pub fn gold_disposition(&self) -> Option<Disposition> {
        self.gold.parse().ok()
    }

    /// Whether the item carries the tag.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// Reads a suite file (JSONL). The error names the file, the line and the field at fault.
pub fn load_suite(path: impl AsRef<Path>) -> Result<Vec<EvalItem>, KnowledgeError> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| KnowledgeError::Io {
        file: name.clone(),
        reason: e.to_string(),
    })?;
    parse_suite(&name, &text)
}

/// Parses suite text (JSONL); `name` is used in errors.
pub fn parse_suite(name: &str, text: &str) -> Result<Vec<EvalItem>, KnowledgeError> {
    let mut items = Vec::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let fail = |field: Option<&str>, reason: String| KnowledgeError::Suite {
            file: name.to_string(),
            line,
            field: field.map(str::to_string),
            reason: match field {
                Some(f) => format!("field `{f}`: {reason}"),
                None => reason,
            },
        };
        let value: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| fail(None, format!("not a valid JSON object: {e}")))?;
        let serde_json::Value::Object(obj) = value else {
            return Err(fail(None, "a line must be one JSON object".into()));
        };
        let mut unknown: Vec<&String> =
            obj.keys().filter(|k| !KEYS.contains(&k.as_str())).collect();
        unknown.sort();
        if let Some(k) = unknown.first() {
            return Err(fail(
                Some(k),
                format!("unknown field (expected one of: {})", KEYS.join(", ")),
            ));
        }
        let text_field = |key: &str, required: bool| -> Result<Option<String>, KnowledgeError> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) if required => {
                    Err(fail(Some(key), "is missing".into()))
                }
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) if s.trim().is_empty() => {
                    Err(fail(Some(key), "is empty".into()))
                }
                Some(serde_json::Value::String(s)) => Ok(Some(s.trim().to_string())),
                Some(other) => Err(fail(
                    Some(key),
                    format!("must be a string, found {}", json_type(other)),
                )),
            }
        };
        let list_field = |key: &str| -> Result<Vec<String>, KnowledgeError> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Ok(Vec::new()),
                Some(serde_json::Value::Array(entries)) => entries
                    .iter()
                    .enumerate()
                    .map(|(n, v)| match v {
                        serde_json::Value::String(s) if !s.trim().is_empty() => {
                            Ok(s.trim().to_string())
                        }
                        other => Err(fail(
                            Some(key),
                            format!(
                                "entry #{} must be a non-empty string, found {}",
                                n + 1,
                                json_type(other)
                            ),
                        )),
                    })
                    .collect(),
                Some(other) => Err(fail(
                    Some(key),
                    format!("must be an array of strings, found {}", json_type(other)),
                )),
            }
        };
        let id = text_field("id", true)?.unwrap_or_default();
        let message = text_field("message", true)?.unwrap_or_default();
        let gold = text_field("gold", true)?.unwrap_or_default();
        if gold.parse::<Disposition>().is_err() && !PUBLISHED_LABELS.contains(&gold.as_str()) {
            return Err(fail(
                Some("gold"),
                format!(
                    "unknown label `{gold}` (expected one of {}, or of the published scales: {})",
                    Disposition::ALL.map(Disposition::label).join(", "),
                    PUBLISHED_LABELS.join(", ")
                ),
            ));
        }
        let patient_id = match obj.get("patient_id") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Number(n)) => match n.as_i64() {
                Some(v) if v > 0 => Some(v),
                _ => {
                    return Err(fail(
                        Some("patient_id"),
                        format!("{n} is not a positive whole number"),
                    ))
                }
            },
            Some(other) => {
                return Err(fail(
                    Some("patient_id"),
                    format!(
                        "must be null or a positive whole number, found {}",
                        json_type(other)
                    ),
                ))
            }
        };
        let rules = list_field("rules")?;
        let tags = list_field("tags")?;
        let rationale = text_field("rationale", false)?;
        if let Some(prev) = first_line.insert(id.clone(), line) {
            return Err(fail(
                Some("id"),
                format!("duplicate id `{id}` (first on line {prev})"),
            ));
        }
        items.push(EvalItem {
            id,
            message,
            patient_id,
            gold,
            rules,
            rationale,
            tags,
            line,
        });
    }
    if items.is_empty() {
        return Err(KnowledgeError::Empty {
            place: name.to_string(),
            reason: "no evaluation items".into(),
        });
    }
    Ok(items)
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_lines_parse_with_defaults() {
        let text = "{\"id\":\"a\",\"message\":\"hi\",\"gold\":\"admin\"}\n\n\
                    {\"id\":\"b\",\"message\":\"chest pain\",\"gold\":\"emergent\",\"patient_id\":3,\
                    \"rules\":[\"chest.any\"],\"tags\":[\"x\"],\"rationale\":\"r\"}\n";
        let items = parse_suite("s.jsonl", text).expect("parses");
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].gold_disposition(), Some(Disposition::Admin));
        assert!(items[0].rules.is_empty() && items[0].patient_id.is_none());
        assert_eq!(items[1].line, 3);
        assert_eq!(items[1].patient_id, Some(3));
        assert_eq!(items[1].gold_disposition(), None);
        assert!(items[1].has_tag("x"));
    }

    #[test]
    fn bad_lines_name_the_line_and_the_field() {
        let good = "{\"id\":\"a\",\"message\":\"m\",\"gold\":\"routine\"}";
        let cases: [(&str, Option<&str>); 9] = [
            (
                "{\"id\":\"b\",\"message\":\"m\",\"gold\":\"urgent\"}",
                Some("gold"),
            ),
            ("{\"id\":\"b\",\"message\":\"m\"}", Some("gold")),
            (
                "{\"id\":\"b\",\"message\":\"\",\"gold\":\"routine\"}",
                Some("message"),
            ),
            (
                "{\"id\":\"a\",\"message\":\"m\",\"gold\":\"routine\"}",
                Some("id"),
            ),
            (
                "{\"id\":\"b\",\"message\":\"m\",\"gold\":\"routine\",\"tag\":[]}",
                Some("tag"),
            ),
            (
                "{\"id\":\"b\",\"message\":\"m\",\"gold\":\"routine\",\"rules\":\"x\"}",
                Some("rules"),
            ),
            (
                "{\"id\":\"b\",\"message\":\"m\",\"gold\":\"routine\",\"patient_id\":-2}",
                Some("patient_id"),
            ),
            ("{\"id\":\"b\",\"message\":\"m\",\"gold\":\"routine\"", None),
            ("[1, 2]", None),
        ];
        for (bad, field) in cases {
            let text = format!("{good}\n{bad}\n");
            let err = parse_suite("dev.jsonl", &text).expect_err(bad);
            match &err {
                KnowledgeError::Suite {
                    file,
                    line,
                    field: f,
                    ..
                } => {
                    assert_eq!(file, "dev.jsonl");
                    assert_eq!(*line, 2, "{bad}");
                    assert_eq!(f.as_deref(), field, "{bad}: {err}");
                }
                other => panic!("{bad}: unexpected {other:?}"),
            }
            let shown = err.to_string();
            assert!(shown.starts_with("dev.jsonl: line 2: "), "{shown}");
            if let Some(f) = field {
                assert!(shown.contains(&format!("`{f}`")), "{shown}");
            }
        }
        assert!(matches!(
            parse_suite("e.jsonl", "\n\n"),
            Err(KnowledgeError::Empty { .. })
        ));
        assert!(matches!(
            load_suite("/nonexistent/careflow/dev.jsonl"),
            Err(KnowledgeError::Io { .. })
        ));
    }
}
