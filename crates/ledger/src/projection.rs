//! Projections: what a day's tokens cost on a tier, per day and per month, and how that
//! scales with volume (an API tier linearly; a self-hosted tier in whole GPUs).

use careflow_core::TokenUsage;
use serde::{Deserialize, Serialize};

use crate::error::LedgerError;
use crate::prices::{Prices, TierPrice};

/// A month, for projections.
pub const DAYS_PER_MONTH: f64 = 30.0;
pub const SECONDS_PER_DAY: f64 = 86_400.0;
/// The volume multiples every projection shows.
pub const SCALE_FACTORS: [u32; 3] = [1, 10, 100];

/// A stated volume of a stateless agentic workflow: every step re-sends its whole context,
/// so every token of every step is computed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub requests_per_day: u64,
    /// Workflow steps per request.
    pub steps: u64,
    /// Tokens per step, input and output together.
    pub tokens_per_step: u64,
    /// The share of those tokens that is generated (output), in [0, 1).
    pub output_share: f64,
}

impl Volume {
    /// The design's stated volume: 50,000 requests/day x 5 steps x 1,000 tokens, 10% of
    /// them generated (about 100 tokens of output per step).
    pub const STATED: Volume = Volume {
        requests_per_day: 50_000,
        steps: 5,
        tokens_per_step: 1_000,
        output_share: 0.1,
    };

    /// Refuses a volume that cannot be projected (zeros, an output share outside [0, 1),
    /// or more tokens a day than 64 bits hold).
    pub fn validate(&self) -> Result<(), LedgerError> {
        let positive = |field: &'static str, v: u64| {
            if v == 0 {
                Err(LedgerError::BadVolume {
                    field,
                    reason: "must be at least 1".into(),
                })
            } else {
                Ok(())
            }
        };
        positive("requests_per_day", self.requests_per_day)?;
        positive("steps", self.steps)?;
        positive("tokens_per_step", self.tokens_per_step)?;
        if !(0.0..1.0).contains(&self.output_share) {
            return Err(LedgerError::BadVolume {
                field: "output_share",
                reason: format!("must be in [0, 1) (found {})", self.output_share),
            });
        }
        let per_day = self
            .requests_per_day
            .checked_mul(self.steps)
            .and_then(|x| x.checked_mul(self.tokens_per_step))
            .and_then(|x| x.checked_mul(u64::from(SCALE_FACTORS[SCALE_FACTORS.len() - 1])));
        if per_day.is_none() {
            return Err(LedgerError::BadVolume {
                field: "requests_per_day",
                reason: "requests_per_day x steps x tokens_per_step is too large".into(),
            });
        }
        Ok(())
    }

    /// requests/day x steps x tokens/step.
    pub fn tokens_per_day(&self) -> u64 {
        self.requests_per_day
            .saturating_mul(self.steps)
            .saturating_mul(self.tokens_per_step)
    }

    /// [`Volume::tokens_per_day`] averaged over the seconds of a day.
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens_per_day() as f64 / SECONDS_PER_DAY
    }

    /// A day of this volume as token counters: every input token submitted and computed
    /// (stateless: nothing is reused), `output_share` of the tokens generated.
    pub fn daily_usage(&self) -> TokenUsage {
        let total = self.tokens_per_day();
        let generated = (total as f64 * self.output_share).round() as u64;
        let input = total.saturating_sub(generated);
        TokenUsage {
            submitted: input,
            computed: input,
            reused: 0,
            generated,
            micros: 0,
        }
    }
}

/// What a stateless agent pays for the same work: every token it submitted is computed
/// again (nothing reused), the same tokens generated.
pub fn stateless(usage: &TokenUsage) -> TokenUsage {
    let submitted = usage.submitted.max(usage.computed + usage.reused);
    TokenUsage {
        submitted,
        computed: submitted,
        reused: 0,
        generated: usage.generated,
        micros: usage.micros,
    }
}

/// `usage` multiplied by `factor` (rounded to whole tokens, saturating).
pub fn scale_usage(usage: &TokenUsage, factor: f64) -> TokenUsage {
    let s = |v: u64| {
        let x = (v as f64 * factor).round();
        if x >= u64::MAX as f64 {
            u64::MAX
        } else if x > 0.0 {
            x as u64
        } else {
            0
        }
    };
    TokenUsage {
        submitted: s(usage.submitted),
        computed: s(usage.computed),
        reused: s(usage.reused),
        generated: s(usage.generated),
        micros: s(usage.micros),
    }
}

