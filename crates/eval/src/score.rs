//! Scoring triage predictions against a suite's gold labels.
//!
//! # Conventions
//!
//! - **Trials.** Each [`Prediction`] whose `item_id` names a suite item is one trial (with
//!   repeats there are several per item); an item without any prediction is one trial with a
//!   missing prediction. `n` counts trials; predictions naming no item are ignored and counted in
//!   `unmatched_predictions`. `requests` counts the prediction records that matched an item.
//! - **Scale.** A trial is scored on the coarser of its gold label's scale and careflow's, i.e.
//!   on the gold's scale: a 3-level gold (`emergent`, `non_emergent`, `self_care`) is compared
//!   with the prediction mapped to the 3-level scale, a 4-level gold with the prediction mapped to
//!   4 levels ([`crate::suite::Scale::map`]). The `scales` block repeats accuracy, under/over
//!   triage, per-level precision/recall and a confusion matrix on each scale, over the trials
//!   whose gold can be collapsed onto it (careflow: careflow golds only; 4-level: careflow and
//!   4-level golds; 3-level: every trial).
//! - **Missing predictions** (no record, or `disposition: None` — a failed request) count as
//!   wrong for accuracy and for recall, are reported in `missing`, and are left out of
//!   under/over-triage (they are neither; their denominator is `clinical_scored`) and out of
//!   precision (they predict no level).
//! - **Under-triage**: gold clinical, prediction less urgent, or `admin` (a clinical need routed
//!   to the front desk). **Over-triage**: gold clinical, prediction clinical and more urgent.
//!   Both rates are over `clinical_scored` = trials with a clinical gold and a prediction.
//! - **Emergencies missed**: gold at the top level (`emergency_now` / `emergent`) with a
//!   prediction below it (missing predictions are in `missing`, not here).
//! - **Admin routing accuracy** = admin golds predicted admin ÷ (admin golds + clinical golds
//!   predicted admin): a missed admin route and a clinical message sent to the front desk are
//!   both errors; `null` when neither occurs.
//! - **Rates** with an empty denominator are `null`, never 0/0; precision of a level never
//!   predicted is `null`.
//! - **Per request** means (tokens, cost, escalation) are over `requests`; latency percentiles
//!   use the nearest-rank method ([`percentile`]).

use crate::suite::{Scale, SuiteItem, ADMIN};
use careflow_core::{Disposition, TokenUsage};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Tokens of one workflow step of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTokens {
    pub step: String,
    pub computed: u64,
    pub reused: u64,
    pub generated: u64,
}

/// What a strategy answered for one item (one repeat).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Prediction {
    pub item_id: String,
    /// `None`: no disposition (the request failed or gave none); scored as missing.
    pub disposition: Option<Disposition>,
    /// `accept` | `escalate` | `human_review` | `error`.
    pub decision: String,
    /// Which tier decided: `small` | `frontier` | `human`.
    pub tier: String,
    /// Whether the request was escalated to the frontier tier.
    pub escalated: bool,
    /// Totals for the request.
    pub tokens: TokenUsage,
    /// Per-step tokens, in step order.
    pub steps: Vec<StepTokens>,
    pub cost_usd: f64,
    pub latency_ms: f64,
    pub error: Option<String>,
}

/// Admin-route counts and accuracy (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdminRouting {
    /// Trials whose gold is `admin`.
    pub gold_admin: usize,
    /// … predicted `admin`.
    pub correct: usize,
    /// Clinical golds predicted `admin`.
    pub clinical_to_admin: usize,
    /// Admin golds predicted a clinical level.
    pub admin_to_clinical: usize,
    /// `correct / (gold_admin + clinical_to_admin)`; `null` when that is 0.
    pub accuracy: Option<f64>,
}

/// Mean tokens per request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenMeans {
    pub submitted: f64,
    pub computed: f64,
    pub reused: f64,
    pub generated: f64,
}

/// Mean tokens per request for one step (a request without the step counts as 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMeans {
    pub step: String,
    pub computed: f64,
    pub reused: f64,
    pub generated: f64,
}

/// Precision and recall of one level.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LevelMetrics {
    pub level: String,
    /// Trials with this gold level (missing predictions included).
    pub support: usize,
    /// Trials predicted at this level.
    pub predicted: usize,
    pub true_positive: usize,
    /// `true_positive / predicted`; `null` when the level was never predicted.
    pub precision: Option<f64>,
    /// `true_positive / support`; `null` when no gold has this level.
    pub recall: Option<f64>,
}

