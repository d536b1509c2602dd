//! 95 % percentile-bootstrap intervals.
//!
//! The resampling unit is the suite item with all its repeats (a cluster bootstrap): each of the
//! `resamples` (B = 1000) draws picks as many items as the suite has, with replacement, and takes
//! every trial (repeat) of each picked item. Repeats of one item are not independent (same
//! message, same model), so resampling trials one by one would make the intervals too narrow;
//! with one repeat this is the ordinary bootstrap. The statistic is recomputed on each draw with
//! the conventions of [`crate::score`] (missing predictions wrong for accuracy, under/over-triage
//! over clinical trials with a prediction, cost over prediction records); a draw where a
//! statistic is undefined (empty denominator) is left out for that statistic. The interval is
//! the nearest-rank percentiles `(1 − level)/2` and `(1 + level)/2` of the draws
//! ([`crate::score::percentile`]). The random numbers come from a seeded xorshift64*, so a
//! report is reproducible.

use crate::score::{nearest_rank, outcomes, Prediction, TrialOutcome};
use crate::suite::SuiteItem;
use serde::{Deserialize, Serialize};

/// How the intervals are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootstrapConfig {
    pub resamples: usize,
    pub seed: u64,
    /// Coverage, e.g. 0.95.
    pub level: f64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            resamples: 1000,
            seed: 0x0C0F_FEE5_EED5_u64,
            level: 0.95,
        }
    }
}

/// A closed interval `[low, high]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Interval {
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }
}

/// Bootstrap intervals of a strategy's headline metrics; `null` where undefined.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Intervals {
    pub level: f64,
    pub resamples: usize,
    pub seed: u64,
    pub accuracy: Option<Interval>,
    pub under_triage_rate: Option<Interval>,
    pub over_triage_rate: Option<Interval>,
    pub cost_per_request_usd: Option<Interval>,
}

/// A small, fast, seeded generator (xorshift64*); not for cryptography.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        // A zero state would stay zero.
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-high (no modulo bias worth the name).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// Intervals for predictions against a suite.
pub fn intervals(
    items: &[SuiteItem],
    predictions: &[Prediction],
    config: &BootstrapConfig,
) -> Intervals {
    bootstrap(&outcomes(items, predictions), config)
}

#[derive(Default, Clone, Copy)]
struct Sums {
    n: usize,
    correct: usize,
    clinical: usize,
    under: usize,
    over: usize,
    cost: f64,
    cost_n: usize,
}

impl Sums {
    fn add(&mut self, o: &TrialOutcome) {
        self.n += 1;
        self.correct += usize::from(o.correct);
        self.clinical += usize::from(o.clinical_scored);
        self.under += usize::from(o.under);
        self.over += usize::from(o.over);
        if let Some(c) = o.cost_usd {
            self.cost += c;
            self.cost_n += 1;
        }
    }

    fn merge(&mut self, o: &Sums) {
        self.n += o.n;
        self.correct += o.correct;
        self.clinical += o.clinical;
        self.under += o.under;
        self.over += o.over;
        self.cost += o.cost;
        self.cost_n += o.cost_n;
    }
}

fn div(a: f64, b: usize) -> Option<f64> {
    (b > 0).then(|| a / b as f64)
}

