//! Triage evaluation suites, read leniently.
//!
//! The format is the one of `careflow_knowledge::eval` (and of `data/eval/dev.jsonl`): one JSON
//! object per line, blank lines skipped:
//!
//! ```json
//! {"id": "dev-001", "message": "…", "patient_id": null, "gold": "emergency_now",
//!  "scale": "careflow", "rules": ["back.cauda_equina"], "rationale": "one line", "tags": ["x"]}
//! ```
//!
//! - `id` (required): a non-empty string, unique within the file;
//! - `message` (required): the portal message, as the patient wrote it;
//! - `gold` (required): a label of careflow's scale (`emergency_now`, `urgent_same_day`,
//!   `within_24_72h`, `routine`, `self_care`, `admin`), of the published 4-level scale
//!   (`emergent`, `within_1_day`, `within_1_week`, `self_care`) or of the published 3-level
//!   scale (`emergent`, `non_emergent`, `self_care`);
//! - `scale` (optional): `careflow`, `four_level` or `three_level` (also `4-level`, `3-level`,
//!   `4`, `3`) — which scale `gold` is on. Without it the scale is the finest one that has the
//!   label: `self_care` reads as careflow's, `emergent` as the 4-level scale's (both readings
//!   score identically: each of these labels comes from exactly one careflow level);
//! - `patient_id` (optional): `null` or a positive whole number;
//! - `rules`, `tags` (optional): arrays of non-empty strings; `rationale` (optional): a string.
//!
//! Unlike the strict loader in `careflow_knowledge::eval`, [`load_suite`] does not stop at the
//! first bad line: bad JSON, a missing or invalid field, an unknown gold label, an unknown key,
//! a duplicate id (the later line is dropped) or an invalid patient id is recorded as a
//! [`LineProblem`] (line from 1, field, reason) and the line is skipped. Only a file that cannot
//! be read at all is an error.

use crate::EvalError;
use careflow_core::Disposition;
use careflow_knowledge::eval::PUBLISHED_LABELS;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// A disposition scale a gold label (and a scoring) can be on, finest first.
///
/// `admin` is kept as a non-clinical route on every scale so that an admin prediction can be
/// counted (and be wrong) on a published scale too; it has no acuity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// careflow's own: 5 clinical levels + admin.
    Careflow,
    /// Published 4-level scale: emergent / within_1_day / within_1_week / self_care.
    FourLevel,
    /// Published 3-level scale: emergent / non_emergent / self_care.
    ThreeLevel,
}

const CAREFLOW_LABELS: [&str; 6] = [
    "emergency_now",
    "urgent_same_day",
    "within_24_72h",
    "routine",
    "self_care",
    "admin",
];
const FOUR_LEVEL_LABELS: [&str; 5] = [
    "emergent",
    "within_1_day",
    "within_1_week",
    "self_care",
    "admin",
];
const THREE_LEVEL_LABELS: [&str; 4] = ["emergent", "non_emergent", "self_care", "admin"];

/// The label of the non-clinical route, on every scale.
pub const ADMIN: &str = "admin";

impl Scale {
    /// Finest first.
    pub const ALL: [Scale; 3] = [Scale::Careflow, Scale::FourLevel, Scale::ThreeLevel];

