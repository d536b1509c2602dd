//! careflow-knowledge: what careflow knows about triage, written as data with its sources.
//!
//! Layout:
//!
//! - `data/rules/*.toml` (workspace root): red-flag rules, one file per complaint area
//!   (`back_pain.toml`, `chest_pain.toml`, …, `admin.toml`), plus `findings.toml`, the lay
//!   phrases each finding is recognised by and the record facts derived from medications and
//!   conditions. Every rule keeps the link to the public page it paraphrases beside it.
//!   [`RuleSet`] loads them ([`RuleSet::embedded`] compiles them in) and
//!   [`RuleSet::evaluate`] turns a message plus [`careflow_core::RecordFacts`] into a
//!   [`RuleOutcome`]: the floor the decision may not go below, the rules that fired and why,
//!   whether it is a non-clinical (admin) request, and the findings recognised.
//! - `data/guidelines/*.md`: the guideline corpus, one topic per file, passages headed
//!   `## <id>: <title>` each with its `Source:` line. [`Guidelines`] parses them, retrieves
//!   passages with BM25 ([`Guidelines::search`]) and writes the compact digest that goes in the
//!   model's shared prefix ([`Guidelines::digest`]).
//!
//! - `data/eval/*.jsonl`: evaluation suites, one portal message with its gold disposition per
//!   line; [`eval::load_suite`] reads and checks them (`data/eval/README.md` has the schema).
//!
//! Modules: [`rules`] (loading, validation, evaluation, the rules' own examples),
//! [`guidelines`] (corpus, BM25, digest), [`eval`] (evaluation suites), `text` (clauses,
//! contractions, negation, temperatures, stated ages).
//!
//! Examples: `cargo run --release -p careflow-knowledge --example probe < messages.txt` prints
//! the floor, fired rules and findings for one message per line (for rule authors);
//! `--example digest` prints the guideline digest.
//!
//! Every text here supports clinicians and is not a diagnosis.

pub mod eval;
pub mod guidelines;
pub mod rules;
mod text;

pub use eval::{load_suite, parse_suite, EvalItem};
pub use guidelines::{Guidelines, Passage, Topic};
pub use rules::{Conditions, ExampleMismatch, FiredRule, Rule, RuleOutcome, RuleSet};

/// Everything that can go wrong loading careflow's knowledge; each variant names the file and,
/// where there is one, the rule, finding, fact or passage at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KnowledgeError {
    #[error("{file}: cannot read: {reason}")]
    Io { file: String, reason: String },
    #[error("{file}: {reason}")]
    Parse { file: String, reason: String },
    #[error("{file}: rule `{id}`: {reason}")]
    Rule {
        file: String,
        id: String,
        reason: String,
    },
    #[error("{file}: finding `{id}`: {reason}")]
    Finding {
        file: String,
        id: String,
        reason: String,
    },
    #[error("{file}: fact `{id}`: {reason}")]
    Fact {
        file: String,
        id: String,
        reason: String,
    },
    #[error("{file}: passage `{id}`: {reason}")]
    Passage {
        file: String,
        id: String,
        reason: String,
    },
    #[error("{file}: {reason}")]
    Guideline { file: String, reason: String },
    #[error("{place}: {reason}")]
    Empty { place: String, reason: String },
    /// A line of an evaluation suite (JSONL) that cannot be used; `line` counts from 1 and
    /// `field` names the key at fault when there is one (`reason` repeats it for people).
    #[error("{file}: line {line}: {reason}")]
    Suite {
        file: String,
        line: usize,
        field: Option<String>,
        reason: String,
    },
}

/// Temperatures stated in a message, in °C ("38.5", "101.5F", "39C", "102 F").
///
/// A number counts when it carries a unit or when its clause speaks of temperature or fever;
/// negated readings ("not above 38") and other quantities ("38 weeks", "100 mg") are left out.
pub fn temperatures_c(message: &str) -> Vec<f32> {
    text::clauses(message)
        .iter()
        .flat_map(|c| text::temperatures_in_clause(c))
        .collect()
}

/// Ages stated in a message, in whole months ("my 2 month old" → 2, "I'm 67" → 804).
pub fn stated_ages_months(message: &str) -> Vec<u32> {
    text::clauses(message)
        .iter()
        .flat_map(|c| text::ages_in_clause(c))
        .collect()
}
