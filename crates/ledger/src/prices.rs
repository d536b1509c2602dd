//! Dated prices per tier, read from a TOML file (`data/prices.toml` is embedded as the
//! default), and what a step's tokens cost on a tier.

use std::collections::BTreeMap;
use std::path::Path;

use careflow_core::TokenUsage;
use serde::Serialize;

use crate::error::LedgerError;

/// The prices shipped with careflow (`data/prices.toml`).
pub const EMBEDDED_PRICES: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../data/prices.toml"
));

/// Where the embedded prices say they come from, in messages.
pub const EMBEDDED_ORIGIN: &str = "data/prices.toml (embedded)";

/// The tier names careflow's own code and tests refer to.
pub mod tiers {
    /// A frontier model behind a provider's API.
    pub const FLAGSHIP_API: &str = "flagship_api";
    /// A small model served by a managed inference host.
    pub const MANAGED_SMALL: &str = "managed_small";
    /// careflow's small model on a rented GPU.
    pub const SELF_HOSTED: &str = "self_hosted";
    /// The small model on the 2-vCPU machine the tests run on.
    pub const LOCAL_SMALL: &str = "local_small";
    /// A second local model standing in for a frontier model, priced like `flagship_api`.
    pub const LOCAL_FRONTIER: &str = "local_frontier";
}

/// A price list: the date it holds for, and one price per tier name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prices {
    /// `YYYY-MM-DD`.
    pub as_of: String,
    /// What the figures assume (free text from the file).
    pub note: String,
    /// Where these prices were read from (a path, or [`EMBEDDED_ORIGIN`]).
    pub origin: String,
    pub tiers: BTreeMap<String, TierPrice>,
}

/// The price of one tier.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TierPrice {
    /// Billed per 1M tokens.
    Api {
        /// $ per 1M input tokens the provider computes.
        input_per_m: f64,
        /// $ per 1M input tokens served from the provider's prompt cache.
        cached_input_per_m: f64,
        /// $ per 1M generated tokens.
        output_per_m: f64,
        note: String,
        source: String,
    },
    /// Billed per hour of one accelerator (or, for a CPU tier, one machine).
    SelfHosted {
        /// $ per hour of one GPU (or machine).
        gpu_per_hour: f64,
        /// Tokens one GPU (or machine) computes per second, prefill and decode together.
        tokens_per_second: f64,
        /// What one unit is, e.g. "1 NVIDIA L4 24 GB".
        hardware: String,
        note: String,
        source: String,
    },
}

impl TierPrice {
    /// What `usage` costs on this tier, in dollars: computed tokens at the input price,
    /// reused tokens at the cached-input price, generated tokens at the output price. On a
    /// self-hosted tier, computed and generated tokens take GPU time and reused tokens cost
    /// nothing (they are not computed again). `submitted` and `micros` are not priced.
    pub fn cost(&self, usage: &TokenUsage) -> f64 {
        match self {
            TierPrice::Api {
                input_per_m,
                cached_input_per_m,
                output_per_m,
                ..
            } => {
                (usage.computed as f64 * input_per_m
                    + usage.reused as f64 * cached_input_per_m
                    + usage.generated as f64 * output_per_m)
                    / 1e6
            }
            TierPrice::SelfHosted { .. } => {
                (usage.computed + usage.generated) as f64 * self.usd_per_computed_token()
            }
        }
    }

    /// Self-hosted: $ per computed token, `gpu_per_hour / (tokens_per_second * 3600)`.
    /// API: the input price per token.
    pub fn usd_per_computed_token(&self) -> f64 {
        match self {
            TierPrice::Api { input_per_m, .. } => input_per_m / 1e6,
            TierPrice::SelfHosted {
                gpu_per_hour,
                tokens_per_second,
                ..
            } => gpu_per_hour / (tokens_per_second * 3600.0),
        }
    }

    /// `"api"` or `"self_hosted"` (the `kind` of the file).
    pub fn kind(&self) -> &'static str {
        match self {
            TierPrice::Api { .. } => KIND_API,
            TierPrice::SelfHosted { .. } => KIND_SELF_HOSTED,
        }
    }

    pub fn note(&self) -> &str {
        match self {
            TierPrice::Api { note, .. } | TierPrice::SelfHosted { note, .. } => note,
        }
    }

    pub fn source(&self) -> &str {
        match self {
            TierPrice::Api { source, .. } | TierPrice::SelfHosted { source, .. } => source,
        }
    }
}

const KIND_API: &str = "api";
const KIND_SELF_HOSTED: &str = "self_hosted";
const API_FIELDS: &[&str] = &[
    "kind",
    "input_per_m",
    "cached_input_per_m",
    "output_per_m",
    "note",
    "source",
];
const SELF_HOSTED_FIELDS: &[&str] = &[
    "kind",
    "hardware",
    "gpu_per_hour",
    "tokens_per_second",
    "note",
    "source",
];
const TOP_FIELDS: &[&str] = &["as_of", "note", "tiers"];

