//! The operations dashboard's figures, aggregated in the database from `triage_requests`,
//! `audit_log`, `triage_steps` and `reviews` (the same events the Prometheus counters count,
//! but kept across restarts and per day).

use super::reviews::{needs_review, QUEUED_CASES};
use super::{Pool, Store};
use crate::GatewayError;
use careflow_core::time::DAY_MS;
use careflow_core::TokenUsage;
use serde::Serialize;
use std::collections::BTreeMap;

/// Latency percentiles read at most this many of the latest step rows.
const LATENCY_ROWS: i64 = 20_000;

/// One UTC day.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DayFigures {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// Requests received (accepted or refused).
    pub requests: u64,
    pub done: u64,
    pub errors: u64,
    pub rejected: u64,
    pub escalated: u64,
    pub human_review: u64,
    /// What careflow's steps cost.
    pub cost_usd: f64,
    /// What the flagship API would have cost for the same work run statelessly (every step
    /// re-sends its context), priced from the same tokens.
    pub flagship_usd: f64,
    pub computed: u64,
    pub reused: u64,
    pub generated: u64,
}

/// A step's latency over the latest decided requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepLatency {
    pub step: String,
    pub tier: String,
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

/// Everything the dashboard shows, over `days` days up to now.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub days: Vec<DayFigures>,
    /// Decisions by disposition (as decided, before review).
    pub dispositions: BTreeMap<String, u64>,
    /// Decisions by who decided (`small`, `frontier`, `human_review`).
    pub decided_by: BTreeMap<String, u64>,
    pub decisions: u64,
    pub escalation_rate: f64,
    /// Share of decisions that needed a clinician (human review or frontier-decided).
    pub review_rate: f64,
    pub reviews: BTreeMap<String, u64>,
    pub pending_review: u64,
    pub cost_usd: f64,
    pub flagship_usd: f64,
    pub computed: u64,
    pub reused: u64,
    pub generated: u64,
    pub steps: Vec<StepLatency>,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn n(x: i64) -> u64 {
    x.max(0) as u64
}

