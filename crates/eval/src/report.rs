//! The evaluation report: one JSON document per run, for machines.
//!
//! # Schema (`schema_version` 1)
//!
//! Field names are stable within a schema version: fields may be added, none is renamed or
//! removed without bumping `schema_version`. Rates are fractions in `[0, 1]`; a rate or
//! percentile that is undefined (empty denominator) is `null`. Money is US dollars, time is
//! milliseconds. The scoring conventions are those of [`crate::score`].
//!
//! ```text
//! {
//!   "schema_version": 1,
//!   "suite": "data/eval/dev.jsonl",            // the suite as given
//!   "created_at": "2025-01-31T12:00:00Z",      // RFC 3339, UTC
//!   "problems": [                              // suite lines skipped (see suite::LineProblem)
//!     {"line": 7, "field": "gold" | null, "message": "unknown label `urgent` …"}
//!   ],
//!   "strategies": [{
//!     "name": "cascade",
//!     "repeats": 3,
//!     "metrics": {
//!       "n", "requests", "scored", "missing", "unmatched_predictions", "errors",     // counts
//!       "correct", "accuracy",                         // exact, each item on its gold's scale
//!       "clinical_scored", "under_triage", "under_triage_rate",
//!       "emergencies", "emergencies_missed",
//!       "over_triage", "over_triage_rate",
//!       "admin_routing": {"gold_admin", "correct", "clinical_to_admin", "admin_to_clinical",
//!                         "accuracy"},
//!       "escalated", "escalation_rate",
//!       "decisions": {"accept": 10, "escalate": 2, …},    // requests per decision
//!       "tiers": {"small": 10, "frontier": 2, …},         // requests per deciding tier
//!       "tokens_per_request": {"submitted", "computed", "reused", "generated"},
//!       "steps": [{"step": "plan", "computed", "reused", "generated"}, …],   // per request
//!       "cost_total_usd", "cost_per_request_usd", "cost_per_1000_requests_usd",
//!       "latency_p50_ms", "latency_p95_ms", "latency_mean_ms", "latency_max_ms",
//!       "scales": {                                    // the same collapsed to each scale
//!         "careflow" | "four_level" | "three_level": {
//!           "scale", "n", "scored", "missing", "correct", "accuracy",
//!           "clinical_scored", "under_triage", "under_triage_rate",
//!           "over_triage", "over_triage_rate",
//!           "levels": [{"level", "support", "predicted", "true_positive",
//!                       "precision", "recall"}],
//!           "confusion": {"labels": [gold rows], "columns": [predicted …, "missing"],
//!                         "counts": [[…]]}             // counts[gold][predicted]
//!         }
//!       }
//!     },
//!     "intervals": {"level": 0.95, "resamples": 1000, "seed",
//!                   "accuracy" | "under_triage_rate" | "over_triage_rate"
//!                   | "cost_per_request_usd": {"low", "high"} | null},
//!     "predictions": [{                            // repeat-major: repeat 1's items, then 2's…
//!       "item_id", "disposition": "routine" | null, "decision", "tier", "escalated",
//!       "tokens": {"submitted", "computed", "reused", "generated", "micros"},
//!       "steps": [{"step", "computed", "reused", "generated"}],
//!       "cost_usd", "latency_ms", "error": null | "…"
//!     }]
//!   }]
//! }
//! ```

use crate::bootstrap::Intervals;
use crate::score::{Metrics, Prediction};
use crate::suite::LineProblem;
use crate::EvalError;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// One strategy's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyReport {
    pub name: String,
    pub repeats: usize,
    pub metrics: Metrics,
    pub intervals: Intervals,
    pub predictions: Vec<Prediction>,
}

/// A whole evaluation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub suite: String,
    pub created_at: String,
    pub strategies: Vec<StrategyReport>,
    pub problems: Vec<LineProblem>,
}

impl Report {
    /// A report stamped now.
    pub fn new(
        suite: impl Into<String>,
        strategies: Vec<StrategyReport>,
        problems: Vec<LineProblem>,
    ) -> Report {
        Report {
            schema_version: SCHEMA_VERSION,
            suite: suite.into(),
            created_at: rfc3339_utc(SystemTime::now()),
            strategies,
            problems,
        }
    }

