//! Comparing two JSON reports: did the candidate regress against the baseline?
//!
//! Strategies are matched by name. For each pair the checks are:
//!
//! | metric                 | worse when | regression when                                   |
//! |------------------------|------------|---------------------------------------------------|
//! | `accuracy`             | lower      | drop > `tolerances.accuracy` (absolute)           |
//! | `under_triage_rate`    | higher     | **any** increase                                  |
//! | `emergencies_missed`   | higher     | **any** increase                                  |
//! | `escalation_rate`      | higher     | rise > `tolerances.escalation_rate` (absolute)    |
//! | `cost_per_request_usd` | higher     | rise > `tolerances.cost_relative` × baseline      |
//! | `latency_p95_ms`       | higher     | rise > `tolerances.latency_relative` × baseline   |
//!
//! A relative tolerance against a baseline of 0 flags any increase. A metric present in the
//! baseline and `null` in the candidate (it could no longer be measured) is a regression; one
//! `null` in the baseline is only reported. Strategies present on one side only are listed in
//! `only_in_baseline` / `only_in_candidate` (not regressions: the caller decides).

use crate::report::Report;
use crate::score::Metrics;
use crate::EvalError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How much worse a metric may get before it counts as a regression.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tolerances {
    /// Absolute drop in accuracy (0.02 = 2 points).
    pub accuracy: f64,
    /// Absolute rise in the escalation rate.
    pub escalation_rate: f64,
    /// Relative rise in cost per request (0.10 = 10 %).
    pub cost_relative: f64,
    /// Relative rise in p95 latency.
    pub latency_relative: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            accuracy: 0.02,
            escalation_rate: 0.05,
            cost_relative: 0.10,
            latency_relative: 0.20,
        }
    }
}

/// Which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

/// One metric of one strategy, compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub metric: String,
    pub baseline: Option<f64>,
    pub candidate: Option<f64>,
    /// `candidate − baseline` when both are known.
    pub delta: Option<f64>,
    pub better: Better,
    /// The allowed worsening, in the metric's units (0 = any worsening counts).
    pub allowed: f64,
    pub regression: bool,
}

/// The checks of one strategy present in both reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyDiff {
    pub name: String,
    pub checks: Vec<Check>,
}

/// A flagged regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    pub strategy: String,
    pub metric: String,
    pub baseline: Option<f64>,
    pub candidate: Option<f64>,
    pub delta: Option<f64>,
    pub allowed: f64,
}

/// The comparison of two reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    pub baseline: String,
    pub candidate: String,
    pub tolerances: Tolerances,
    pub strategies: Vec<StrategyDiff>,
    pub only_in_baseline: Vec<String>,
    pub only_in_candidate: Vec<String>,
}

impl Diff {
    /// Every check that regressed, strategy by strategy.
    pub fn regressions(&self) -> Vec<Regression> {
        self.strategies
            .iter()
            .flat_map(|s| {
                s.checks
                    .iter()
                    .filter(|c| c.regression)
                    .map(|c| Regression {
                        strategy: s.name.clone(),
                        metric: c.metric.clone(),
                        baseline: c.baseline,
                        candidate: c.candidate,
                        delta: c.delta,
                        allowed: c.allowed,
                    })
            })
            .collect()
    }

    pub fn has_regressions(&self) -> bool {
        self.strategies
            .iter()
            .any(|s| s.checks.iter().any(|c| c.regression))
    }
}

/// Both reports' files compared.
pub fn diff_files(
    baseline: impl AsRef<Path>,
    candidate: impl AsRef<Path>,
    tolerances: &Tolerances,
) -> Result<Diff, EvalError> {
    let a = Report::read_json(baseline.as_ref())?;
    let b = Report::read_json(candidate.as_ref())?;
    let mut d = diff(&a, &b, tolerances);
    d.baseline = baseline.as_ref().display().to_string();
    d.candidate = candidate.as_ref().display().to_string();
    Ok(d)
}

/// Compares `candidate` with `baseline`, strategy by strategy.
pub fn diff(baseline: &Report, candidate: &Report, tolerances: &Tolerances) -> Diff {
    let mut strategies = Vec::new();
    let mut only_in_baseline = Vec::new();
    for a in &baseline.strategies {
        match candidate.strategy(&a.name) {
            Some(b) => strategies.push(StrategyDiff {
                name: a.name.clone(),
                checks: checks(&a.metrics, &b.metrics, tolerances),
            }),
            None => only_in_baseline.push(a.name.clone()),
        }
    }
    let only_in_candidate = candidate
        .strategies
        .iter()
        .filter(|b| baseline.strategy(&b.name).is_none())
        .map(|b| b.name.clone())
        .collect();
    Diff {
        baseline: format!("{} ({})", baseline.suite, baseline.created_at),
        candidate: format!("{} ({})", candidate.suite, candidate.created_at),
        tolerances: *tolerances,
        strategies,
        only_in_baseline,
        only_in_candidate,
    }
}

enum Allowed {
    Absolute(f64),
    Relative(f64),
}

fn checks(a: &Metrics, b: &Metrics, t: &Tolerances) -> Vec<Check> {
    let count = |x: usize| Some(x as f64);
    [
        (
            "accuracy",
            a.accuracy,
            b.accuracy,
            Better::Higher,
            Allowed::Absolute(t.accuracy),
        ),
        (
            "under_triage_rate",
            a.under_triage_rate,
            b.under_triage_rate,
            Better::Lower,
            Allowed::Absolute(0.0),
        ),
        (
            "emergencies_missed",
            count(a.emergencies_missed),
            count(b.emergencies_missed),
            Better::Lower,
            Allowed::Absolute(0.0),
        ),
        (
            "escalation_rate",
            a.escalation_rate,
            b.escalation_rate,
            Better::Lower,
            Allowed::Absolute(t.escalation_rate),
        ),
        (
            "cost_per_request_usd",
            a.cost_per_request_usd,
            b.cost_per_request_usd,
            Better::Lower,
            Allowed::Relative(t.cost_relative),
        ),
        (
            "latency_p95_ms",
            a.latency_p95_ms,
            b.latency_p95_ms,
            Better::Lower,
            Allowed::Relative(t.latency_relative),
        ),
    ]
    .into_iter()
    .map(|(metric, base, cand, better, allowed)| {
        let allowed = match allowed {
            Allowed::Absolute(x) => x.abs(),
            Allowed::Relative(r) => base.map(|v| (v * r).abs()).unwrap_or(0.0),
        };
        let delta = match (base, cand) {
            (Some(x), Some(y)) => Some(y - x),
            _ => None,
        };
        // Worsening in the metric's units (positive = worse).
        let worse = delta.map(|d| match better {
            Better::Higher => -d,
            Better::Lower => d,
        });
        // 1e-12 absorbs float noise so "any increase" means a real one.
        let regression = match (base, cand, worse) {
            (Some(_), None, _) => true,
            (_, _, Some(w)) => w > allowed + 1e-12,
            _ => false,
        };
        Check {
            metric: metric.to_string(),
            baseline: base,
            candidate: cand,
            delta,
            better,
            allowed,
            regression,
        }
    })
    .collect()
}
