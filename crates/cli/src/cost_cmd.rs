//! `careflow cost`: what the workflow costs a month on a flagship API, a managed small model
//! and a self-hosted GPU, from stated volumes and from the measured ledger.

use crate::commands::{redact, DbArgs};
use crate::output;
use anyhow::{bail, Context, Result};
use careflow_core::TokenUsage;
use careflow_ledger::{
    now_ms, project, project_volume, stateless, tiers, Ledger, LedgerSummary, PerRequest, Prices,
    Projection, Volume, DAYS_PER_MONTH, DAY_MS,
};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

/// `careflow cost --help` (set on the subcommand in main.rs: a variant's doc comment would
/// otherwise replace a long_about given here).
pub const LONG_ABOUT: &str = "What careflow's workflow costs a month on three strategies: a frontier model \
behind an API (tier flagship_api), a small model on a managed host (managed_small), and the \
small model self-hosted on rented GPUs (self_hosted), each at 1x, 10x and 100x the volume. \
An API bills per token; a self-hosted tier bills whole GPUs, so it grows in steps.\n\n\
Without --from-ledger it prices stated volumes: requests/day x steps x tokens/step, every \
step re-sending its whole context (a stateless agent). With --from-ledger it reads the tokens \
the workflow actually recorded (computed, reused from cache, generated) and projects them to \
--requests-per-day, next to the stated table and to what the same tokens would cost stateless.\n\n\
Prices come from a dated file (data/prices.toml is built in; --prices FILE reads another).\n\n\
Examples:\n  \
careflow cost                                  # the design's 50,000 requests/day x 5 steps x 1,000 tokens\n  \
careflow cost --requests-per-day 200000 --tokens-per-step 1500\n  \
careflow cost --from-ledger --since-days 7     # measured tokens per request, projected to 50,000/day\n  \
careflow cost --from-ledger --database postgres://careflow@db/careflow --json\n  \
careflow cost --prices my-prices.toml --json";

#[derive(Args)]
pub struct CostArgs {
    /// Requests per day: the stated volume, and the volume measured requests are projected to.
    #[arg(long, value_name = "N", default_value_t = Volume::STATED.requests_per_day)]
    requests_per_day: u64,
    /// Workflow steps per request (stated volume).
    #[arg(long, value_name = "N", default_value_t = Volume::STATED.steps)]
    steps: u64,
    /// Tokens per step, input and output together (stated volume).
    #[arg(long, value_name = "N", default_value_t = Volume::STATED.tokens_per_step)]
    tokens_per_step: u64,
    /// The share of each step's tokens that is generated, in [0, 1) (stated volume).
    #[arg(long, value_name = "F", default_value_t = Volume::STATED.output_share)]
    output_share: f64,
    /// A prices file (TOML, same fields as data/prices.toml); default: the built-in prices.
    #[arg(long, value_name = "FILE")]
    prices: Option<PathBuf>,
    /// Also project the tokens per request measured in the ledger.
    #[arg(long)]
    from_ledger: bool,
    #[command(flatten)]
    db: DbArgs,
    /// With --from-ledger: read the entries of the last D days.
    #[arg(long, value_name = "D", default_value_t = 30)]
    since_days: u32,
    /// One JSON document instead of tables.
    #[arg(long)]
    json: bool,
}

/// The three strategies, in the order they are shown.
const STRATEGIES: [(&str, &str); 3] = [
    (tiers::FLAGSHIP_API, "flagship API"),
    (tiers::MANAGED_SMALL, "managed small model"),
    (tiers::SELF_HOSTED, "self-hosted"),
];

#[derive(Serialize)]
struct Report {
    prices: PricesOut,
    volume: VolumeOut,
    strategies: Vec<Strategy>,
    /// Present with --from-ledger.
    ledger: Option<Measured>,
}

#[derive(Serialize)]
struct PricesOut {
    as_of: String,
    origin: String,
}

#[derive(Serialize)]
struct VolumeOut {
    requests_per_day: u64,
    steps: u64,
    tokens_per_step: u64,
    output_share: f64,
    tokens_per_day: u64,
    tokens_per_second: f64,
}

#[derive(Serialize)]
pub(crate) struct Strategy {
    pub(crate) label: String,
    #[serde(flatten)]
    pub(crate) projection: Projection,
}

#[derive(Serialize)]
struct Measured {
    database: String,
    since_days: u32,
    since_ms: i64,
    requests: u64,
    entries: u64,
    days_covered: u64,
    first_at_ms: Option<i64>,
    last_at_ms: Option<i64>,
    /// Averages over the requests measured (tokens and the cost as recorded).
    per_request: PerRequest,
    by_tier: Vec<MeasuredTier>,
    /// The measured requests at --requests-per-day.
    projection: MeasuredProjection,
}

#[derive(Serialize)]
struct MeasuredTier {
    tier: String,
    requests: u64,
    entries: u64,
    /// This tier's share of an average request.
    per_request: PerRequest,
    usd_per_month: f64,
}