    /// The strategy called `name`.
    pub fn strategy(&self, name: &str) -> Option<&StrategyReport> {
        self.strategies.iter().find(|s| s.name == name)
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> Result<String, EvalError> {
        serde_json::to_string_pretty(self).map_err(|e| EvalError::Serialize(e.to_string()))
    }

    /// Parses a report; `name` is used in errors. Refuses another schema version.
    pub fn from_json(name: &str, text: &str) -> Result<Report, EvalError> {
        let fail = |reason: String| EvalError::Report {
            file: name.to_string(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| fail(e.to_string()))?;
        match value.get("schema_version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(fail(format!(
                    "schema_version {v} (this build reads {SCHEMA_VERSION})"
                )))
            }
            None => return Err(fail("no `schema_version`".into())),
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            fail(format!("field `{path}`: {}", e.inner()))
        })
    }

    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<(), EvalError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_json()? + "\n").map_err(|e| EvalError::Write {
            file: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    pub fn read_json(path: impl AsRef<Path>) -> Result<Report, EvalError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::Io {
            file: name.clone(),
            reason: e.to_string(),
        })?;
        Report::from_json(&name, &text)
    }
}

/// `t` as RFC 3339 in UTC, to the second (`1970-01-01T00:00:00Z`).
pub fn rfc3339_utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = careflow_core::time::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "–".into())
}

fn pct_ci(x: Option<f64>, iv: Option<crate::bootstrap::Interval>) -> String {
    match (x, iv) {
        (Some(_), Some(iv)) => format!("{} [{:.1}–{:.1}]", pct(x), iv.low * 100.0, iv.high * 100.0),
        _ => pct(x),
    }
}

fn num(x: Option<f64>, digits: usize) -> String {
    x.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

/// The headline numbers of every strategy as a plain-text table (for people; `--json` is for
/// machines).
pub fn summary_table(report: &Report) -> String {
    let header = [
        "strategy",
        "n",
        "missing",
        "accuracy [95% CI]",
        "under-triage",
        "emerg. missed",
        "over-triage",
        "admin",
        "escalated",
        "computed/req",
        "reused/req",
        "$/1k req",
        "p50 ms",
        "p95 ms",
        "acc 4-lvl",
        "acc 3-lvl",
    ];
    let rows: Vec<Vec<String>> = report
        .strategies
        .iter()
        .map(|s| {
            let m = &s.metrics;
            vec![
                s.name.clone(),
                m.n.to_string(),
                m.missing.to_string(),
                pct_ci(m.accuracy, s.intervals.accuracy),
                pct_ci(m.under_triage_rate, s.intervals.under_triage_rate),
                format!("{}/{}", m.emergencies_missed, m.emergencies),
                pct(m.over_triage_rate),
                pct(m.admin_routing.accuracy),
                pct(m.escalation_rate),
                format!("{:.0}", m.tokens_per_request.computed),
                format!("{:.0}", m.tokens_per_request.reused),
                num(m.cost_per_1000_requests_usd, 4),
                num(m.latency_p50_ms, 0),
                num(m.latency_p95_ms, 0),
                pct(m.scales.four_level.accuracy),
                pct(m.scales.three_level.accuracy),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain(std::iter::once(header[c].chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(
        &mut out,
        &header.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    );
    for r in &rows {
        line(&mut out, r);
    }
    if !report.problems.is_empty() {
        let _ = writeln!(out, "\n{} suite line(s) skipped:", report.problems.len());
        for p in &report.problems {
            let _ = writeln!(out, "  {p}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723); // 2000-02-29 01:02:03
        assert_eq!(rfc3339_utc(t), "2000-02-29T01:02:03Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599); // last second of 2024
        assert_eq!(rfc3339_utc(t), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn other_schema_versions_are_refused() {
        let err = Report::from_json("r.json", "{\"schema_version\": 2}").unwrap_err();
        assert!(err.to_string().contains("schema_version 2"), "{err}");
        let err = Report::from_json("r.json", "{\"suite\": \"x\"}").unwrap_err();
        assert!(err.to_string().contains("schema_version"), "{err}");
        let err = Report::from_json(
            "r.json",
            "{\"schema_version\": 1, \"suite\": 3, \"created_at\": \"\", \"strategies\": [], \"problems\": []}",
        )
        .unwrap_err();
        assert!(err.to_string().contains("suite"), "{err}");
    }
}
