//! careflow's cost ledger: what each workflow step cost, and what a month would cost.
//!
//! Layout:
//! - `prices.rs`: [`Prices`], a dated price list per tier read from TOML (`data/prices.toml`
//!   is embedded as the default; [`Prices::load`] reads another), and [`TierPrice::cost`],
//!   which prices a step's [`TokenUsage`](careflow_core::TokenUsage): computed tokens as
//!   input, reused tokens as cached input, generated tokens as output; on a self-hosted tier
//!   a token costs `gpu_per_hour / (tokens_per_second x 3600)` and a reused token nothing.
//! - `projection.rs`: [`Volume`] (requests/day x steps x tokens/step) and [`Projection`]:
//!   tokens/day, $/day, $/month (30 days) on one tier, and the same at 1x, 10x and 100x
//!   the volume (an API linearly, a self-hosted tier in whole GPUs).
//! - `store.rs`: [`Ledger`], the table `ledger_entries` on SQLite or PostgreSQL (same URLs
//!   as the records database): one [`LedgerEntry`] per priced step, written one request
//!   per transaction, read back as spend ([`Ledger::spent_since`]), a
//!   [`LedgerSummary`] and a request's entries.
//! - `error.rs`: [`LedgerError`], the crate's one error type; each variant names the file,
//!   tier, field or entry at fault.
//!
//! ```no_run
//! # async fn demo() -> Result<(), careflow_ledger::LedgerError> {
//! use careflow_ledger::{project_volume, tiers, Prices, Volume};
//! let prices = Prices::embedded()?;
//! let flagship = project_volume(&prices, tiers::FLAGSHIP_API, &Volume::STATED)?;
//! println!("{:.0} $/month", flagship.usd_per_month);
//! # Ok(()) }
//! ```

mod error;
mod prices;
mod projection;
mod store;

pub use error::LedgerError;
pub use prices::{tiers, Prices, TierPrice, EMBEDDED_ORIGIN, EMBEDDED_PRICES};
pub use projection::{
    project, project_volume, scale_usage, stateless, Projection, ScalePoint, Volume,
    DAYS_PER_MONTH, SCALE_FACTORS, SECONDS_PER_DAY,
};
pub use store::{
    now_ms, redact, Breakdown, Ledger, LedgerEntry, LedgerSummary, PerRequest, DAY_MS,
};
