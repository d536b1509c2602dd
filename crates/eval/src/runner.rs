//! Running strategies over a suite.
//!
//! The harness knows nothing of engines or workflows: a [`Strategy`] turns one suite item into
//! one [`Prediction`] (small-only, frontier-only, cascade, stateless… are implemented where the
//! workflow lives). [`run_suite`] runs every strategy over every item, `repeats` times, strictly
//! one request at a time — an engine must never decode two evaluation requests at once, or the
//! latencies and token counts would measure the batching, not the strategy — then scores each
//! strategy and draws its bootstrap intervals.

use crate::bootstrap::{intervals, BootstrapConfig};
use crate::report::StrategyReport;
use crate::score::{score, Prediction};
use crate::suite::SuiteItem;
use async_trait::async_trait;
use std::time::Instant;

/// One way of answering a suite item.
#[async_trait]
pub trait Strategy: Send + Sync {
    /// The name the report uses (`small`, `frontier`, `cascade`, `stateless`, …).
    fn name(&self) -> &str;

    /// Answers one item. A failure is a prediction too: `disposition: None`, `decision:
    /// "error"`, the reason in `error` — the run goes on.
    async fn predict(&self, item: &SuiteItem) -> Prediction;
}

/// Where a run stands, after each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunProgress {
    pub strategy: String,
    /// From 1.
    pub strategy_index: usize,
    pub strategies: usize,
    /// From 1.
    pub repeat: usize,
    pub repeats: usize,
    /// Requests done in the whole run (all strategies, all repeats) and the total.
    pub done: usize,
    pub total: usize,
}

/// Runs each strategy over the items, `repeats` times (0 counts as 1), sequentially, and scores
/// it with default bootstrap settings. See [`run_suite_with`].
pub async fn run_suite(
    items: &[SuiteItem],
    strategies: &[&dyn Strategy],
    repeats: usize,
    progress: &(dyn Fn(&RunProgress) + Send + Sync),
) -> Vec<StrategyReport> {
    run_suite_with(
        items,
        strategies,
        repeats,
        &BootstrapConfig::default(),
        progress,
    )
    .await
}

/// [`run_suite`] with explicit bootstrap settings.
///
/// The runner normalizes each prediction: `item_id` is set to the item's id; a latency that is
/// not a positive finite number is replaced by the wall time the runner measured around
/// `predict`; a non-finite cost becomes 0 with a note in `error`. Predictions are kept
/// repeat-major (all items of repeat 1, then of repeat 2, …).
pub async fn run_suite_with(
    items: &[SuiteItem],
    strategies: &[&dyn Strategy],
    repeats: usize,
    bootstrap: &BootstrapConfig,
    progress: &(dyn Fn(&RunProgress) + Send + Sync),
) -> Vec<StrategyReport> {
    let repeats = repeats.max(1);
    let total = items.len() * repeats * strategies.len();
    let mut done = 0;
    let mut reports = Vec::with_capacity(strategies.len());
    for (si, strategy) in strategies.iter().enumerate() {
        let mut predictions = Vec::with_capacity(items.len() * repeats);
        for repeat in 0..repeats {
            for item in items {
                let started = Instant::now();
                let mut p = strategy.predict(item).await;
                let measured = started.elapsed().as_secs_f64() * 1000.0;
                p.item_id = item.id.clone();
                if !(p.latency_ms.is_finite() && p.latency_ms > 0.0) {
                    p.latency_ms = measured;
                }
                if !p.cost_usd.is_finite() {
                    let note = format!("cost was {} (recorded as 0)", p.cost_usd);
                    p.error = Some(match p.error.take() {
                        Some(e) => format!("{e}; {note}"),
                        None => note,
                    });
                    p.cost_usd = 0.0;
                }
                predictions.push(p);
                done += 1;
                progress(&RunProgress {
                    strategy: strategy.name().to_string(),
                    strategy_index: si + 1,
                    strategies: strategies.len(),
                    repeat: repeat + 1,
                    repeats,
                    done,
                    total,
                });
            }
        }
        reports.push(StrategyReport {
            name: strategy.name().to_string(),
            repeats,
            metrics: score(items, &predictions),
            intervals: intervals(items, &predictions, bootstrap),
            predictions,
        });
    }
    reports
}