#[derive(Serialize)]
struct MeasuredProjection {
    requests_per_day: u64,
    /// The measured tokens of a day at that volume.
    daily_usage: TokenUsage,
    /// The cost per request as recorded in the ledger, for a month at that volume.
    recorded_usd_per_month: f64,
    /// The measured tokens on each strategy (reused tokens at the cached-input price).
    strategies: Vec<Strategy>,
    /// The same work done stateless on the flagship API: every submitted token computed.
    stateless_flagship: Strategy,
}

pub async fn run(a: CostArgs) -> Result<()> {
    let prices = match &a.prices {
        Some(path) => Prices::load(path)?,
        None => Prices::embedded().context("the built-in prices")?,
    };
    let volume = Volume {
        requests_per_day: a.requests_per_day,
        steps: a.steps,
        tokens_per_step: a.tokens_per_step,
        output_share: a.output_share,
    };
    let strategies = STRATEGIES
        .iter()
        .map(|(tier, label)| {
            Ok(Strategy {
                label: (*label).to_string(),
                projection: project_volume(&prices, tier, &volume)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let ledger = if a.from_ledger {
        Some(measure(&a, &prices).await?)
    } else {
        None
    };
    let report = Report {
        prices: PricesOut {
            as_of: prices.as_of.clone(),
            origin: prices.origin.clone(),
        },
        volume: VolumeOut {
            requests_per_day: volume.requests_per_day,
            steps: volume.steps,
            tokens_per_step: volume.tokens_per_step,
            output_share: volume.output_share,
            tokens_per_day: volume.tokens_per_day(),
            tokens_per_second: volume.tokens_per_second(),
        },
        strategies,
        ledger,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

async fn measure(a: &CostArgs, prices: &Prices) -> Result<Measured> {
    if a.since_days == 0 {
        bail!("--since-days must be at least 1");
    }
    let url = a.db.url();
    let shown = redact(&url);
    let ledger = Ledger::connect(&url)
        .await
        .with_context(|| format!("opening the ledger at {shown}"))?;
    let since_ms = now_ms().saturating_sub(i64::from(a.since_days).saturating_mul(DAY_MS));
    let summary: LedgerSummary = ledger
        .summary(since_ms)
        .await
        .with_context(|| format!("reading the ledger at {shown}"))?;
    ledger.close().await;
    let Some(per_request) = summary.per_request.filter(|_| summary.requests > 0) else {
        bail!(
            "the ledger at {shown} has no entries from the last {} day(s), so there is nothing \
             measured to project (each priced workflow step adds one entry to it when it runs); \
             `careflow cost` without --from-ledger prices the stated volumes",
            a.since_days
        );
    };
    let r = a.requests_per_day;
    let month = |per_request_usd: f64| per_request_usd * r as f64 * DAYS_PER_MONTH;
    let daily = per_request.daily(r);
    let strategies = STRATEGIES
        .iter()
        .map(|(tier, label)| {
            Ok(Strategy {
                label: format!("{label} (measured tokens)"),
                projection: project(prices, tier, &daily)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let stateless_flagship = Strategy {
        label: "flagship API, stateless (every step re-sent)".into(),
        projection: project(prices, tiers::FLAGSHIP_API, &stateless(&daily))?,
    };
    Ok(Measured {
        database: shown,
        since_days: a.since_days,
        since_ms,
        requests: summary.requests,
        entries: summary.entries,
        days_covered: summary.days_covered,
        first_at_ms: summary.first_at_ms,
        last_at_ms: summary.last_at_ms,
        per_request,
        by_tier: summary
            .by_tier
            .iter()
            .map(|t| MeasuredTier {
                tier: t.name.clone(),
                requests: t.requests,
                entries: t.entries,
                per_request: t.per_request,
                usd_per_month: month(t.per_request.cost_usd),
            })
            .collect(),
        projection: MeasuredProjection {
            requests_per_day: r,
            daily_usage: daily,
            recorded_usd_per_month: month(per_request.cost_usd),
            strategies,
            stateless_flagship,
        },
    })
}

/// 1234567 -> "1,234,567".
pub(crate) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let head = s.len() % 3;
    let mut parts: Vec<&str> = Vec::with_capacity(s.len() / 3 + 1);
    if head > 0 {
        parts.push(&s[..head]);
    }
    let mut i = head;
    while i < s.len() {
        parts.push(&s[i..i + 3]);
        i += 3;
    }
    parts.join(",")
}

/// Dollars: whole dollars with separators from $100, cents from $1, else 4 significant digits.
pub(crate) fn usd(x: f64) -> String {
    if x >= 100.0 {
        format!("${}", thousands(x.round() as u64))
    } else if x >= 1.0 {
        format!("${x:.2}")
    } else if x > 0.0 {
        format!("${x:.4}")
    } else {
        "$0".into()
    }
}

/// Tokens: 250,000,000 -> "250.0M".
pub(crate) fn tokens(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.1}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if n >= 1e4 {
        format!("{:.1}K", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

pub(crate) fn strategy_rows<'a>(
    strategies: impl IntoIterator<Item = &'a Strategy>,
) -> Vec<Vec<String>> {
    strategies
        .into_iter()
        .map(|s| {
            let p = &s.projection;
            let gpus = |g: Option<u64>| match g {
                Some(1) => " (1 GPU)".to_string(),
                Some(n) => format!(" ({n} GPUs)"),
                None => String::new(),
            };
            let mut row = vec![
                s.label.clone(),
                p.tier.clone(),
                tokens(p.tokens_per_day as f64),
                tokens(p.tokens_per_second),
                usd(p.usd_per_day),
                usd(p.usd_per_month),
            ];
            row.extend(
                p.scaling
                    .iter()
                    .map(|x| format!("{}{}", usd(x.usd_per_month), gpus(x.gpus))),
            );
            row
        })
        .collect()
}

pub(crate) const STRATEGY_HEADERS: [&str; 9] = [
    "strategy",
    "tier",
    "tokens/day",
    "computed/s",
    "$/day",
    "$/month",
    "$/month 1x",
    "10x",
    "100x",
];

fn print_report(r: &Report) {
    let v = &r.volume;
    println!("Prices: {}, as of {}", r.prices.origin, r.prices.as_of);
    println!(
        "Stated volume: {} requests/day x {} steps x {} tokens = {} tokens/day ({} tokens/s), \
         {:.0}% generated, every step re-sent (stateless)\n",
        thousands(v.requests_per_day),
        v.steps,
        thousands(v.tokens_per_step),
        thousands(v.tokens_per_day),
        thousands(v.tokens_per_second.round() as u64),
        v.output_share * 100.0
    );
    output::table(&STRATEGY_HEADERS, &strategy_rows(&r.strategies));
    println!(
        "\nAn API bills per token; self-hosted bills whole GPUs rented all day (GPUs = \
         ceil(tokens/s needed / throughput)). A month is 30 days."
    );
    let Some(m) = &r.ledger else {
        return;
    };
    let p = &m.per_request;
    println!(
        "\nMeasured: ledger {}, last {} day(s): {} requests, {} steps, on {} day(s)",
        m.database,
        m.since_days,
        thousands(m.requests),
        thousands(m.entries),
        m.days_covered
    );
    println!(
        "Per request: {} tokens in context ({} computed, {} reused from cache), {} generated; {} as recorded\n",
        thousands(p.submitted.round() as u64),
        thousands(p.computed.round() as u64),
        thousands(p.reused.round() as u64),
        thousands(p.generated.round() as u64),
        usd(p.cost_usd)
    );
    let at = format!(
        "$/month at {}/day",
        thousands(m.projection.requests_per_day)
    );
    let mut rows: Vec<Vec<String>> = m
        .by_tier
        .iter()
        .map(|t| {
            vec![
                t.tier.clone(),
                thousands(t.requests),
                format!("{:.0}", t.per_request.computed),
                format!("{:.0}", t.per_request.reused),
                format!("{:.0}", t.per_request.generated),
                usd(t.per_request.cost_usd),
                usd(t.usd_per_month),
            ]
        })
        .collect();
    rows.push(vec![
        "all tiers".into(),
        thousands(m.requests),
        format!("{:.0}", p.computed),
        format!("{:.0}", p.reused),
        format!("{:.0}", p.generated),
        usd(p.cost_usd),
        usd(m.projection.recorded_usd_per_month),
    ]);
    output::table(
        &[
            "tier (as recorded)",
            "requests",
            "computed/req",
            "reused/req",
            "generated/req",
            "$/request",
            &at,
        ],
        &rows,
    );
    println!(
        "\nThe measured tokens per request at {} requests/day:\n",
        thousands(m.projection.requests_per_day)
    );
    output::table(
        &STRATEGY_HEADERS,
        &strategy_rows(
            m.projection
                .strategies
                .iter()
                .chain(std::iter::once(&m.projection.stateless_flagship)),
        ),
    );
    let stateful = m
        .projection
        .strategies
        .iter()
        .find(|s| s.projection.tier == tiers::FLAGSHIP_API);
    if let Some(s) = stateful {
        let replay = m.projection.stateless_flagship.projection.usd_per_month;
        if s.projection.usd_per_month > 0.0 {
            println!(
                "\nOn the flagship API, the measured requests cost {:.1}x as much when every step \
                 re-sends its context.",
                replay / s.projection.usd_per_month
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(250_000_000), "250,000,000");
        assert_eq!(usd(61_875.0), "$61,875");
        assert_eq!(usd(12.345), "$12.35");
        assert_eq!(usd(0.00123), "$0.0012");
        assert_eq!(usd(0.0), "$0");
        assert_eq!(tokens(250_000_000.0), "250.0M");
        assert_eq!(tokens(2893.5), "2894");
    }
}