    /// The wire name (`careflow`, `four_level`, `three_level`).
    pub fn name(self) -> &'static str {
        match self {
            Scale::Careflow => "careflow",
            Scale::FourLevel => "four_level",
            Scale::ThreeLevel => "three_level",
        }
    }

    /// Reads a scale name as a suite may write it.
    pub fn parse(text: &str) -> Option<Scale> {
        match text.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "careflow" | "six_level" | "6_level" | "6" => Some(Scale::Careflow),
            "four_level" | "4_level" | "4" => Some(Scale::FourLevel),
            "three_level" | "3_level" | "3" => Some(Scale::ThreeLevel),
            _ => None,
        }
    }

    /// The labels of the scale, most urgent first, `admin` last.
    pub fn labels(self) -> &'static [&'static str] {
        match self {
            Scale::Careflow => &CAREFLOW_LABELS,
            Scale::FourLevel => &FOUR_LEVEL_LABELS,
            Scale::ThreeLevel => &THREE_LEVEL_LABELS,
        }
    }

    /// Whether `label` is on this scale.
    pub fn contains(self, label: &str) -> bool {
        self.labels().contains(&label)
    }

    /// A careflow disposition on this scale (through [`Disposition::to_four_level`] and
    /// [`Disposition::to_three_level`]; `admin` stays `admin`).
    pub fn map(self, d: Disposition) -> &'static str {
        match self {
            Scale::Careflow => d.label(),
            Scale::FourLevel => d.to_four_level().unwrap_or(ADMIN),
            Scale::ThreeLevel => d.to_three_level().unwrap_or(ADMIN),
        }
    }

    /// Acuity of a label on this scale: highest for the most urgent level, 0 for self care;
    /// `None` for `admin` or a label not on the scale.
    pub fn acuity(self, label: &str) -> Option<usize> {
        let labels = self.labels();
        let clinical = labels.len() - 1;
        labels
            .iter()
            .position(|l| *l == label)
            .filter(|&i| i < clinical)
            .map(|i| clinical - 1 - i)
    }

    /// Whether this scale is `finer` or coarser than it (a label on `finer` can be collapsed
    /// onto it).
    pub fn covers(self, finer: Scale) -> bool {
        self >= finer
    }

    /// The coarser of two scales.
    pub fn coarser(self, other: Scale) -> Scale {
        self.max(other)
    }

    /// `label` (on scale `from`) collapsed onto this scale; `None` when the label is not on
    /// `from` or this scale is finer than `from`. Derived from the [`Disposition`] mappings: the
    /// label of any careflow level that reads as `label` on `from`.
    pub fn collapse(self, from: Scale, label: &str) -> Option<&'static str> {
        if !self.covers(from) {
            return None;
        }
        Disposition::ALL
            .into_iter()
            .find(|d| from.map(*d) == label)
            .map(|d| self.map(d))
    }

    /// Whether `label` is the most urgent level of this scale.
    pub fn is_top(self, label: &str) -> bool {
        self.labels().first() == Some(&label)
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A gold label and the scale it is on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Gold {
    pub scale: Scale,
    pub label: String,
}

impl Gold {
    /// Reads a label; with `scale` the label must be on that scale, without it the finest scale
    /// that has the label is taken (careflow, then 4-level, then 3-level).
    pub fn parse(label: &str, scale: Option<Scale>) -> Result<Gold, String> {
        let label = label.trim();
        let found = match scale {
            Some(s) if s.contains(label) => Some(s),
            Some(s) => {
                return Err(format!(
                    "label `{label}` is not on the {} scale (expected one of {})",
                    s.name(),
                    s.labels().join(", ")
                ))
            }
            None => Scale::ALL.into_iter().find(|s| s.contains(label)),
        };
        match found {
            Some(scale) => Ok(Gold {
                scale,
                label: label.to_string(),
            }),
            None => Err(format!(
                "unknown label `{label}` (expected one of {}, or of the published scales: {})",
                Disposition::ALL.map(Disposition::label).join(", "),
                PUBLISHED_LABELS.join(", ")
            )),
        }
    }

    /// The label collapsed onto `scale`; `None` when `scale` is finer than the gold's.
    pub fn on(&self, scale: Scale) -> Option<&'static str> {
        scale.collapse(self.scale, &self.label)
    }

    /// Whether the gold is the non-clinical `admin` route.
    pub fn is_admin(&self) -> bool {
        self.label == ADMIN
    }

    /// The careflow disposition, when the gold is on careflow's scale.
    pub fn disposition(&self) -> Option<Disposition> {
        match self.scale {
            Scale::Careflow => self.label.parse().ok(),
            _ => None,
        }
    }
}

impl fmt::Display for Gold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.label, self.scale)
    }
}

/// One message of a suite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuiteItem {
    pub id: String,
    pub message: String,
    pub patient_id: Option<i64>,
    pub gold: Gold,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub rules: Vec<String>,
    #[serde(default)]
    pub rationale: Option<String>,
    /// The line of the file the item was read from (from 1).
    #[serde(default)]
    pub line: usize,
}

impl SuiteItem {
    /// An item with a gold label read as [`Gold::parse`] does (for tests and code-built suites).
    pub fn new(id: &str, message: &str, gold: &str) -> Result<SuiteItem, String> {
        Ok(SuiteItem {
            id: id.to_string(),
            message: message.to_string(),
            patient_id: None,
            gold: Gold::parse(gold, None)?,
            tags: Vec::new(),
            rules: Vec::new(),
            rationale: None,
            line: 0,
        })
    }
}

/// A line of a suite that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineProblem {
    /// From 1.
    pub line: usize,
    /// The field at fault; `None` when the line as a whole is (not JSON, not an object).
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "line {}: field `{field}`: {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// What a suite file held: the good items and the skipped lines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedSuite {
    pub items: Vec<SuiteItem>,
    pub problems: Vec<LineProblem>,
}

/// The keys a suite line may carry.
const KEYS: [&str; 8] = [
    "id",
    "message",
    "patient_id",
    "gold",
    "scale",
    "rules",
    "rationale",
    "tags",
];

/// Reads a suite file leniently; only an unreadable file is an error.
pub fn load_suite(path: impl AsRef<Path>) -> Result<LoadedSuite, EvalError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| EvalError::Io {
        file: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(parse_suite_bytes(&bytes))
}

/// Parses suite text (JSONL) leniently.
pub fn parse_suite(text: &str) -> LoadedSuite {
    parse_suite_bytes(text.as_bytes())
}

