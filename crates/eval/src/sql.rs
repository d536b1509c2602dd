//! `careflow eval sql`: can a local model write the SQL a triage needs?
//!
//! Each item is a question about one patient with the rows a correct query returns. The model
//! sees the schema card (the same text the workflow's shared prefix carries) and the question,
//! writes one SELECT (JSON-constrained), and the statement runs through the very same guard and
//! patient scope as the Retrieve step. Execution accuracy compares rows as multisets (column
//! names and order ignored; numbers within 1e-6 relative); anything refused, failing or
//! unparsable counts as a fallback, as it would in the workflow.

use crate::EvalError;
use careflow_core::PatientId;
use careflow_engine::{ChatMessage, Engine, GenerateParams, OpenSession, Turn};
use careflow_records::{GuardPolicy, Records};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlItem {
    pub id: String,
    pub patient_id: i64,
    pub question: String,
    /// A reference statement (not shown to the model).
    pub sql: String,
    #[serde(default)]
    pub expected_rows: Option<Vec<Vec<Value>>>,
    #[serde(default)]
    pub expected_count: Option<usize>,
}

pub fn load_suite(path: &Path) -> Result<Vec<SqlItem>, EvalError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::Io {
        file: file.clone(),
        reason: e.to_string(),
    })?;
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut de = serde_json::Deserializer::from_str(line);
        let item: SqlItem = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = e.path().to_string();
            EvalError::Line {
                file: file.clone(),
                line: i + 1,
                reason: if field == "." {
                    e.inner().to_string()
                } else {
                    format!("field `{field}`: {}", e.inner())
                },
            }
        })?;
        if item.expected_rows.is_none() && item.expected_count.is_none() {
            return Err(EvalError::Line {
                file: file.clone(),
                line: i + 1,
                reason: "field `expected_rows` or `expected_count` is required".into(),
            });
        }
        items.push(item);
    }
    Ok(items)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Ran and returned the expected rows.
    Correct,
    /// Ran, wrong rows.
    Wrong,
    /// Refused by the guard, failed in the database, or not parseable: the workflow falls back.
    Fallback,
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemResult {
    pub id: String,
    pub outcome: Outcome,
    pub sql: Option<String>,
    pub reason: Option<String>,
    pub rows: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SqlReport {
    pub model: String,
    pub items: usize,
    pub correct: usize,
    pub wrong: usize,
    pub fallback: usize,
    pub execution_accuracy: f64,
    pub fallback_rate: f64,
    pub results: Vec<ItemResult>,
}

const SQL_SYSTEM: &str = "You write one SQL SELECT statement that answers a question about the \
current patient's record. Answer in JSON: {\"sql\": \"SELECT ...\"}.";

pub async fn run(
    engine: Arc<dyn Engine>,
    records: &Records,
    items: &[SqlItem],
    progress: &(dyn Fn(usize, usize) + Send + Sync),
) -> Result<SqlReport, EvalError> {
    let dialect = match records.backend() {
        careflow_records::Backend::Sqlite => "SQLite",
        careflow_records::Backend::Postgres => "PostgreSQL",
    };
    let prefix = vec![ChatMessage::system(format!(
        "{SQL_SYSTEM}\n\n{}",
        careflow_records::schema_card()
    ))];
    let policy = GuardPolicy::default();
    let mut results = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let opened = engine
            .open(OpenSession {
                prefix: prefix.clone(),
                cache_prefix: true,
                ..Default::default()
            })
            .await?;
        let turn = engine
            .turn(
                opened.id,
                Turn {
                    messages: vec![ChatMessage::user(format!(
                        "Question: {}\nWrite one {dialect} SELECT.",
                        item.question
                    ))],
                    generate: Some(GenerateParams::json(
                        160,
                        careflow_workflow::prompts::sql_schema(),
                    )),
                    ..Default::default()
                },
            )
            .await;
        let _ = engine.close(opened.id).await;
        let text = turn?.generation.map(|g| g.text).unwrap_or_default();
        let sql = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["sql"].as_str().map(str::to_string));
        let result = match &sql {
            None => ItemResult {
                id: item.id.clone(),
                outcome: Outcome::Fallback,
                sql: None,
                reason: Some("the model's output did not parse".into()),
                rows: 0,
            },
            Some(q) => match records
                .query_scoped(PatientId(item.patient_id), q, &policy)
                .await
            {
                Ok(r) => {
                    let ok = matches_expected(&r.rows, item);
                    ItemResult {
                        id: item.id.clone(),
                        outcome: if ok { Outcome::Correct } else { Outcome::Wrong },
                        sql: sql.clone(),
                        reason: None,
                        rows: r.rows.len(),
                    }
                }
                Err(e) => ItemResult {
                    id: item.id.clone(),
                    outcome: Outcome::Fallback,
                    sql: sql.clone(),
                    reason: Some(e.to_string()),
                    rows: 0,
                },
            },
        };
        results.push(result);
        progress(i + 1, items.len());
    }
    let count = |o: Outcome| results.iter().filter(|r| r.outcome == o).count();
    let n = results.len().max(1) as f64;
    Ok(SqlReport {
        model: engine.info().name.clone(),
        items: results.len(),
        correct: count(Outcome::Correct),
        wrong: count(Outcome::Wrong),
        fallback: count(Outcome::Fallback),
        execution_accuracy: count(Outcome::Correct) as f64 / n,
        fallback_rate: count(Outcome::Fallback) as f64 / n,
        results,
    })
}

fn matches_expected(got: &[Vec<Value>], item: &SqlItem) -> bool {
    match (&item.expected_rows, item.expected_count) {
        (Some(want), _) => same_multiset(got, want),
        (None, Some(n)) => got.len() == n,
        (None, None) => false,
    }
}

fn key(row: &[Value]) -> String {
    row.iter()
        .map(|v| match v.as_f64() {
            Some(x) => format!("{x:.6e}"),
            None => v.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

/// Rows equal as multisets (order ignored), numbers compared to 7 significant digits.
pub fn same_multiset(got: &[Vec<Value>], want: &[Vec<Value>]) -> bool {
    if got.len() != want.len() {
        return false;
    }
    let mut a: Vec<String> = got.iter().map(|r| key(r)).collect();
    let mut b: Vec<String> = want.iter().map(|r| key(r)).collect();
    a.sort();
    b.sort();
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_compare_as_multisets_with_numeric_tolerance() {
        let want = vec![vec![json!("a"), json!(1.0)], vec![json!("b"), json!(2)]];
        let got = vec![vec![json!("b"), json!(2.0)], vec![json!("a"), json!(1)]];
        assert!(same_multiset(&got, &want));
        assert!(!same_multiset(&got[..1], &want));
        let wrong = vec![vec![json!("b"), json!(2.5)], vec![json!("a"), json!(1)]];
        assert!(!same_multiset(&wrong, &want));
    }

    #[test]
    fn a_malformed_suite_line_names_its_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"patient_id\":1,\"question\":\"q\",\"sql\":\"SELECT 1\",\"expected_count\":1}\n\n{\"id\":\"b\",\"patient_id\":\"x\"}\n",
        )
        .unwrap();
        let err = load_suite(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 3") && err.contains("patient_id"),
            "{err}"
        );
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"patient_id\":1,\"question\":\"q\",\"sql\":\"SELECT 1\"}\n",
        )
        .unwrap();
        let err = load_suite(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 1") && err.contains("expected_rows"),
            "{err}"
        );
    }
}
