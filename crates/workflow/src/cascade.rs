//! The cascade: the small model decides by default; a case Validate will not accept goes to the
//! frontier tier with a compact case summary, within a daily budget; when the frontier cannot
//! take it (none configured, budget spent, backend down, its answer unusable) the case goes to
//! human review with the reason. A case is never accepted from the small model because the
//! frontier was unavailable.

use careflow_core::TokenUsage;
use careflow_engine::Engine;
use careflow_ledger::TierPrice;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// A model tier: the engine that serves it and what its tokens cost.
#[derive(Clone)]
pub struct Tier {
    /// `small` or `frontier`: the name the outcome and the ledger record.
    pub name: String,
    /// The key of its entry in the prices file (e.g. `local_small`, `flagship_api`).
    pub price_key: String,
    pub price: Option<TierPrice>,
    pub engine: Arc<dyn Engine>,
}

impl Tier {
    pub fn new(name: &str, engine: Arc<dyn Engine>) -> Self {
        Tier {
            name: name.to_string(),
            price_key: String::new(),
            price: None,
            engine,
        }
    }

    pub fn priced(mut self, key: &str, price: TierPrice) -> Self {
        self.price_key = key.to_string();
        self.price = Some(price);
        self
    }

    pub fn cost(&self, usage: &TokenUsage) -> f64 {
        self.price.as_ref().map_or(0.0, |p| p.cost(usage))
    }

    pub fn model(&self) -> String {
        self.engine.info().name.clone()
    }
}

/// When to escalate, and the frontier's limits. Data, from the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CascadeConfig {
    /// Send cases marked by a step's `escalate` rule (e.g. the plan calls the case complex)
    /// to the frontier even when Validate would accept the small model's answer.
    pub escalate_flagged: bool,
    /// The frontier's answer is accepted at or above this confidence (the probability of its
    /// label, where the backend reports log-probabilities; backends without them count as 1).
    pub frontier_confidence_threshold: f32,
    /// The most the frontier tier may cost per UTC day, in US dollars.
    pub daily_budget_usd: f64,
    /// Deadline of one frontier call, retries included.
    pub frontier_deadline_ms: u64,
}

impl Default for CascadeConfig {
    fn default() -> Self {
        CascadeConfig {
            escalate_flagged: true,
            frontier_confidence_threshold: 0.3,
            daily_budget_usd: 50.0,
            frontier_deadline_ms: 120_000,
        }
    }
}

impl CascadeConfig {
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.frontier_confidence_threshold) {
            return Err("cascade.frontier_confidence_threshold must be within 0..1".into());
        }
        if !self.daily_budget_usd.is_finite() || self.daily_budget_usd < 0.0 {
            return Err("cascade.daily_budget_usd must be a non-negative number".into());
        }
        if self.frontier_deadline_ms == 0 {
            return Err("cascade.frontier_deadline_ms must be at least 1".into());
        }
        Ok(())
    }
}

/// The frontier tier's spending today (UTC), shared by all requests of the process. Seeded from
/// the ledger at start-up so a restart does not reset the day. Concurrent requests may overshoot
/// by at most the cost of the calls already in flight when the limit is reached.
#[derive(Debug)]
pub struct Budget {
    limit_usd: f64,
    state: Mutex<(i64, f64)>,
}

impl Budget {
    pub fn new(limit_usd: f64, spent_today_usd: f64) -> Self {
        Budget {
            limit_usd,
            state: Mutex::new((utc_day(), spent_today_usd)),
        }
    }

    pub fn limit(&self) -> f64 {
        self.limit_usd
    }

    /// Spent today; `None` when the lock was poisoned (treated as exhausted by callers).
    pub fn spent(&self) -> Option<f64> {
        let mut s = self.state.lock().ok()?;
        let today = utc_day();
        if s.0 != today {
            *s = (today, 0.0);
        }
        Some(s.1)
    }

    /// Whether another frontier call may start; the reason when not.
    pub fn check(&self) -> Result<(), String> {
        match self.spent() {
            Some(spent) if spent < self.limit_usd => Ok(()),
            Some(spent) => Err(format!(
                "the frontier tier's daily budget is spent (${spent:.4} of ${:.2})",
                self.limit_usd
            )),
            None => Err("the frontier budget state is unavailable".into()),
        }
    }

    pub fn add(&self, usd: f64) {
        if let Ok(mut s) = self.state.lock() {
            let today = utc_day();
            if s.0 != today {
                *s = (today, 0.0);
            }
            s.1 += usd;
        }
    }
}

fn utc_day() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d.as_secs() / 86_400) as i64)
        .unwrap_or(0)
}

/// How a request was routed: which tier decided and why.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// `small`, `frontier`, or `human_review` (a clinician decides; the disposition shown is
    /// the safe provisional one).
    pub decided_by: String,
    /// Whether the case was sent (or meant to be sent) to the frontier tier.
    pub escalated: bool,
    /// Why it was escalated (Validate's notes, flags raised by steps).
    pub reasons: Vec<String>,
    /// Why it ended where it did (e.g. the frontier was unavailable).
    pub outcome: String,
    /// The compact case summary the frontier received.
    pub handoff: Option<Handoff>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Handoff {
    pub model: String,
    /// The case summary as sent (system instruction excluded).
    pub summary: String,
    /// Tokens the frontier was sent, against the small session's transcript.
    pub tokens_submitted: u64,
    pub transcript_tokens: u64,
    pub answer: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_budget_refuses_with_the_figures() {
        let b = Budget::new(1.0, 0.25);
        assert!(b.check().is_ok());
        b.add(0.80);
        let e = b.check().unwrap_err();
        assert!(e.contains("$1.0500 of $1.00"), "{e}");
        let zero = Budget::new(0.0, 0.0);
        assert!(
            zero.check().is_err(),
            "a zero budget sends nothing to the frontier"
        );
    }

    #[test]
    fn cascade_config_is_checked() {
        let mut c = CascadeConfig::default();
        assert!(c.check().is_ok());
        c.frontier_confidence_threshold = 1.5;
        assert!(c
            .check()
            .unwrap_err()
            .contains("frontier_confidence_threshold"));
        let c = CascadeConfig {
            daily_budget_usd: f64::NAN,
            ..Default::default()
        };
        assert!(c.check().unwrap_err().contains("daily_budget_usd"));
    }
}