/// Intervals from per-trial outcomes (trials sharing `item` are resampled together).
pub fn bootstrap(trials: &[TrialOutcome], config: &BootstrapConfig) -> Intervals {
    let mut out = Intervals {
        level: config.level,
        resamples: config.resamples,
        seed: config.seed,
        ..Default::default()
    };
    // One Sums per item (cluster), in first-seen order.
    let mut clusters: Vec<Sums> = Vec::new();
    let mut slot: std::collections::HashMap<usize, usize> = Default::default();
    for t in trials {
        let at = *slot.entry(t.item).or_insert_with(|| {
            clusters.push(Sums::default());
            clusters.len() - 1
        });
        clusters[at].add(t);
    }
    if clusters.is_empty() || config.resamples == 0 {
        return out;
    }
    let mut rng = XorShift::new(config.seed);
    let mut stats: [Vec<f64>; 4] = Default::default();
    for _ in 0..config.resamples {
        let mut s = Sums::default();
        for _ in 0..clusters.len() {
            s.merge(&clusters[rng.below(clusters.len())]);
        }
        let values = [
            div(s.correct as f64, s.n),
            div(s.under as f64, s.clinical),
            div(s.over as f64, s.clinical),
            div(s.cost, s.cost_n),
        ];
        for (v, acc) in values.into_iter().zip(stats.iter_mut()) {
            if let Some(v) = v {
                acc.push(v);
            }
        }
    }
    let level = if config.level.is_finite() {
        config.level.clamp(0.0, 1.0)
    } else {
        0.95
    };
    let lo_p = (1.0 - level) / 2.0 * 100.0;
    let hi_p = (1.0 + level) / 2.0 * 100.0;
    let interval = |v: &mut Vec<f64>| -> Option<Interval> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Interval {
            low: v[nearest_rank(v.len(), lo_p) - 1],
            high: v[nearest_rank(v.len(), hi_p) - 1],
        })
    };
    let [acc, under, over, cost] = &mut stats;
    out.accuracy = interval(acc);
    out.under_triage_rate = interval(under);
    out.over_triage_rate = interval(over);
    out.cost_per_request_usd = interval(cost);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(item: usize, correct: bool, under: bool, cost: f64) -> TrialOutcome {
        TrialOutcome {
            item,
            has_prediction: true,
            correct,
            clinical_scored: true,
            under,
            over: !correct && !under,
            cost_usd: Some(cost),
        }
    }

    #[test]
    fn xorshift_is_deterministic_and_in_range() {
        let mut a = XorShift::new(7);
        let mut b = XorShift::new(7);
        for _ in 0..100 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
        }
        let mut z = XorShift::new(0);
        assert_ne!(z.next_u64(), 0);
        // Every value of a small range is reached.
        let mut seen = [false; 6];
        let mut r = XorShift::new(1);
        for _ in 0..200 {
            seen[r.below(6)] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn all_correct_gives_a_degenerate_interval() {
        let trials: Vec<_> = (0..30).map(|i| trial(i, true, false, 0.002)).collect();
        let iv = bootstrap(&trials, &BootstrapConfig::default());
        assert_eq!(
            iv.accuracy,
            Some(Interval {
                low: 1.0,
                high: 1.0
            })
        );
        assert_eq!(
            iv.under_triage_rate,
            Some(Interval {
                low: 0.0,
                high: 0.0
            })
        );
        let cost = iv.cost_per_request_usd.unwrap();
        assert!((cost.low - 0.002).abs() < 1e-15 && (cost.high - 0.002).abs() < 1e-15);
        assert_eq!(iv.resamples, 1000);
    }

    #[test]
    fn interval_contains_the_point_estimate_and_is_reproducible() {
        // 40 items × 2 repeats: 28 of 40 items right both times (accuracy 0.7), 6 under-triaged.
        let mut trials = Vec::new();
        for rep in 0..2 {
            for i in 0..40 {
                let correct = i < 28;
                let under = (28..34).contains(&i);
                trials.push(trial(i, correct, under, 0.001 * (1 + (i + rep) % 5) as f64));
            }
        }
        let cfg = BootstrapConfig::default();
        let iv = bootstrap(&trials, &cfg);
        let acc = iv.accuracy.unwrap();
        assert!(acc.contains(0.7), "{acc:?}");
        assert!(acc.low < 0.7 && acc.high > 0.7 && acc.low > 0.4 && acc.high < 0.95);
        assert!(iv.under_triage_rate.unwrap().contains(0.15));
        assert!(iv.over_triage_rate.unwrap().contains(0.15));
        let mean_cost = trials.iter().filter_map(|t| t.cost_usd).sum::<f64>() / 80.0;
        assert!(iv.cost_per_request_usd.unwrap().contains(mean_cost));
        assert_eq!(bootstrap(&trials, &cfg), iv);
        let other = bootstrap(&trials, &BootstrapConfig { seed: 99, ..cfg });
        assert!(other.accuracy.unwrap().contains(0.7));
    }

    #[test]
    fn undefined_statistics_give_no_interval() {
        let iv = bootstrap(&[], &BootstrapConfig::default());
        assert_eq!(iv.accuracy, None);
        // Only admin items: no clinical trial, so no under-triage interval.
        let t = TrialOutcome {
            item: 0,
            has_prediction: true,
            correct: true,
            clinical_scored: false,
            under: false,
            over: false,
            cost_usd: Some(0.0),
        };
        let iv = bootstrap(&[t], &BootstrapConfig::default());
        assert_eq!(
            iv.accuracy,
            Some(Interval {
                low: 1.0,
                high: 1.0
            })
        );
        assert_eq!(iv.under_triage_rate, None);
    }
}