impl Prices {
    /// The prices shipped with careflow (`data/prices.toml`, compiled in).
    pub fn embedded() -> Result<Prices, LedgerError> {
        Prices::parse(EMBEDDED_PRICES, EMBEDDED_ORIGIN)
    }

    /// Reads a prices file. Unknown fields are refused, as are missing ones and prices or
    /// throughputs that are not greater than zero; the error names the file, the tier and
    /// the field.
    pub fn load(path: &Path) -> Result<Prices, LedgerError> {
        let text = std::fs::read_to_string(path).map_err(|cause| LedgerError::Io {
            path: path.to_path_buf(),
            cause,
        })?;
        Prices::parse(&text, &path.display().to_string())
    }

    /// Parses the text of a prices file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Prices, LedgerError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| LedgerError::PricesSyntax {
                    file: origin.to_string(),
                    message: e.to_string().trim_end().to_string(),
                })?;
        let top = Fields {
            file: origin,
            tier: None,
            table: &table,
        };
        top.deny_unknown(TOP_FIELDS, "the top level of a prices file has")?;
        let as_of = top.date("as_of")?;
        let note = top.text("note", false)?;
        let tiers_value = table
            .get("tiers")
            .ok_or_else(|| top.err("tiers", "missing"))?;
        let toml::Value::Table(tier_tables) = tiers_value else {
            return Err(top.err(
                "tiers",
                &format!(
                    "expected a table of tiers ([tiers.NAME]), found {}",
                    tiers_value.type_str()
                ),
            ));
        };
        if tier_tables.is_empty() {
            return Err(top.err("tiers", "no tier defined"));
        }
        let mut tiers = BTreeMap::new();
        for (name, value) in tier_tables {
            if name.trim().is_empty() {
                return Err(top.err("tiers", "a tier name is empty"));
            }
            let toml::Value::Table(t) = value else {
                return Err(top.err(
                    &format!("tiers.{name}"),
                    &format!("expected a table, found {}", value.type_str()),
                ));
            };
            tiers.insert(name.clone(), parse_tier(origin, name, t)?);
        }
        Ok(Prices {
            as_of,
            note,
            origin: origin.to_string(),
            tiers,
        })
    }

    /// The price of tier `name`; an unknown name is an error that lists the known ones.
    pub fn tier(&self, name: &str) -> Result<&TierPrice, LedgerError> {
        self.tiers
            .get(name)
            .ok_or_else(|| LedgerError::UnknownTier {
                origin: self.origin.clone(),
                name: name.to_string(),
                known: self.tiers.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// What `usage` costs on tier `name` ([`TierPrice::cost`]).
    pub fn cost(&self, name: &str, usage: &TokenUsage) -> Result<f64, LedgerError> {
        Ok(self.tier(name)?.cost(usage))
    }
}

fn parse_tier(file: &str, name: &str, t: &toml::Table) -> Result<TierPrice, LedgerError> {
    let f = Fields {
        file,
        tier: Some(name),
        table: t,
    };
    let kind = f.text("kind", true)?;
    match kind.as_str() {
        KIND_API => {
            f.deny_unknown(API_FIELDS, "an `api` tier has")?;
            let input_per_m = f.positive("input_per_m")?;
            let cached_input_per_m = f.positive("cached_input_per_m")?;
            if cached_input_per_m > input_per_m {
                return Err(f.err(
                    "cached_input_per_m",
                    &format!(
                        "{cached_input_per_m} is more than input_per_m ({input_per_m}); cached input never costs more than input"
                    ),
                ));
            }
            Ok(TierPrice::Api {
                input_per_m,
                cached_input_per_m,
                output_per_m: f.positive("output_per_m")?,
                note: f.text("note", true)?,
                source: f.text("source", true)?,
            })
        }
        KIND_SELF_HOSTED => {
            f.deny_unknown(SELF_HOSTED_FIELDS, "a `self_hosted` tier has")?;
            Ok(TierPrice::SelfHosted {
                gpu_per_hour: f.positive("gpu_per_hour")?,
                tokens_per_second: f.positive("tokens_per_second")?,
                hardware: f.text("hardware", true)?,
                note: f.text("note", true)?,
                source: f.text("source", true)?,
            })
        }
        other => Err(f.err(
            "kind",
            &format!(
                "`{other}` is not a tier kind (expected `{KIND_API}` or `{KIND_SELF_HOSTED}`)"
            ),
        )),
    }
}

/// One table of a prices file being read, and where it is (for errors).
struct Fields<'a> {
    file: &'a str,
    tier: Option<&'a str>,
    table: &'a toml::Table,
}

impl Fields<'_> {
    fn err(&self, field: &str, reason: &str) -> LedgerError {
        LedgerError::PricesField {
            file: self.file.to_string(),
            tier: self.tier.map(str::to_string),
            field: field.to_string(),
            reason: reason.to_string(),
        }
    }

    fn deny_unknown(&self, known: &[&str], what: &str) -> Result<(), LedgerError> {
        match self.table.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(self.err(k, &format!("unknown field ({what}: {})", known.join(", ")))),
            None => Ok(()),
        }
    }

    /// A number greater than zero (an integer is accepted).
    fn positive(&self, field: &str) -> Result<f64, LedgerError> {
        let v = match self.table.get(field) {
            None => return Err(self.err(field, "missing")),
            Some(toml::Value::Float(x)) => *x,
            Some(toml::Value::Integer(i)) => *i as f64,
            Some(other) => {
                return Err(self.err(
                    field,
                    &format!("expected a number, found {}", other.type_str()),
                ))
            }
        };
        if !v.is_finite() || v <= 0.0 {
            return Err(self.err(field, &format!("must be greater than zero (found {v})")));
        }
        Ok(v)
    }

    /// A string; when `required`, it must be present and not blank.
    fn text(&self, field: &str, required: bool) -> Result<String, LedgerError> {
        match self.table.get(field) {
            None if required => Err(self.err(field, "missing")),
            None => Ok(String::new()),
            Some(toml::Value::String(s)) if required && s.trim().is_empty() => {
                Err(self.err(field, "must not be empty"))
            }
            Some(toml::Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.err(
                field,
                &format!("expected a string, found {}", other.type_str()),
            )),
        }
    }

    /// A date `YYYY-MM-DD`, quoted or as a TOML local date.
    fn date(&self, field: &str) -> Result<String, LedgerError> {
        let s = match self.table.get(field) {
            None => return Err(self.err(field, "missing")),
            Some(toml::Value::String(s)) => s.clone(),
            Some(toml::Value::Datetime(d)) if d.time.is_none() && d.offset.is_none() => {
                d.to_string()
            }
            Some(other) => {
                return Err(self.err(
                    field,
                    &format!("expected a date YYYY-MM-DD, found {}", other.type_str()),
                ))
            }
        };
        if !is_date(&s) {
            return Err(self.err(field, &format!("`{s}` is not a date YYYY-MM-DD")));
        }
        Ok(s)
    }
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u32>().ok());
    let digits = b
        .iter()
        .enumerate()
        .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    matches!(
        (digits, num(5..7), num(8..10)),
        (true, Some(1..=12), Some(1..=31))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(computed: u64, reused: u64, generated: u64) -> TokenUsage {
        TokenUsage {
            submitted: computed + reused,
            computed,
            reused,
            generated,
            micros: 0,
        }
    }

    #[test]
    fn the_embedded_prices_parse_are_dated_and_hold_every_tier_the_system_names() {
        let p = Prices::embedded().unwrap();
        assert_eq!(p.as_of, "2026-12-01");
        for name in [
            tiers::FLAGSHIP_API,
            tiers::MANAGED_SMALL,
            tiers::SELF_HOSTED,
            tiers::LOCAL_SMALL,
            tiers::LOCAL_FRONTIER,
        ] {
            let t = p.tier(name).unwrap();
            assert!(
                !t.note().is_empty() && t.source().starts_with("https://"),
                "{name}"
            );
        }
        let api = |n: &str| match p.tier(n).unwrap() {
            TierPrice::Api {
                input_per_m,
                cached_input_per_m,
                output_per_m,
                ..
            } => (*input_per_m, *cached_input_per_m, *output_per_m),
            other => panic!("{n} is {}", other.kind()),
        };
        assert_eq!(api("local_frontier"), api("flagship_api"));
        assert_eq!(p.tier("self_hosted").unwrap().kind(), "self_hosted");
        assert_eq!(p.tier("local_small").unwrap().kind(), "self_hosted");
    }

    #[test]
    fn api_cost_prices_computed_as_input_reused_as_cached_and_generated_as_output() {
        let p = Prices::embedded().unwrap();
        let t = p.tier("flagship_api").unwrap();
        let c = t.cost(&usage(1_000_000, 2_000_000, 100_000));
        // 1M x 7.50 + 2M x 3.75 + 0.1M x 15 = 7.50 + 7.50 + 1.50
        assert!((c - 16.5).abs() < 1e-9, "{c}");
    }

    #[test]
    fn self_hosted_cost_is_gpu_time_and_reused_tokens_are_free() {
        let p = Prices::embedded().unwrap();
        let t = p.tier("self_hosted").unwrap();
        let TierPrice::SelfHosted {
            gpu_per_hour,
            tokens_per_second,
            ..
        } = t
        else {
            panic!("self_hosted is not self-hosted")
        };
        let one_hour = (tokens_per_second * 3600.0) as u64;
        let c = t.cost(&usage(one_hour - 1000, 0, 1000));
        assert!((c - gpu_per_hour).abs() < 1e-9, "{c}");
        let with_reuse = t.cost(&usage(one_hour - 1000, 50_000_000, 1000));
        assert_eq!(c, with_reuse);
    }

    #[test]
    fn an_unknown_tier_lists_the_known_ones() {
        let p = Prices::embedded().unwrap();
        let e = p.tier("gpt9").unwrap_err().to_string();
        assert!(
            e.contains("`gpt9`") && e.contains("flagship_api, local_frontier"),
            "{e}"
        );
    }

    fn parse_err(text: &str) -> String {
        Prices::parse(text, "my-prices.toml")
            .unwrap_err()
            .to_string()
    }

    const GOOD_TIER: &str = "[tiers.a]\nkind = \"api\"\ninput_per_m = 2\ncached_input_per_m = 1\noutput_per_m = 4\nnote = \"n\"\nsource = \"https://example.org\"\n";

    #[test]
    fn a_minimal_file_parses_and_integers_are_numbers() {
        let p = Prices::parse(&format!("as_of = 2026-01-31\n{GOOD_TIER}"), "x").unwrap();
        assert_eq!(p.as_of, "2026-01-31");
        assert_eq!(p.note, "");
        assert!((p.cost("a", &usage(1_000_000, 0, 0)).unwrap() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn bad_files_name_the_file_the_tier_and_the_field() {
        let cases: Vec<(String, &[&str])> = vec![
            (
                GOOD_TIER.to_string(),
                &["my-prices.toml", "field `as_of`", "missing"],
            ),
            (
                format!("as_of = \"2026-13-01\"\n{GOOD_TIER}"),
                &["field `as_of`", "not a date"],
            ),
            (
                format!("as_of = \"2026-12-01\"\ncurrency = \"EUR\"\n{GOOD_TIER}"),
                &["field `currency`", "unknown field"],
            ),
            (
                format!("as_of = \"2026-12-01\"\n{}", GOOD_TIER.replace("= 4", "= -4")),
                &["tier `a`", "field `output_per_m`", "greater than zero"],
            ),
            (
                format!("as_of = \"2026-12-01\"\n{}", GOOD_TIER.replace("= 2\n", "= 0\n")),
                &["tier `a`", "field `input_per_m`", "greater than zero"],
            ),
            (
                format!(
                    "as_of = \"2026-12-01\"\n{}",
                    GOOD_TIER.replace("output_per_m = 4\n", "")
                ),
                &["tier `a`", "field `output_per_m`", "missing"],
            ),
            (
                format!(
                    "as_of = \"2026-12-01\"\n{}",
                    GOOD_TIER.replace("= 4", "= \"4\"")
                ),
                &["tier `a`", "field `output_per_m`", "expected a number"],
            ),
            (
                format!("as_of = \"2026-12-01\"\n{GOOD_TIER}gpu_per_hour = 1\n"),
                &["tier `a`", "field `gpu_per_hour`", "unknown field"],
            ),
            (
                format!(
                    "as_of = \"2026-12-01\"\n{}",
                    GOOD_TIER.replace("\"api\"", "\"cloud\"")
                ),
                &["tier `a`", "field `kind`", "`cloud`"],
            ),
            (
                "as_of = \"2026-12-01\"\n[tiers.g]\nkind = \"self_hosted\"\nhardware = \"h\"\ngpu_per_hour = 1\ntokens_per_second = 0\nnote = \"n\"\nsource = \"s\"\n".to_string(),
                &["tier `g`", "field `tokens_per_second`", "greater than zero"],
            ),
            (
                format!(
                    "as_of = \"2026-12-01\"\n{}",
                    GOOD_TIER.replace("cached_input_per_m = 1", "cached_input_per_m = 3")
                ),
                &["tier `a`", "field `cached_input_per_m`", "more than input_per_m"],
            ),
            (
                "as_of = \"2026-12-01\"\n".to_string(),
                &["field `tiers`", "missing"],
            ),
            (
                "as_of = \"2026-12-01\n".to_string(),
                &["my-prices.toml", "not valid TOML", "line 1"],
            ),
        ];
        for (text, wants) in cases {
            let e = parse_err(&text);
            for w in wants {
                assert!(e.contains(w), "expected `{w}` in: {e}\n--- file:\n{text}");
            }
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = Prices::load(Path::new("/nowhere/prices.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nowhere/prices.toml"), "{e}");
    }
}
