//! The strategies `careflow eval --suite` compares, each a [`careflow_eval::Strategy`] over a
//! [`TriageWorkflow`]:
//!
//! | strategy    | model(s)                 | mode                    | escalations go to |
//! |-------------|--------------------------|-------------------------|-------------------|
//! | `small`     | the small model          | stateful + prefix cache | human review      |
//! | `stateless` | the small model          | stateless               | human review      |
//! | `cascade`   | small, then the frontier | stateful + prefix cache | the frontier tier |
//! | `frontier`  | the frontier model only  | stateless               | human review      |
//!
//! `stateless` and `frontier` run the workflow the way an API-based agent would: every step
//! resubmits the whole conversation. `frontier` is priced on the frontier tier's prices.
//!
//! Engines are started once per model by the caller and shared by the strategies that use them;
//! the harness runs one request at a time, so no engine ever decodes two evaluation requests at
//! once.

use async_trait::async_trait;
use careflow_core::{PatientId, PatientMessage};
use careflow_eval::{Prediction, StepTokens, Strategy, SuiteItem};
use careflow_workflow::{Decision, Mode, TriageOutcome, TriageRequest, TriageWorkflow};

/// A strategy named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum StrategyKind {
    /// The small model, stateful with the prefix cache, no frontier (escalations go to human
    /// review).
    Small,
    /// The whole workflow on the frontier model, stateless (as an API-based agent runs it),
    /// priced on the frontier's prices.
    Frontier,
    /// The small model, escalating to the frontier tier.
    Cascade,
    /// The small model, stateless: the API-agent baseline for tokens and cost.
    Stateless,
}

impl StrategyKind {
    /// The name the report uses.
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::Small => "small",
            StrategyKind::Frontier => "frontier",
            StrategyKind::Cascade => "cascade",
            StrategyKind::Stateless => "stateless",
        }
    }

    /// How the strategy's steps reach the engine.
    pub fn mode(self) -> Mode {
        match self {
            StrategyKind::Small | StrategyKind::Cascade => Mode::StatefulPrefixCache,
            StrategyKind::Frontier | StrategyKind::Stateless => Mode::Stateless,
        }
    }

    /// Whether the strategy runs steps on the small model.
    pub fn uses_small(self) -> bool {
        !matches!(self, StrategyKind::Frontier)
    }

    /// Whether the strategy needs the frontier tier.
    pub fn uses_frontier(self) -> bool {
        matches!(self, StrategyKind::Frontier | StrategyKind::Cascade)
    }

    /// The tier a request's answer comes from when the workflow's own (first) tier decides.
    pub fn main_tier(self) -> &'static str {
        match self {
            StrategyKind::Frontier => "frontier",
            _ => "small",
        }
    }
}

/// One strategy: a workflow built for it, and how its outcomes are named.
pub struct WorkflowStrategy {
    kind: StrategyKind,
    workflow: TriageWorkflow,
}

impl WorkflowStrategy {
    pub fn new(kind: StrategyKind, workflow: TriageWorkflow) -> Self {
        WorkflowStrategy { kind, workflow }
    }

    pub fn workflow(&self) -> &TriageWorkflow {
        &self.workflow
    }
}

#[async_trait]
impl Strategy for WorkflowStrategy {
    fn name(&self) -> &str {
        self.kind.name()
    }

    async fn predict(&self, item: &SuiteItem) -> Prediction {
        let main_tier = self.kind.main_tier();
        let message = match PatientMessage::parse(&item.message) {
            Ok(m) => m,
            Err(e) => return failed(item, main_tier, format!("message: {e}")),
        };
        let patient = item.patient_id.map(PatientId);
        match self.workflow.run(TriageRequest { message, patient }).await {
            Ok(outcome) => prediction(item, main_tier, &outcome),
            Err(e) => failed(item, main_tier, e.to_string()),
        }
    }
}

/// The wire name of a decision (`accept`, `escalate`, `human_review`).
pub fn decision_name(d: Decision) -> &'static str {
    match d {
        Decision::Accept => "accept",
        Decision::Escalate => "escalate",
        Decision::HumanReview => "human_review",
    }
}

/// The tier the report records: `human_review` → `human`; the workflow's own tier (`small` in
/// the route) → `main_tier` (the frontier model runs the whole workflow in `frontier`).
pub fn tier_name(decided_by: &str, main_tier: &str) -> String {
    match decided_by {
        "human_review" => "human".to_string(),
        "small" => main_tier.to_string(),
        other => other.to_string(),
    }
}

/// A workflow outcome as the harness scores it.
pub fn prediction(item: &SuiteItem, main_tier: &str, o: &TriageOutcome) -> Prediction {
    Prediction {
        item_id: item.id.clone(),
        disposition: Some(o.disposition),
        decision: decision_name(o.decision).to_string(),
        tier: tier_name(&o.route.decided_by, main_tier),
        escalated: o.route.escalated,
        tokens: o.totals,
        steps: o
            .steps
            .iter()
            .map(|s| StepTokens {
                step: s.step.clone(),
                computed: s.usage.computed,
                reused: s.usage.reused,
                generated: s.usage.generated,
            })
            .collect(),
        cost_usd: o.cost_usd,
        latency_ms: o.elapsed_ms,
        error: None,
    }
}

/// A request that failed: no disposition, decision `error`, the reason kept.
pub fn failed(item: &SuiteItem, main_tier: &str, error: String) -> Prediction {
    Prediction {
        item_id: item.id.clone(),
        disposition: None,
        decision: "error".to_string(),
        tier: main_tier.to_string(),
        error: Some(error),
        ..Prediction::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_decisions_get_the_report_names() {
        assert_eq!(tier_name("human_review", "small"), "human");
        assert_eq!(tier_name("small", "small"), "small");
        assert_eq!(tier_name("small", "frontier"), "frontier");
        assert_eq!(tier_name("frontier", "small"), "frontier");
        assert_eq!(decision_name(Decision::HumanReview), "human_review");
        assert_eq!(decision_name(Decision::Accept), "accept");
        assert_eq!(decision_name(Decision::Escalate), "escalate");
    }

    #[test]
    fn a_failure_is_a_missing_prediction_with_its_reason() {
        let item = SuiteItem::new("x-1", "hello", "admin").unwrap();
        let p = failed(&item, "small", "engine: overloaded".into());
        assert_eq!(p.item_id, "x-1");
        assert_eq!(p.disposition, None);
        assert_eq!(p.decision, "error");
        assert_eq!(p.error.as_deref(), Some("engine: overloaded"));
    }

    #[test]
    fn strategies_name_their_mode_and_tiers() {
        assert_eq!(StrategyKind::Stateless.mode(), Mode::Stateless);
        assert_eq!(StrategyKind::Frontier.mode(), Mode::Stateless);
        assert_eq!(StrategyKind::Small.mode(), Mode::StatefulPrefixCache);
        assert!(StrategyKind::Cascade.uses_small() && StrategyKind::Cascade.uses_frontier());
        assert!(!StrategyKind::Frontier.uses_small());
        assert!(!StrategyKind::Stateless.uses_frontier());
    }
}