impl Store {
    /// The figures of the last `days` UTC days (today included). `flagship`: what a token
    /// usage would cost on the flagship API, run statelessly.
    pub async fn figures(
        &self,
        days: u32,
        now_ms: i64,
        flagship: &(dyn Fn(&TokenUsage) -> f64 + Sync),
    ) -> Result<Figures, GatewayError> {
        let today = now_ms.div_euclid(DAY_MS);
        let first = today - i64::from(days.max(1)) + 1;
        let since = first * DAY_MS;
        let mut per_day: BTreeMap<i64, DayFigures> = (first..=today)
            .map(|d| {
                (
                    d,
                    DayFigures {
                        day: careflow_core::time::utc_date(d),
                        ..DayFigures::default()
                    },
                )
            })
            .collect();
        let ctx = "reading the dashboard's figures";
        let requests: Vec<(i64, String, i64)> = on_backend!(&self.pool, p => {
            sqlx::query_as(
                "SELECT created_at_ms / 86400000 AS d, status, COUNT(*) FROM triage_requests \
                 WHERE created_at_ms >= $1 GROUP BY created_at_ms / 86400000, status",
            )
            .bind(since)
            .fetch_all(p)
            .await
            .map_err(GatewayError::db(ctx))?
        });
        for (d, status, count) in requests {
            if let Some(f) = per_day.get_mut(&d) {
                f.requests += n(count);
                match status.as_str() {
                    "done" => f.done += n(count),
                    "error" => f.errors += n(count),
                    "rejected" => f.rejected += n(count),
                    _ => {}
                }
            }
        }
        let mut figures = Figures::default();
        let decisions: Vec<(i64, String, String, bool, i64, f64)> = on_backend!(&self.pool, p => {
            sqlx::query_as(
                "SELECT at_ms / 86400000 AS d, disposition, decided_by, escalated, COUNT(*), \
                 CAST(SUM(cost_usd) AS DOUBLE PRECISION) FROM audit_log WHERE at_ms >= $1 \
                 GROUP BY at_ms / 86400000, disposition, decided_by, escalated",
            )
            .bind(since)
            .fetch_all(p)
            .await
            .map_err(GatewayError::db(ctx))?
        });
        let mut escalated = 0u64;
        let mut needs_clinician = 0u64;
        for (d, disposition, decided_by, was_escalated, count, cost) in decisions {
            let count = n(count);
            figures.decisions += count;
            *figures.dispositions.entry(disposition).or_default() += count;
            if was_escalated {
                escalated += count;
            }
            if needs_review(&decided_by) {
                needs_clinician += count;
            }
            if let Some(f) = per_day.get_mut(&d) {
                f.cost_usd += cost;
                if was_escalated {
                    f.escalated += count;
                }
                if decided_by == "human_review" {
                    f.human_review += count;
                }
            }
            *figures.decided_by.entry(decided_by).or_default() += count;
        }
        let tokens: Vec<(i64, i64, i64, i64, i64)> = on_backend!(&self.pool, p => {
            sqlx::query_as(
                // Per row the larger of submitted and computed + reused, as `stateless` takes
                // it per step: the day's flagship price is then the sum of the steps'.
                "SELECT at_ms / 86400000 AS d, CAST(SUM(CASE WHEN submitted > computed + reused \
                 THEN submitted ELSE computed + reused END) AS BIGINT), \
                 CAST(SUM(computed) AS BIGINT), CAST(SUM(reused) AS BIGINT), \
                 CAST(SUM(generated) AS BIGINT) FROM triage_steps WHERE at_ms >= $1 \
                 GROUP BY at_ms / 86400000",
            )
            .bind(since)
            .fetch_all(p)
            .await
            .map_err(GatewayError::db(ctx))?
        });
        for (d, submitted, computed, reused, generated) in tokens {
            if let Some(f) = per_day.get_mut(&d) {
                let usage = TokenUsage {
                    submitted: n(submitted),
                    computed: n(computed),
                    reused: n(reused),
                    generated: n(generated),
                    micros: 0,
                };
                f.computed = usage.computed;
                f.reused = usage.reused;
                f.generated = usage.generated;
                f.flagship_usd = flagship(&usage);
            }
        }
        let latencies: Vec<(String, String, f64)> = on_backend!(&self.pool, p => {
            sqlx::query_as(
                "SELECT step, tier, millis FROM triage_steps WHERE at_ms >= $1 \
                 ORDER BY at_ms DESC LIMIT $2",
            )
            .bind(since)
            .bind(LATENCY_ROWS)
            .fetch_all(p)
            .await
            .map_err(GatewayError::db(ctx))?
        });
        let mut by_step: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
        for (step, tier, millis) in latencies {
            by_step.entry((step, tier)).or_default().push(millis);
        }
        figures.steps = by_step
            .into_iter()
            .map(|((step, tier), mut ms)| {
                ms.sort_by(f64::total_cmp);
                StepLatency {
                    step,
                    tier,
                    count: ms.len() as u64,
                    p50_ms: percentile(&ms, 0.50),
                    p95_ms: percentile(&ms, 0.95),
                }
            })
            .collect();
        let reviews: Vec<(String, i64)> = on_backend!(&self.pool, p => {
            sqlx::query_as(
                "SELECT action, COUNT(*) FROM reviews WHERE at_ms >= $1 GROUP BY action",
            )
            .bind(since)
            .fetch_all(p)
            .await
            .map_err(GatewayError::db(ctx))?
        });
        figures.reviews = reviews.into_iter().map(|(a, c)| (a, n(c))).collect();
        let pending: (i64,) = on_backend!(&self.pool, p => {
            sqlx::query_as(&format!("SELECT COUNT(*) {QUEUED_CASES}"))
            .fetch_one(p)
            .await
            .map_err(GatewayError::db(ctx))?
        });
        figures.pending_review = n(pending.0);
        if figures.decisions > 0 {
            figures.escalation_rate = escalated as f64 / figures.decisions as f64;
            figures.review_rate = needs_clinician as f64 / figures.decisions as f64;
        }
        figures.days = per_day.into_values().collect();
        for d in &figures.days {
            figures.cost_usd += d.cost_usd;
            figures.flagship_usd += d.flagship_usd;
            figures.computed += d.computed;
            figures.reused += d.reused;
            figures.generated += d.generated;
        }
        Ok(figures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.95), 95.0);
        assert_eq!(percentile(&[7.0], 0.95), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
