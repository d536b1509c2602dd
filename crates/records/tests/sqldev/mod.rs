//! The SQL dev set (`data/eval/sql_dev.jsonl`, also run against models by `careflow eval sql`): questions about one patient of the bundled
//! Synthea sample, each with a reference SQL (written without any patient filter: the scope
//! supplies it) and the expected rows, computed by `tests/data/make_sql_dev.py` on a copy
//! of the database that holds only that patient (an oracle independent of the guard).
#![allow(dead_code)]

use careflow_core::PatientId;
use careflow_records::{GuardPolicy, Records};
use serde::Deserialize;
use serde_json::Value;

pub const DEV_SET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/eval/sql_dev.jsonl");

#[derive(Debug, Deserialize)]
pub struct Item {
    pub id: String,
    pub patient_id: i64,
    pub question: String,
    pub sql: String,
    #[serde(default)]
    pub expected_rows: Option<Vec<Vec<Value>>>,
    #[serde(default)]
    pub expected_count: Option<usize>,
}

pub fn items() -> Vec<Item> {
    let text = std::fs::read_to_string(DEV_SET).expect("read the dev set");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}", i + 1)))
        .collect()
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

fn key(row: &[Value]) -> String {
    row.iter()
        .map(|v| match v.as_f64() {
            Some(x) => format!("{x:.6}"),
            None => v.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

/// Compares rows, in order or as multisets.
pub fn rows_match(got: &[Vec<Value>], want: &[Vec<Value>], ordered: bool) -> bool {
    if got.len() != want.len() {
        return false;
    }
    if ordered {
        return got
            .iter()
            .zip(want)
            .all(|(g, w)| g.len() == w.len() && g.iter().zip(w).all(|(a, b)| same(a, b)));
    }
    let mut g: Vec<String> = got.iter().map(|r| key(r)).collect();
    let mut w: Vec<String> = want.iter().map(|r| key(r)).collect();
    g.sort();
    w.sort();
    g == w
}

/// Runs every item through `query_scoped`; returns one line per mismatch or error.
pub async fn run(records: &Records, ordered: bool) -> Vec<String> {
    let mut failures = Vec::new();
    for item in items() {
        let outcome = records
            .query_scoped(
                PatientId(item.patient_id),
                &item.sql,
                &GuardPolicy::default(),
            )
            .await;
        let r = match outcome {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: {e}", item.id));
                continue;
            }
        };
        if let Some(want) = &item.expected_rows {
            if !rows_match(&r.rows, want, ordered) {
                failures.push(format!("{}: got {:?}, want {:?}", item.id, r.rows, want));
            }
        }
        if let Some(n) = item.expected_count {
            if r.rows.len() != n {
                failures.push(format!("{}: {} rows, want {n}", item.id, r.rows.len()));
            }
        }
    }
    failures
}