/// Rows: gold labels (`labels`); columns: predicted labels (`labels`, then `"missing"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub labels: Vec<String>,
    pub columns: Vec<String>,
    /// `counts[gold][predicted]`.
    pub counts: Vec<Vec<usize>>,
}

/// Scores on one scale, over the trials whose gold collapses onto it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleMetrics {
    pub scale: Scale,
    pub n: usize,
    pub scored: usize,
    pub missing: usize,
    pub correct: usize,
    pub accuracy: Option<f64>,
    pub clinical_scored: usize,
    pub under_triage: usize,
    pub under_triage_rate: Option<f64>,
    pub over_triage: usize,
    pub over_triage_rate: Option<f64>,
    pub levels: Vec<LevelMetrics>,
    pub confusion: Confusion,
}

/// [`ScaleMetrics`] on each scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleSet {
    pub careflow: ScaleMetrics,
    pub four_level: ScaleMetrics,
    pub three_level: ScaleMetrics,
}

impl ScaleSet {
    pub fn get(&self, scale: Scale) -> &ScaleMetrics {
        match scale {
            Scale::Careflow => &self.careflow,
            Scale::FourLevel => &self.four_level,
            Scale::ThreeLevel => &self.three_level,
        }
    }
}

/// Everything [`score`] measures (field names are part of the report schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub n: usize,
    pub requests: usize,
    pub scored: usize,
    pub missing: usize,
    pub unmatched_predictions: usize,
    /// Requests that reported an error (`error` set or decision `error`).
    pub errors: usize,
    pub correct: usize,
    /// Exact accuracy, each trial on its gold's scale; missing predictions count as wrong.
    pub accuracy: Option<f64>,
    pub clinical_scored: usize,
    pub under_triage: usize,
    pub under_triage_rate: Option<f64>,
    /// Gold at the top level (`emergency_now` / `emergent`).
    pub emergencies: usize,
    pub emergencies_missed: usize,
    pub over_triage: usize,
    pub over_triage_rate: Option<f64>,
    pub admin_routing: AdminRouting,
    pub escalated: usize,
    /// `escalated / requests`.
    pub escalation_rate: Option<f64>,
    /// Requests per decision (`accept`, `escalate`, `human_review`, `error`, …).
    pub decisions: BTreeMap<String, usize>,
    /// Requests per deciding tier (`small`, `frontier`, `human`, …).
    pub tiers: BTreeMap<String, usize>,
    pub tokens_per_request: TokenMeans,
    pub steps: Vec<StepMeans>,
    pub cost_total_usd: f64,
    pub cost_per_request_usd: Option<f64>,
    pub cost_per_1000_requests_usd: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_mean_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    pub scales: ScaleSet,
}

/// One trial reduced to what the bootstrap resamples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrialOutcome {
    /// Index of the item in the suite (trials of the same item share it).
    pub item: usize,
    pub has_prediction: bool,
    pub correct: bool,
    /// Gold clinical and a prediction present (the under/over-triage denominator).
    pub clinical_scored: bool,
    pub under: bool,
    pub over: bool,
    /// The request's cost; `None` for an item without any prediction record.
    pub cost_usd: Option<f64>,
}

/// The nearest-rank percentile: the smallest value such that at least `p` % of the values are
/// at or below it, i.e. the `ceil(p/100 · N)`-th smallest (rank clamped to 1…N). It is always an
/// observed value; ties need no interpolation. Non-finite values are ignored; `None` when no
/// value is left.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[nearest_rank(v.len(), p) - 1])
}

/// The 1-based nearest rank of percentile `p` among `n` sorted values.
pub(crate) fn nearest_rank(n: usize, p: f64) -> usize {
    let p = if p.is_finite() {
        p.clamp(0.0, 100.0)
    } else {
        0.0
    };
    let rank = (p / 100.0 * n as f64 - 1e-9).ceil() as usize;
    rank.clamp(1, n.max(1))
}

fn ratio(num: usize, den: usize) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

struct Trial<'a> {
    item_index: usize,
    item: &'a SuiteItem,
    prediction: Option<&'a Prediction>,
}

impl Trial<'_> {
    fn disposition(&self) -> Option<Disposition> {
        self.prediction.and_then(|p| p.disposition)
    }
}

/// Judgement of one trial on one scale.
struct Judged {
    gold: &'static str,
    predicted: Option<&'static str>,
    correct: bool,
    clinical_scored: bool,
    under: bool,
    over: bool,
}