/// A day's tokens priced on one tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    pub tier: String,
    /// `"api"` or `"self_hosted"`.
    pub kind: String,
    /// Every token handled in a day: computed + reused + generated.
    pub tokens_per_day: u64,
    pub computed_per_day: u64,
    pub reused_per_day: u64,
    pub generated_per_day: u64,
    /// Tokens the tier must compute per second (computed + generated, averaged over the
    /// day); reused tokens are not computed again.
    pub tokens_per_second: f64,
    /// Self-hosted: whole GPUs (or machines) needed, `ceil(tokens_per_second / throughput)`.
    pub gpus: Option<u64>,
    /// API: the bill. Self-hosted: the GPUs rented all day (`gpus x $/hour x 24`).
    pub usd_per_day: f64,
    pub usd_per_month: f64,
    /// The tokens priced per token ([`TierPrice::cost`]): equal to `usd_per_day` on an API
    /// tier; on a self-hosted tier, what the GPU time actually used costs.
    pub metered_usd_per_day: f64,
    /// The same projection at 1x, 10x and 100x the volume.
    pub scaling: Vec<ScalePoint>,
}

/// One volume multiple of a [`Projection`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalePoint {
    pub factor: u32,
    pub tokens_per_day: u64,
    pub tokens_per_second: f64,
    pub gpus: Option<u64>,
    pub usd_per_day: f64,
    pub usd_per_month: f64,
}

/// The day's cost of `daily` on `tier`: (usd/day, GPUs, metered usd/day, tokens/s).
fn day_cost(tier: &TierPrice, daily: &TokenUsage) -> (f64, Option<u64>, f64, f64) {
    let per_second = (daily.computed.saturating_add(daily.generated)) as f64 / SECONDS_PER_DAY;
    let metered = tier.cost(daily);
    match tier {
        TierPrice::Api { .. } => (metered, None, metered, per_second),
        TierPrice::SelfHosted {
            gpu_per_hour,
            tokens_per_second,
            ..
        } => {
            let gpus = (per_second / tokens_per_second).ceil().max(0.0) as u64;
            (
                gpus as f64 * gpu_per_hour * 24.0,
                Some(gpus),
                metered,
                per_second,
            )
        }
    }
}

/// Prices a day of `daily` tokens on tier `name` of `prices`, with its scaling.
pub fn project(prices: &Prices, name: &str, daily: &TokenUsage) -> Result<Projection, LedgerError> {
    let tier = prices.tier(name)?;
    let handled = |u: &TokenUsage| {
        u.computed
            .saturating_add(u.reused)
            .saturating_add(u.generated)
    };
    let (usd_per_day, gpus, metered_usd_per_day, tokens_per_second) = day_cost(tier, daily);
    let scaling = SCALE_FACTORS
        .iter()
        .map(|&factor| {
            let u = scale_usage(daily, f64::from(factor));
            let (usd, gpus, _, per_second) = day_cost(tier, &u);
            ScalePoint {
                factor,
                tokens_per_day: handled(&u),
                tokens_per_second: per_second,
                gpus,
                usd_per_day: usd,
                usd_per_month: usd * DAYS_PER_MONTH,
            }
        })
        .collect();
    Ok(Projection {
        tier: name.to_string(),
        kind: tier.kind().to_string(),
        tokens_per_day: handled(daily),
        computed_per_day: daily.computed,
        reused_per_day: daily.reused,
        generated_per_day: daily.generated,
        tokens_per_second,
        gpus,
        usd_per_day,
        usd_per_month: usd_per_day * DAYS_PER_MONTH,
        metered_usd_per_day,
        scaling,
    })
}