fn parse_suite_bytes(bytes: &[u8]) -> LoadedSuite {
    let mut out = LoadedSuite::default();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = match std::str::from_utf8(raw) {
            Ok(t) => t,
            Err(e) => {
                out.problems.push(LineProblem {
                    line,
                    field: None,
                    message: format!("not valid UTF-8: {e}"),
                });
                continue;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        match parse_line(line, text, &first_line) {
            Ok(item) => {
                first_line.insert(item.id.clone(), line);
                out.items.push(item);
            }
            Err(p) => out.problems.push(p),
        }
    }
    out
}

fn parse_line(
    line: usize,
    raw: &str,
    first_line: &HashMap<String, usize>,
) -> Result<SuiteItem, LineProblem> {
    let fail = |field: Option<&str>, message: String| LineProblem {
        line,
        field: field.map(str::to_string),
        message,
    };
    let value: Value = serde_json::from_str(raw)
        .map_err(|e| fail(None, format!("not a valid JSON object: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(fail(None, "a line must be one JSON object".into()));
    };
    let mut unknown: Vec<&String> = obj.keys().filter(|k| !KEYS.contains(&k.as_str())).collect();
    unknown.sort();
    if let Some(k) = unknown.first() {
        return Err(fail(
            Some(k),
            format!("unknown field (expected one of: {})", KEYS.join(", ")),
        ));
    }
    let text_field = |key: &str, required: bool| -> Result<Option<String>, LineProblem> {
        match obj.get(key) {
            None | Some(Value::Null) if required => Err(fail(Some(key), "is missing".into())),
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(fail(Some(key), "is empty".into()))
            }
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(other) => Err(fail(
                Some(key),
                format!("must be a string, found {}", json_type(other)),
            )),
        }
    };
    let list_field = |key: &str| -> Result<Vec<String>, LineProblem> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(entries)) => entries
                .iter()
                .enumerate()
                .map(|(n, v)| match v {
                    Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
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
    let scale = match text_field("scale", false)? {
        None => None,
        Some(s) => Some(Scale::parse(&s).ok_or_else(|| {
            fail(
                Some("scale"),
                format!("unknown scale `{s}` (expected careflow, four_level or three_level)"),
            )
        })?),
    };
    let gold_label = text_field("gold", true)?.unwrap_or_default();
    let gold = Gold::parse(&gold_label, scale).map_err(|m| fail(Some("gold"), m))?;
    let patient_id = match obj.get("patient_id") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_i64() {
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
    if let Some(prev) = first_line.get(&id) {
        return Err(fail(
            Some("id"),
            format!("duplicate id `{id}` (first on line {prev}); this line is skipped"),
        ));
    }
    Ok(SuiteItem {
        id,
        message,
        patient_id,
        gold,
        tags,
        rules,
        rationale,
        line,
    })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn published_label_sets_come_from_the_disposition_mappings() {
        for scale in [Scale::FourLevel, Scale::ThreeLevel] {
            let from_mapping: BTreeSet<&str> =
                Disposition::ALL.into_iter().map(|d| scale.map(d)).collect();
            let listed: BTreeSet<&str> = scale.labels().iter().copied().collect();
            assert_eq!(from_mapping, listed, "{scale}");
        }
        for label in PUBLISHED_LABELS {
            assert!(
                Scale::FourLevel.contains(label) || Scale::ThreeLevel.contains(label),
                "{label}"
            );
        }
    }

    #[test]
    fn collapsing_is_consistent_with_every_careflow_level() {
        // Collapsing a label must not depend on which careflow level it came from.
        for from in Scale::ALL {
            for to in Scale::ALL.into_iter().filter(|t| t.covers(from)) {
                for d in Disposition::ALL {
                    assert_eq!(to.collapse(from, from.map(d)), Some(to.map(d)), "{d}");
                }
            }
        }
        assert_eq!(
            Scale::ThreeLevel.collapse(Scale::FourLevel, "within_1_week"),
            Some("non_emergent")
        );
        assert_eq!(
            Scale::FourLevel.collapse(Scale::ThreeLevel, "emergent"),
            None
        );
        assert_eq!(Scale::Careflow.acuity("emergency_now"), Some(4));
        assert_eq!(Scale::FourLevel.acuity("within_1_day"), Some(2));
        assert_eq!(Scale::ThreeLevel.acuity("self_care"), Some(0));
        assert_eq!(Scale::ThreeLevel.acuity("admin"), None);
    }

    #[test]
    fn gold_scale_is_inferred_or_stated() {
        let g = |l: &str, s: Option<Scale>| Gold::parse(l, s);
        assert_eq!(g("self_care", None).map(|g| g.scale), Ok(Scale::Careflow));
        assert_eq!(g("emergent", None).map(|g| g.scale), Ok(Scale::FourLevel));
        assert_eq!(
            g("within_1_week", None).map(|g| g.scale),
            Ok(Scale::FourLevel)
        );
        assert_eq!(
            g("non_emergent", None).map(|g| g.scale),
            Ok(Scale::ThreeLevel)
        );
        assert_eq!(
            g("self_care", Some(Scale::ThreeLevel)).map(|g| g.scale),
            Ok(Scale::ThreeLevel)
        );
        assert!(g("non_emergent", Some(Scale::FourLevel)).is_err());
        assert!(g("urgent", None).is_err());
        assert_eq!(Scale::parse("3-level"), Some(Scale::ThreeLevel));
        assert_eq!(Scale::parse("4"), Some(Scale::FourLevel));
    }
}