fn judge(trial: &Trial, scale: Scale) -> Option<Judged> {
    let gold = trial.item.gold.on(scale)?;
    let predicted = trial.disposition().map(|d| scale.map(d));
    let gold_acuity = scale.acuity(gold);
    let (clinical_scored, under, over) = match (gold_acuity, predicted) {
        (Some(g), Some(p)) => match scale.acuity(p) {
            Some(a) => (true, a < g, a > g),
            None => (true, true, false),
        },
        _ => (false, false, false),
    };
    Some(Judged {
        gold,
        predicted,
        correct: predicted == Some(gold),
        clinical_scored,
        under,
        over,
    })
}

fn pair<'a>(items: &'a [SuiteItem], predictions: &'a [Prediction]) -> (Vec<Trial<'a>>, usize) {
    let index: HashMap<&str, usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.id.as_str(), i))
        .collect();
    let mut seen = vec![false; items.len()];
    let mut trials = Vec::with_capacity(predictions.len().max(items.len()));
    let mut unmatched = 0;
    for p in predictions {
        match index.get(p.item_id.as_str()) {
            Some(&i) => {
                seen[i] = true;
                trials.push(Trial {
                    item_index: i,
                    item: &items[i],
                    prediction: Some(p),
                });
            }
            None => unmatched += 1,
        }
    }
    for (i, item) in items.iter().enumerate() {
        if !seen[i] {
            trials.push(Trial {
                item_index: i,
                item,
                prediction: None,
            });
        }
    }
    (trials, unmatched)
}

/// Per-trial outcomes (each on its gold's scale), for the bootstrap.
pub fn outcomes(items: &[SuiteItem], predictions: &[Prediction]) -> Vec<TrialOutcome> {
    let (trials, _) = pair(items, predictions);
    trials
        .iter()
        .filter_map(|t| {
            let j = judge(t, t.item.gold.scale)?;
            Some(TrialOutcome {
                item: t.item_index,
                has_prediction: j.predicted.is_some(),
                correct: j.correct,
                clinical_scored: j.clinical_scored,
                under: j.under,
                over: j.over,
                cost_usd: t.prediction.map(|p| finite_or_zero(p.cost_usd)),
            })
        })
        .collect()
}

fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

fn scale_metrics(trials: &[Trial], scale: Scale) -> ScaleMetrics {
    let labels = scale.labels();
    let pos = |l: &str| labels.iter().position(|x| *x == l);
    let mut counts = vec![vec![0usize; labels.len() + 1]; labels.len()];
    let (mut n, mut scored, mut correct, mut clinical, mut under, mut over) = (0, 0, 0, 0, 0, 0);
    for t in trials {
        let Some(j) = judge(t, scale) else { continue };
        n += 1;
        if j.predicted.is_some() {
            scored += 1;
        }
        correct += usize::from(j.correct);
        clinical += usize::from(j.clinical_scored);
        under += usize::from(j.under);
        over += usize::from(j.over);
        if let Some(g) = pos(j.gold) {
            let col = j.predicted.and_then(pos).unwrap_or(labels.len());
            counts[g][col] += 1;
        }
    }
    let levels = labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let support: usize = counts[i].iter().sum();
            let predicted: usize = counts.iter().map(|row| row[i]).sum();
            let tp = counts[i][i];
            LevelMetrics {
                level: l.to_string(),
                support,
                predicted,
                true_positive: tp,
                precision: ratio(tp, predicted),
                recall: ratio(tp, support),
            }
        })
        .collect();
    let mut columns: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
    columns.push("missing".into());
    ScaleMetrics {
        scale,
        n,
        scored,
        missing: n - scored,
        correct,
        accuracy: ratio(correct, n),
        clinical_scored: clinical,
        under_triage: under,
        under_triage_rate: ratio(under, clinical),
        over_triage: over,
        over_triage_rate: ratio(over, clinical),
        levels,
        confusion: Confusion {
            labels: labels.iter().map(|l| l.to_string()).collect(),
            columns,
            counts,
        },
    }
}