/// Prices a stated (stateless) volume on tier `name`.
pub fn project_volume(
    prices: &Prices,
    name: &str,
    volume: &Volume,
) -> Result<Projection, LedgerError> {
    volume.validate()?;
    project(prices, name, &volume.daily_usage())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prices::tiers;

    fn seed(name: &str) -> Projection {
        project_volume(&Prices::embedded().unwrap(), name, &Volume::STATED).unwrap()
    }

    #[test]
    fn the_stated_volume_is_250m_tokens_a_day_about_2894_a_second() {
        let v = Volume::STATED;
        assert_eq!(v.tokens_per_day(), 250_000_000);
        assert!(
            (v.tokens_per_second() - 2893.5).abs() < 0.1,
            "{}",
            v.tokens_per_second()
        );
        let u = v.daily_usage();
        assert_eq!(u.computed + u.generated, 250_000_000);
        assert_eq!(u.reused, 0);
    }

    #[test]
    fn the_flagship_api_costs_about_60k_a_month_at_7_to_9_dollars_per_million() {
        let p = seed(tiers::FLAGSHIP_API);
        assert_eq!(p.tokens_per_day, 250_000_000);
        let per_million = p.usd_per_day / 250.0;
        assert!((7.0..=9.0).contains(&per_million), "{per_million}");
        assert!(
            (55_000.0..=65_000.0).contains(&p.usd_per_month),
            "{}",
            p.usd_per_month
        );
        assert_eq!(p.gpus, None);
        // 225M input x $7.50 + 25M output x $15 = $2,062.50 a day.
        assert!((p.usd_per_day - 2062.5).abs() < 1e-6, "{}", p.usd_per_day);
    }

    #[test]
    fn a_managed_small_model_costs_about_7_5k_a_month() {
        let p = seed(tiers::MANAGED_SMALL);
        assert!(
            (7_000.0..=8_000.0).contains(&p.usd_per_month),
            "{}",
            p.usd_per_month
        );
    }

    #[test]
    fn self_hosted_is_one_gpu_and_a_few_hundred_dollars_a_month() {
        let p = seed(tiers::SELF_HOSTED);
        assert_eq!(p.gpus, Some(1));
        assert!(
            (100.0..1_000.0).contains(&p.usd_per_month),
            "{}",
            p.usd_per_month
        );
        assert!(p.metered_usd_per_day <= p.usd_per_day);
        assert!((p.tokens_per_second - 2893.5).abs() < 0.1);
    }

    #[test]
    fn scaling_is_linear_on_an_api_and_in_whole_gpus_self_hosted() {
        let api = seed(tiers::FLAGSHIP_API);
        let factors: Vec<u32> = api.scaling.iter().map(|s| s.factor).collect();
        assert_eq!(factors, vec![1, 10, 100]);
        assert_eq!(api.scaling[0].usd_per_month, api.usd_per_month);
        assert!((api.scaling[2].usd_per_month / api.usd_per_month - 100.0).abs() < 1e-6);
        assert_eq!(api.scaling[2].tokens_per_day, 25_000_000_000);

        let gpu = seed(tiers::SELF_HOSTED);
        let Ok(TierPrice::SelfHosted {
            tokens_per_second,
            gpu_per_hour,
            ..
        }) = Prices::embedded()
            .unwrap()
            .tier(tiers::SELF_HOSTED)
            .cloned()
        else {
            panic!("self_hosted is not self-hosted")
        };
        for s in &gpu.scaling {
            let need = (250_000_000.0 / SECONDS_PER_DAY * f64::from(s.factor) / tokens_per_second)
                .ceil() as u64;
            assert_eq!(s.gpus, Some(need), "x{}", s.factor);
            let month = need as f64 * gpu_per_hour * 24.0 * DAYS_PER_MONTH;
            assert!((s.usd_per_month - month).abs() < 1e-6);
        }
        assert!(gpu.scaling[2].gpus > gpu.scaling[1].gpus);
    }

    #[test]
    fn reuse_makes_a_stateful_day_cheaper_than_its_stateless_replay() {
        let prices = Prices::embedded().unwrap();
        let stateful = TokenUsage {
            submitted: 5_000,
            computed: 1_200,
            reused: 3_800,
            generated: 400,
            micros: 0,
        };
        let replay = stateless(&stateful);
        assert_eq!((replay.computed, replay.reused), (5_000, 0));
        for tier in [tiers::FLAGSHIP_API, tiers::SELF_HOSTED] {
            let a = project(&prices, tier, &scale_usage(&stateful, 50_000.0)).unwrap();
            let b = project(&prices, tier, &scale_usage(&replay, 50_000.0)).unwrap();
            assert!(a.metered_usd_per_day < b.metered_usd_per_day, "{tier}");
        }
    }

    #[test]
    fn impossible_volumes_are_refused_with_the_field() {
        let prices = Prices::embedded().unwrap();
        let cases = [
            (
                Volume {
                    requests_per_day: 0,
                    ..Volume::STATED
                },
                "requests_per_day",
            ),
            (
                Volume {
                    steps: 0,
                    ..Volume::STATED
                },
                "steps",
            ),
            (
                Volume {
                    output_share: 1.0,
                    ..Volume::STATED
                },
                "output_share",
            ),
            (
                Volume {
                    tokens_per_step: u64::MAX / 2,
                    ..Volume::STATED
                },
                "too large",
            ),
        ];
        for (v, want) in cases {
            let e = project_volume(&prices, tiers::FLAGSHIP_API, &v)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