/// Scores predictions (any number per item: repeats) against the suite's items.
pub fn score(items: &[SuiteItem], predictions: &[Prediction]) -> Metrics {
    let (trials, unmatched) = pair(items, predictions);
    let n = trials.len();
    let (mut scored, mut correct, mut clinical, mut under, mut over) = (0, 0, 0, 0, 0);
    let (mut emergencies, mut emergencies_missed) = (0, 0);
    let mut admin = AdminRouting::default();
    for t in &trials {
        let gold = &t.item.gold;
        let Some(j) = judge(t, gold.scale) else {
            continue;
        };
        scored += usize::from(j.predicted.is_some());
        correct += usize::from(j.correct);
        clinical += usize::from(j.clinical_scored);
        under += usize::from(j.under);
        over += usize::from(j.over);
        if gold.scale.is_top(j.gold) {
            emergencies += 1;
            emergencies_missed += usize::from(j.under);
        }
        let predicted_admin = j.predicted == Some(ADMIN);
        if gold.is_admin() {
            admin.gold_admin += 1;
            if predicted_admin {
                admin.correct += 1;
            } else if j.predicted.is_some() {
                admin.admin_to_clinical += 1;
            }
        } else if predicted_admin {
            admin.clinical_to_admin += 1;
        }
    }
    admin.accuracy = ratio(admin.correct, admin.gold_admin + admin.clinical_to_admin);

    let records: Vec<&Prediction> = trials.iter().filter_map(|t| t.prediction).collect();
    let requests = records.len();
    let mut decisions = BTreeMap::new();
    let mut tiers = BTreeMap::new();
    let mut tokens = TokenUsage::default();
    let mut steps: Vec<(String, [u64; 3])> = Vec::new();
    let mut cost_total = 0.0;
    let mut latencies = Vec::with_capacity(requests);
    let (mut escalated, mut errors) = (0, 0);
    for p in &records {
        *decisions.entry(p.decision.clone()).or_insert(0) += 1;
        *tiers.entry(p.tier.clone()).or_insert(0) += 1;
        escalated += usize::from(p.escalated);
        errors += usize::from(p.error.is_some() || p.decision == "error");
        tokens += p.tokens;
        for s in &p.steps {
            let at = match steps.iter().position(|(name, _)| *name == s.step) {
                Some(i) => i,
                None => {
                    steps.push((s.step.clone(), [0; 3]));
                    steps.len() - 1
                }
            };
            steps[at].1[0] += s.computed;
            steps[at].1[1] += s.reused;
            steps[at].1[2] += s.generated;
        }
        cost_total += finite_or_zero(p.cost_usd);
        if p.latency_ms.is_finite() {
            latencies.push(p.latency_ms);
        }
    }
    let per = |x: u64| {
        if requests == 0 {
            0.0
        } else {
            x as f64 / requests as f64
        }
    };
    let cost_per_request = (requests > 0).then(|| cost_total / requests as f64);
    let latency_mean =
        (!latencies.is_empty()).then(|| latencies.iter().sum::<f64>() / latencies.len() as f64);
    Metrics {
        n,
        requests,
        scored,
        missing: n - scored,
        unmatched_predictions: unmatched,
        errors,
        correct,
        accuracy: ratio(correct, n),
        clinical_scored: clinical,
        under_triage: under,
        under_triage_rate: ratio(under, clinical),
        emergencies,
        emergencies_missed,
        over_triage: over,
        over_triage_rate: ratio(over, clinical),
        admin_routing: admin,
        escalated,
        escalation_rate: ratio(escalated, requests),
        decisions,
        tiers,
        tokens_per_request: TokenMeans {
            submitted: per(tokens.submitted),
            computed: per(tokens.computed),
            reused: per(tokens.reused),
            generated: per(tokens.generated),
        },
        steps: steps
            .into_iter()
            .map(|(step, [c, r, g])| StepMeans {
                step,
                computed: per(c),
                reused: per(r),
                generated: per(g),
            })
            .collect(),
        cost_total_usd: cost_total,
        cost_per_request_usd: cost_per_request,
        cost_per_1000_requests_usd: cost_per_request.map(|c| c * 1000.0),
        latency_p50_ms: percentile(&latencies, 50.0),
        latency_p95_ms: percentile(&latencies, 95.0),
        latency_mean_ms: latency_mean,
        latency_max_ms: latencies.iter().copied().reduce(f64::max),
        scales: ScaleSet {
            careflow: scale_metrics(&trials, Scale::Careflow),
            four_level: scale_metrics(&trials, Scale::FourLevel),
            three_level: scale_metrics(&trials, Scale::ThreeLevel),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[f64::NAN], 50.0), None);
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        // 1..=20: p50 is the 10th value, p95 the 19th.
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(10.0));
        assert_eq!(percentile(&v, 95.0), Some(19.0));
        assert_eq!(percentile(&v, 100.0), Some(20.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        // Order does not matter; ties give an observed value, never an average.
        assert_eq!(percentile(&[3.0, 2.0, 1.0, 2.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[5.0, 5.0, 5.0, 5.0], 95.0), Some(5.0));
        assert_eq!(percentile(&[1.0, 1.0, 9.0, 9.0], 50.0), Some(1.0));
        assert_eq!(percentile(&[1.0, 1.0, 9.0, 9.0], 51.0), Some(9.0));
        assert_eq!(nearest_rank(10, 50.0), 5);
        assert_eq!(nearest_rank(100, 95.0), 95);
    }
}
