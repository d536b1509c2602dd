//! Red-flag rules as data (`data/rules/*.toml`) and their evaluation against a message and the
//! facts from the patient's record.
//!
//! A rules file may hold three kinds of tables:
//!
//! ```toml
//! [[finding]]                 # a thing a patient may say, in lay phrases
//! id = "bladder_change"
//! label = "bladder control change"
//! phrases = ["can't pee", "wet myself", "can't control my bladder"]
//! exclude = []                # phrases that cancel an overlapping match ("hay fever")
//! implies = []                # findings that follow from this one
//! min_temp_c = 38.0           # optional: also positive when a stated temperature is at least this
//! qualifier = false           # true for modifiers ("sudden", "at rest", "won't stop"): listed in
//!                             # RuleOutcome::findings only when a fired rule used them
//!
//! [[fact]]                    # a record fact derived from medications / conditions
//! id = "on_steroids"
//! label = "takes corticosteroids"
//! medications = ["prednisone", "prednisolone"]
//! conditions = []
//!
//! [[rule]]
//! id = "back.cauda_equina"
//! title = "Back pain with bladder, bowel or saddle symptoms (possible cauda equina)"
//! level = "emergency_now"
//! source = "https://g-care.glos.nhs.uk/pathway/71/resource/3"
//! all = ["back_pain"]         # each entry must be a positive finding; "a|b" means either
//! any = ["bladder_change", "saddle_numbness"]   # at least one, when given
//! none = []                   # none of these may be positive
//! facts_any = []              # at least one record fact, when given
//! facts_all = []              # every record fact
//! fires = ["back pain and I can't pee"]          # messages that must fire this rule
//! quiet = ["back pain, peeing normally"]         # near misses that must not fire it
//! example_facts = { immunosuppressed = true }    # record facts for both lists (optional)
//! ```
//!
//! `fires` and `quiet` are the rule's own tests, kept beside it as data:
//! [`RuleSet::check_examples`] evaluates each with `example_facts` (the fields of
//! [`careflow_core::RecordFacts`]: `age_years`, `age_months`, `sex`, `pregnant`,
//! `immunosuppressed`, `anticoagulated`, `cancer_history`, `recent_surgery`, `diabetes`,
//! `heart_disease`, `conditions`, `medications`) and reports every example that does not
//! behave as written. The embedded rules all carry both lists and the tests hold them to it.
//!
//! Phrase syntax: words match whole tokens, case-insensitively (a word also matches its plural
//! in `s`/`es`); `word*` matches any word that begins so; `...` skips up to three words.
//!
//! Record facts (`facts_any`, `facts_all`): `pregnant`, `immunosuppressed`, `anticoagulated`,
//! `cancer_history`, `recent_surgery`, `diabetes`, `heart_disease`, `female`,
//! `female_reproductive_age`, `age_over_N`, `age_under_N` (years), `age_under_N_months`,
//! `age_N_to_M_months` (N ≤ months < M), any `[[fact]]` id, or any finding id. A fact is true
//! when the record says so, when the record's medications or conditions name one of its terms,
//! or when the message states it as a positive finding of the same id ("I'm pregnant").
//! Ages come from the record and from ages stated in the message ("my 2 month old"): an age
//! predicate holds when any known age satisfies it, so a parent's record never hides a baby's age.

use crate::text::{self, Clause, PatTok, Span};
use crate::KnowledgeError;
use careflow_core::{Disposition, RecordFacts};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// The rule files compiled into the binary, in evaluation order.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "findings.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/rules/findings.toml"
        )),
    ),
    (
        "general.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/rules/general.toml"
        )),
    ),
    (
        "back_pain.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/rules/back_pain.toml"
        )),
    ),
    (
        "chest_pain.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/rules/chest_pain.toml"
        )),
    ),
    (
        "headache.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/rules/headache.toml"
        )),
    ),
    (
        "stroke.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/rules/stroke.toml"
        )),
    ),
    (
        "breathing.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/rules/breathing.toml"
        )),
    ),
    (
        "abdominal_pain.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/rules/abdominal_pain.toml"
        )),
    ),
    (
        "fever_children.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/rules/fever_children.toml"
        )),
    ),
    (
        "mental_health.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/rules/mental_health.toml"
        )),
    ),
    (
        "allergy.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/rules/allergy.toml"
        )),
    ),
    (
        "pregnancy_bleeding.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/rules/pregnancy_bleeding.toml"
        )),
    ),
    (
        "urinary.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/rules/urinary.toml"
        )),
    ),
    (
        "sore_throat.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/rules/sore_throat.toml"
        )),
    ),
    (
        "rash.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/rules/rash.toml"
        )),
    ),
    (
        "admin.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/rules/admin.toml"
        )),
    ),
];

/// The conditions of a rule, as written in its file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Conditions {
    /// Every entry must be a positive finding; `a|b` is satisfied by either.
    pub all: Vec<String>,
    /// At least one must be positive (ignored when empty).
    pub any: Vec<String>,
    /// None of these may be positive.
    pub none: Vec<String>,
    /// At least one record fact must hold (ignored when empty).
    pub facts_any: Vec<String>,
    /// Every record fact must hold.
    pub facts_all: Vec<String>,
}

/// One red-flag rule: when its conditions hold, the decision may not go below `level`
/// (`admin` rules instead mark the message as a non-clinical request).
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub level: Disposition,
    /// The public page the rule's facts come from.
    pub source: String,
    /// The file the rule was read from.
    pub file: String,
    pub when: Conditions,
    /// Messages that must fire this rule (evaluated with `example_facts`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fires: Vec<String>,
    /// Near-miss messages that must not fire it (evaluated with `example_facts`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quiet: Vec<String>,
    /// The record facts the examples are evaluated with (default: nothing known).
    #[serde(skip_serializing_if = "is_default_facts")]
    pub example_facts: RecordFacts,
    #[serde(skip)]
    compiled: CompiledConditions,
}

fn is_default_facts(f: &RecordFacts) -> bool {
    *f == RecordFacts::default()
}

/// A rule example (`fires` / `quiet`) that does not behave as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExampleMismatch {
    /// The rule the example belongs to.
    pub rule: String,
    /// The file the rule was read from.
    pub file: String,
    /// The example message.
    pub message: String,
    /// `true` for a `fires` example that did not fire the rule, `false` for a `quiet`
    /// example that did.
    pub should_fire: bool,
    /// Every rule the message fired.
    pub fired: Vec<String>,
    /// The positive findings recognised in the message.
    pub findings: Vec<String>,
}

impl std::fmt::Display for ExampleMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (list, what) = if self.should_fire {
            ("fires", "did not fire")
        } else {
            ("quiet", "fired")
        };
        write!(
            f,
            "{}: rule `{}`: {list} example \"{}\" {what} (fired {:?}; findings {:?})",
            self.file, self.rule, self.message, self.fired, self.findings
        )
    }
}

#[derive(Debug, Clone, Default)]
struct CompiledConditions {
    all: Vec<Vec<usize>>,
    any: Vec<usize>,
    none: Vec<usize>,
    facts_any: Vec<FactPred>,
    facts_all: Vec<FactPred>,
}

/// A rule that fired, with the evidence that made it fire.
#[derive(Debug, Clone, Serialize)]
pub struct FiredRule {
    pub id: String,
    pub title: String,
    pub level: Disposition,
    pub source: String,
    /// Readable evidence: `back pain: "lower back pain"`, `immunosuppressed (record)` …
    pub because: Vec<String>,
}

/// What the rules made of a message.
#[derive(Debug, Clone, Serialize)]
pub struct RuleOutcome {
    /// The highest level among fired clinical rules; `None` when none fired.
    /// Admin rules never raise a clinical floor.
    pub floor: Option<Disposition>,
    /// Fired rules, most urgent first (admin rules last).
    pub fired: Vec<FiredRule>,
    /// An admin rule fired (refill, scheduling, paperwork) and no clinical rule did.
    pub admin_request: bool,
    /// Labels of the positive (non-negated) findings in the message, in order of appearance.
    pub findings: Vec<String>,
}

#[derive(Debug, Clone)]
struct Finding {
    id: String,
    label: String,
    phrases: Vec<Vec<PatTok>>,
    exclude: Vec<Vec<PatTok>>,
    implies: Vec<usize>,
    min_temp_c: Option<f32>,
    qualifier: bool,
}

#[derive(Debug, Clone)]
struct DerivedFact {
    id: String,
    label: String,
    medication_terms: Vec<String>,
    condition_terms: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flag {
    Pregnant,
    Immunosuppressed,
    Anticoagulated,
    CancerHistory,
    RecentSurgery,
    Diabetes,
    HeartDisease,
}

#[derive(Debug, Clone, PartialEq)]
enum FactKind {
    Flag(Flag),
    Female,
    FemaleReproductiveAge,
    AgeOverYears(u32),
    AgeUnderYears(u32),
    AgeUnderMonths(u32),
    AgeMonthsRange(u32, u32),
    /// Only derived facts and/or a finding of the same name.
    Named,
}

#[derive(Debug, Clone)]
struct FactPred {
    name: String,
    kind: FactKind,
    derived: Option<usize>,
    finding: Option<usize>,
}

/// The red-flag rules and the finding vocabulary they are written in.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    findings: Vec<Finding>,
    facts: Vec<DerivedFact>,
}

/// One file's tables before cross-file references are resolved.
struct RawFile {
    name: String,
    /// 1-based line of each `[[rule]]` / `[[finding]]` header, for error messages.
    rule_lines: Vec<usize>,
    finding_lines: Vec<usize>,
    findings: Vec<toml::Table>,
    facts: Vec<toml::Table>,
    rules: Vec<toml::Table>,
}

impl RawFile {
    /// `name line N` for the `i`-th entry whose header lines are `lines` (just the name if unknown).
    fn place(&self, lines: &[usize], i: usize) -> String {
        match lines.get(i) {
            Some(line) => format!("{} line {line}", self.name),
            None => self.name.clone(),
        }
    }
}

impl RuleSet {
    /// The rules compiled into the binary from `data/rules/*.toml`.
    pub fn embedded() -> Result<RuleSet, KnowledgeError> {
        let files = EMBEDDED
            .iter()
            .map(|(name, text)| parse_file(name, text))
            .collect::<Result<Vec<_>, _>>()?;
        build(files)
    }

    /// Every `*.toml` file of a directory (read in name order), as one rule set. Findings and
    /// facts may be defined in any of the files and used by rules in the others.
    pub fn from_dir(dir: &Path) -> Result<RuleSet, KnowledgeError> {
        let mut paths = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| KnowledgeError::Io {
            file: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| KnowledgeError::Io {
                file: dir.display().to_string(),
                reason: e.to_string(),
            })?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) == Some("toml") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        if paths.is_empty() {
            return Err(KnowledgeError::Empty {
                place: dir.display().to_string(),
                reason: "no *.toml rule files".into(),
            });
        }
        let mut files = Vec::new();
        for path in paths {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| KnowledgeError::Io {
                file: name.clone(),
                reason: e.to_string(),
            })?;
            files.push(parse_file(&name, &text)?);
        }
        build(files)
    }

    /// One self-contained rules file: the findings its rules use must be defined in it.
    pub fn from_toml_str(name: &str, text: &str) -> Result<RuleSet, KnowledgeError> {
        build(vec![parse_file(name, text)?])
    }

    /// The rules, in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// `(id, label)` of every finding the rules can recognise.
    pub fn finding_vocabulary(&self) -> Vec<(&str, &str)> {
        self.findings
            .iter()
            .map(|f| (f.id.as_str(), f.label.as_str()))
            .collect()
    }

    /// Labels of the findings the message mentions only negated ("no fever", "I don't have
    /// chest pain") and nowhere positively: useful context for the clinical step.
    pub fn negated_findings(&self, message: &str) -> Vec<String> {
        let scan = self.scan(message);
        scan.negated
            .iter()
            .filter(|i| !scan.positive.contains_key(i))
            .map(|&i| self.findings[i].label.clone())
            .collect()
    }

    /// Evaluates every rule's `fires` and `quiet` examples (with its `example_facts`) and
    /// returns those that do not behave as written; empty when all do.
    pub fn check_examples(&self) -> Vec<ExampleMismatch> {
        let mut out = Vec::new();
        for rule in &self.rules {
            let cases = rule
                .fires
                .iter()
                .map(|m| (m, true))
                .chain(rule.quiet.iter().map(|m| (m, false)));
            for (message, should_fire) in cases {
                let o = self.evaluate(message, &rule.example_facts);
                let fired: Vec<String> = o.fired.iter().map(|f| f.id.clone()).collect();
                if fired.contains(&rule.id) != should_fire {
                    out.push(ExampleMismatch {
                        rule: rule.id.clone(),
                        file: rule.file.clone(),
                        message: message.clone(),
                        should_fire,
                        fired,
                        findings: o.findings,
                    });
                }
            }
        }
        out
    }

    /// Applies every rule to a message and the record's facts.
    pub fn evaluate(&self, message: &str, facts: &RecordFacts) -> RuleOutcome {
        let scan = self.scan(message);
        let mut ctx = FactContext::new(facts, &scan.ages);
        let mut fired = Vec::new();
        let mut used: HashSet<usize> = HashSet::new();
        for rule in &self.rules {
            if let Some(because) = self.check(rule, &scan, &mut ctx, &mut used) {
                fired.push(FiredRule {
                    id: rule.id.clone(),
                    title: rule.title.clone(),
                    level: rule.level,
                    source: rule.source.clone(),
                    because,
                });
            }
        }
        fired.sort_by_key(|f| std::cmp::Reverse(f.level.acuity().map_or(0, |a| a + 1)));
        let floor = fired
            .iter()
            .filter(|f| f.level != Disposition::Admin)
            .map(|f| f.level)
            .reduce(Disposition::max_acuity);
        let admin_request = floor.is_none() && fired.iter().any(|f| f.level == Disposition::Admin);
        let mut order: Vec<(usize, usize)> = scan
            .positive
            .iter()
            .filter(|(f, _)| !self.findings[**f].qualifier || used.contains(*f))
            .map(|(&f, e)| (e.order, f))
            .collect();
        order.sort_unstable();
        let findings = order
            .into_iter()
            .map(|(_, f)| self.findings[f].label.clone())
            .collect();
        RuleOutcome {
            floor,
            fired,
            admin_request,
            findings,
        }
    }

    fn check(
        &self,
        rule: &Rule,
        scan: &Scan,
        ctx: &mut FactContext,
        used: &mut HashSet<usize>,
    ) -> Option<Vec<String>> {
        let c = &rule.compiled;
        let mut because = Vec::new();
        let mut hits_all = Vec::new();
        for group in &c.all {
            let hit = group.iter().find(|f| scan.positive.contains_key(f))?;
            hits_all.push(*hit);
            because.push(self.evidence(*hit, scan));
        }
        let mut hits_any = Vec::new();
        if !c.any.is_empty() {
            let hits: Vec<usize> = c
                .any
                .iter()
                .copied()
                .filter(|f| scan.positive.contains_key(f))
                .collect();
            if hits.is_empty() {
                return None;
            }
            because.extend(hits.iter().map(|&f| self.evidence(f, scan)));
            hits_any = hits;
        }
        if c.none.iter().any(|f| scan.positive.contains_key(f)) {
            return None;
        }
        for pred in &c.facts_all {
            because.push(ctx.holds(pred, self, scan)?);
        }
        if !c.facts_any.is_empty() {
            let reasons: Vec<String> = c
                .facts_any
                .iter()
                .filter_map(|p| ctx.holds(p, self, scan))
                .collect();
            if reasons.is_empty() {
                return None;
            }
            because.extend(reasons);
        }
        used.extend(hits_all);
        used.extend(hits_any);
        Some(because)
    }

    fn evidence(&self, finding: usize, scan: &Scan) -> String {
        let label = &self.findings[finding].label;
        match scan.positive.get(&finding).map(|e| e.text.as_str()) {
            Some(t) if !t.is_empty() => format!("{label}: \"{t}\""),
            _ => label.clone(),
        }
    }

    /// Finds every finding in the message, positive or negated.
    fn scan(&self, message: &str) -> Scan {
        let clauses: Vec<Clause> = text::clauses(message);
        let mut positive: HashMap<usize, Evidence> = HashMap::new();
        let mut negated: Vec<usize> = Vec::new();
        let mut temps: Vec<(f32, usize, String)> = Vec::new();
        let mut ages = Vec::new();
        for (ci, clause) in clauses.iter().enumerate() {
            for t in text::temperatures_in_clause(clause) {
                temps.push((t, ci, clause.join(" ")));
            }
            ages.extend(text::ages_in_clause(clause));
            for (fi, finding) in self.findings.iter().enumerate() {
                let excluded: Vec<Span> = finding
                    .exclude
                    .iter()
                    .flat_map(|p| text::find_all(p, clause))
                    .collect();
                for phrase in &finding.phrases {
                    for span in text::find_all(phrase, clause) {
                        // An exclude cancels a match it overlaps, unless the match is
                        // longer and holds it whole (then the match is the more specific).
                        if excluded.iter().any(|x| {
                            span.overlaps(x)
                                && (!span.contains(x) || (span.start, span.end) == (x.start, x.end))
                        }) {
                            continue;
                        }
                        if text::is_negated(clause, &span) {
                            if !negated.contains(&fi) {
                                negated.push(fi);
                            }
                            continue;
                        }
                        let pos = ci * 10_000 + span.start;
                        let text = clause[span.start..span.end].join(" ");
                        match positive.get_mut(&fi) {
                            Some(e) if e.order <= pos => {}
                            Some(e) => {
                                e.order = pos;
                                e.text = text;
                            }
                            None => {
                                positive.insert(fi, Evidence { order: pos, text });
                            }
                        }
                    }
                }
            }
        }
        for (fi, finding) in self.findings.iter().enumerate() {
            let Some(min) = finding.min_temp_c else {
                continue;
            };
            if let Some((t, ci, _)) = temps.iter().find(|(t, _, _)| *t + 1e-4 >= min) {
                let pos = ci * 10_000 + 9_999;
                positive.entry(fi).or_insert_with(|| Evidence {
                    order: pos,
                    text: format!("temperature {t:.1} °C"),
                });
            }
        }
        // implications, to a fixed point
        loop {
            let mut added = false;
            let current: Vec<(usize, usize)> =
                positive.iter().map(|(&f, e)| (f, e.order)).collect();
            for (f, pos) in current {
                for &g in &self.findings[f].implies {
                    if let std::collections::hash_map::Entry::Vacant(slot) = positive.entry(g) {
                        let text = format!("implied by {}", self.findings[f].label);
                        slot.insert(Evidence { order: pos, text });
                        added = true;
                    }
                }
            }
            if !added {
                break;
            }
        }
        Scan {
            positive,
            negated,
            ages,
        }
    }
}

struct Evidence {
    order: usize,
    text: String,
}

struct Scan {
    positive: HashMap<usize, Evidence>,
    negated: Vec<usize>,
    /// Ages stated in the message, in months.
    ages: Vec<u32>,
}

struct FactContext<'a> {
    facts: &'a RecordFacts,
    stated_months: &'a [u32],
    record_months: Option<u32>,
    meds: Vec<String>,
    conds: Vec<String>,
}

impl<'a> FactContext<'a> {
    fn new(facts: &'a RecordFacts, stated_months: &'a [u32]) -> Self {
        let record_months = facts
            .age_months
            .or_else(|| facts.age_years.map(|y| y.saturating_mul(12)));
        FactContext {
            facts,
            stated_months,
            record_months,
            meds: facts.medications.iter().map(|m| m.to_lowercase()).collect(),
            conds: facts.conditions.iter().map(|c| c.to_lowercase()).collect(),
        }
    }

    /// Every known age in months, with where it came from.
    fn ages(&self) -> Vec<(u32, &'static str)> {
        let mut v: Vec<(u32, &'static str)> = self
            .record_months
            .map(|m| (m, "record"))
            .into_iter()
            .collect();
        v.extend(self.stated_months.iter().map(|&m| (m, "message")));
        v
    }

    /// `Some(reason)` when the predicate holds.
    fn holds(&mut self, pred: &FactPred, set: &RuleSet, scan: &Scan) -> Option<String> {
        let name = pred.name.replace('_', " ");
        let describe_age = |m: u32| {
            if m < 24 {
                format!("{m} months")
            } else {
                format!("{} years", m / 12)
            }
        };
        let from_kind = match &pred.kind {
            FactKind::Flag(flag) => {
                let f = self.facts;
                let on = match flag {
                    Flag::Pregnant => f.pregnant,
                    Flag::Immunosuppressed => f.immunosuppressed,
                    Flag::Anticoagulated => f.anticoagulated,
                    Flag::CancerHistory => f.cancer_history,
                    Flag::RecentSurgery => f.recent_surgery,
                    Flag::Diabetes => f.diabetes,
                    Flag::HeartDisease => f.heart_disease,
                };
                on.then(|| format!("{name} (record)"))
            }
            FactKind::Female => self.is_female().then(|| "female (record)".to_string()),
            FactKind::FemaleReproductiveAge => {
                let sex_ok = self.facts.sex.is_none() || self.is_female();
                let ages = self.ages();
                let age_ok = ages.is_empty() || ages.iter().any(|(m, _)| (144..=660).contains(m));
                (sex_ok && age_ok).then(|| {
                    "possibly of reproductive age (female or sex unknown, age 12-55 or unknown)"
                        .to_string()
                })
            }
            FactKind::AgeOverYears(n) => self
                .ages()
                .into_iter()
                .find(|(m, _)| m / 12 > *n)
                .map(|(m, src)| format!("age over {n} ({src}: {})", describe_age(m))),
            FactKind::AgeUnderYears(n) => self
                .ages()
                .into_iter()
                .find(|(m, _)| m / 12 < *n)
                .map(|(m, src)| format!("age under {n} ({src}: {})", describe_age(m))),
            FactKind::AgeUnderMonths(n) => self
                .ages()
                .into_iter()
                .find(|(m, _)| m < n)
                .map(|(m, src)| format!("age under {n} months ({src}: {})", describe_age(m))),
            FactKind::AgeMonthsRange(lo, hi) => self
                .ages()
                .into_iter()
                .find(|(m, _)| lo <= m && m < hi)
                .map(|(m, src)| format!("age {lo} to {hi} months ({src}: {})", describe_age(m))),
            FactKind::Named => None,
        };
        if from_kind.is_some() {
            return from_kind;
        }
        if let Some(d) = pred.derived {
            let fact = &set.facts[d];
            let in_meds = fact
                .medication_terms
                .iter()
                .find(|t| self.meds.iter().any(|m| m.contains(t.as_str())));
            if let Some(t) = in_meds {
                return Some(format!("{} (record medication: {t})", fact.label));
            }
            let in_conds = fact
                .condition_terms
                .iter()
                .find(|t| self.conds.iter().any(|c| c.contains(t.as_str())));
            if let Some(t) = in_conds {
                return Some(format!("{} (record condition: {t})", fact.label));
            }
        }
        if let Some(f) = pred.finding {
            if let Some(e) = scan.positive.get(&f) {
                return Some(format!(
                    "{} (message: \"{}\")",
                    set.findings[f].label, e.text
                ));
            }
        }
        None
    }

    fn is_female(&self) -> bool {
        self.facts
            .sex
            .as_deref()
            .is_some_and(|s| matches!(s.trim().to_lowercase().as_str(), "female" | "f" | "woman"))
    }
}

// ---------------------------------------------------------------------------------------------
// Loading and validation

fn parse_file(name: &str, text: &str) -> Result<RawFile, KnowledgeError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| KnowledgeError::Parse {
            file: name.to_string(),
            reason: e.to_string().trim().to_string(),
        })?;
    let header_lines = |header: &str| -> Vec<usize> {
        text.lines()
            .enumerate()
            .filter(|(_, l)| l.trim() == header)
            .map(|(i, _)| i + 1)
            .collect()
    };
    let mut raw = RawFile {
        name: name.to_string(),
        rule_lines: header_lines("[[rule]]"),
        finding_lines: header_lines("[[finding]]"),
        findings: Vec::new(),
        facts: Vec::new(),
        rules: Vec::new(),
    };
    for (key, value) in table {
        let target = match key.as_str() {
            "finding" => &mut raw.findings,
            "fact" => &mut raw.facts,
            "rule" => &mut raw.rules,
            other => {
                return Err(KnowledgeError::Parse {
                    file: name.to_string(),
                    reason: format!(
                        "unknown top-level key `{other}` (expected [[finding]], [[fact]] or [[rule]] tables)"
                    ),
                })
            }
        };
        let toml::Value::Array(items) = value else {
            return Err(KnowledgeError::Parse {
                file: name.to_string(),
                reason: format!("`{key}` must be an array of tables ([[{key}]])"),
            });
        };
        for (i, item) in items.into_iter().enumerate() {
            match item {
                toml::Value::Table(t) => target.push(t),
                _ => {
                    return Err(KnowledgeError::Parse {
                        file: name.to_string(),
                        reason: format!("`{key}` entry #{} is not a table", i + 1),
                    })
                }
            }
        }
    }
    Ok(raw)
}

/// Reads fields out of one table, naming the field at fault.
struct Fields<'a> {
    table: &'a toml::Table,
    used: HashSet<&'static str>,
    /// Written before every field name in messages (`example_facts.`), empty at top level.
    prefix: &'static str,
}

impl<'a> Fields<'a> {
    fn new(table: &'a toml::Table) -> Self {
        Fields {
            table,
            used: HashSet::new(),
            prefix: "",
        }
    }

    fn nested(table: &'a toml::Table, prefix: &'static str) -> Self {
        Fields {
            table,
            used: HashSet::new(),
            prefix,
        }
    }

    fn table(&mut self, key: &'static str) -> Result<Option<&'a toml::Table>, String> {
        self.used.insert(key);
        let p = self.prefix;
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Table(t)) => Ok(Some(t)),
            Some(other) => Err(format!(
                "field `{p}{key}` must be a table ({{ name = value, … }}), found {}",
                other.type_str()
            )),
        }
    }

    fn integer(&mut self, key: &'static str) -> Result<Option<u32>, String> {
        self.used.insert(key);
        let p = self.prefix;
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) => u32::try_from(*i)
                .map(Some)
                .map_err(|_| format!("field `{p}{key}`: {i} is not a whole number from 0")),
            Some(other) => Err(format!(
                "field `{p}{key}` must be a whole number, found {}",
                other.type_str()
            )),
        }
    }

    fn string(&mut self, key: &'static str, required: bool) -> Result<Option<String>, String> {
        self.used.insert(key);
        let p = self.prefix;
        match self.table.get(key) {
            None if required => Err(format!("field `{p}{key}` is missing")),
            None => Ok(None),
            Some(toml::Value::String(s)) if s.trim().is_empty() => {
                Err(format!("field `{p}{key}` is empty"))
            }
            Some(toml::Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(other) => Err(format!(
                "field `{p}{key}` must be a string, found {}",
                other.type_str()
            )),
        }
    }

    fn strings(&mut self, key: &'static str) -> Result<Vec<String>, String> {
        self.used.insert(key);
        let p = self.prefix;
        match self.table.get(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    toml::Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                    toml::Value::String(_) => {
                        Err(format!("field `{p}{key}` entry #{} is empty", i + 1))
                    }
                    other => Err(format!(
                        "field `{p}{key}` entry #{} must be a string, found {}",
                        i + 1,
                        other.type_str()
                    )),
                })
                .collect(),
            Some(other) => Err(format!(
                "field `{p}{key}` must be an array of strings, found {}",
                other.type_str()
            )),
        }
    }

    fn float(&mut self, key: &'static str) -> Result<Option<f32>, String> {
        self.used.insert(key);
        let p = self.prefix;
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Float(f)) => Ok(Some(*f as f32)),
            Some(toml::Value::Integer(i)) => Ok(Some(*i as f32)),
            Some(other) => Err(format!(
                "field `{p}{key}` must be a number, found {}",
                other.type_str()
            )),
        }
    }

    fn boolean(&mut self, key: &'static str) -> Result<Option<bool>, String> {
        self.used.insert(key);
        let p = self.prefix;
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(format!(
                "field `{p}{key}` must be true or false, found {}",
                other.type_str()
            )),
        }
    }

    fn finish(self) -> Result<(), String> {
        let mut unknown: Vec<&String> = self
            .table
            .keys()
            .filter(|k| !self.used.contains(k.as_str()))
            .collect();
        unknown.sort();
        match unknown.first() {
            Some(k) => {
                let mut known: Vec<&str> = self.used.iter().copied().collect();
                known.sort_unstable();
                Err(format!(
                    "unknown field `{}{k}` (expected one of: {})",
                    self.prefix,
                    known.join(", ")
                ))
            }
            None => Ok(()),
        }
    }
}

fn table_id(table: &toml::Table, index: usize) -> String {
    match table.get("id") {
        Some(toml::Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => format!("#{}", index + 1),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

struct PendingFinding {
    file: String,
    finding: Finding,
    implies: Vec<String>,
}

struct PendingRule {
    rule: Rule,
}

fn build(files: Vec<RawFile>) -> Result<RuleSet, KnowledgeError> {
    // findings
    let mut pending: Vec<PendingFinding> = Vec::new();
    let mut finding_index: HashMap<String, usize> = HashMap::new();
    for file in &files {
        for (i, table) in file.findings.iter().enumerate() {
            let id = table_id(table, i);
            let err = |reason: String| KnowledgeError::Finding {
                file: file.place(&file.finding_lines, i),
                id: id.clone(),
                reason,
            };
            let mut f = Fields::new(table);
            f.string("id", true).map_err(err)?;
            if !valid_id(&id) || id.contains('|') {
                return Err(err(format!(
                    "field `id`: `{id}` must use only a-z, 0-9, `_`, `.` and `-`"
                )));
            }
            let label = f.string("label", true).map_err(err)?.unwrap_or_default();
            let phrases_raw = f.strings("phrases").map_err(err)?;
            let exclude_raw = f.strings("exclude").map_err(err)?;
            let implies = f.strings("implies").map_err(err)?;
            let min_temp_c = f.float("min_temp_c").map_err(err)?;
            let qualifier = f.boolean("qualifier").map_err(err)?.unwrap_or(false);
            f.finish().map_err(err)?;
            if phrases_raw.is_empty() && min_temp_c.is_none() {
                return Err(err("field `phrases` must list at least one phrase".into()));
            }
            if let Some(t) = min_temp_c {
                if !(35.0..=43.0).contains(&t) {
                    return Err(err(format!(
                        "field `min_temp_c`: {t} is not a body temperature in °C"
                    )));
                }
            }
            let compile = |field: &str,
                           list: &[String]|
             -> Result<Vec<Vec<PatTok>>, KnowledgeError> {
                list.iter()
                    .map(|p| {
                        text::compile_phrase(p).ok_or_else(|| {
                            err(format!(
                                "field `{field}`: phrase \"{p}\" is empty, starts or ends with `...`, or has a one-letter `*` prefix"
                            ))
                        })
                    })
                    .collect()
            };
            let phrases = compile("phrases", &phrases_raw)?;
            let exclude = compile("exclude", &exclude_raw)?;
            if finding_index.contains_key(&id) {
                return Err(err(
                    "duplicate finding id (defined in another table or file)".into(),
                ));
            }
            finding_index.insert(id.clone(), pending.len());
            pending.push(PendingFinding {
                file: file.name.clone(),
                finding: Finding {
                    id: id.clone(),
                    label,
                    phrases,
                    exclude,
                    implies: Vec::new(),
                    min_temp_c,
                    qualifier,
                },
                implies,
            });
        }
    }
    let mut findings = Vec::with_capacity(pending.len());
    for p in pending {
        let mut finding = p.finding;
        for target in &p.implies {
            let Some(&idx) = finding_index.get(target) else {
                return Err(KnowledgeError::Finding {
                    file: p.file.clone(),
                    id: finding.id.clone(),
                    reason: format!("field `implies`: unknown finding `{target}`"),
                });
            };
            finding.implies.push(idx);
        }
        findings.push(finding);
    }

    // derived facts
    let mut facts: Vec<DerivedFact> = Vec::new();
    for file in &files {
        for (i, table) in file.facts.iter().enumerate() {
            let id = table_id(table, i);
            let err = |reason: String| KnowledgeError::Fact {
                file: file.name.clone(),
                id: id.clone(),
                reason,
            };
            let mut f = Fields::new(table);
            f.string("id", true).map_err(err)?;
            if !valid_id(&id) {
                return Err(err(format!(
                    "field `id`: `{id}` must use only a-z, 0-9, `_`, `.` and `-`"
                )));
            }
            let label = f.string("label", true).map_err(err)?.unwrap_or_default();
            let meds = f.strings("medications").map_err(err)?;
            let conds = f.strings("conditions").map_err(err)?;
            f.finish().map_err(err)?;
            if meds.is_empty() && conds.is_empty() {
                return Err(err("needs `medications` or `conditions` terms".into()));
            }
            if facts.iter().any(|d| d.id == id) {
                return Err(err("duplicate fact id".into()));
            }
            facts.push(DerivedFact {
                id,
                label,
                medication_terms: meds.iter().map(|m| m.to_lowercase()).collect(),
                condition_terms: conds.iter().map(|c| c.to_lowercase()).collect(),
            });
        }
    }

    // rules
    let mut rules: Vec<PendingRule> = Vec::new();
    let mut rule_ids: HashSet<String> = HashSet::new();
    for file in &files {
        for (i, table) in file.rules.iter().enumerate() {
            let id = table_id(table, i);
            let err = |reason: String| KnowledgeError::Rule {
                file: file.place(&file.rule_lines, i),
                id: id.clone(),
                reason,
            };
            let mut f = Fields::new(table);
            f.string("id", true).map_err(err)?;
            if !valid_id(&id) {
                return Err(err(format!(
                    "field `id`: `{id}` must use only a-z, 0-9, `_`, `.` and `-`"
                )));
            }
            let title = f.string("title", true).map_err(err)?.unwrap_or_default();
            let level_raw = f.string("level", true).map_err(err)?.unwrap_or_default();
            let level: Disposition =
                level_raw
                    .parse()
                    .map_err(|e: careflow_core::ParseDispositionError| {
                        err(format!("field `level`: {e}"))
                    })?;
            let source = f.string("source", true).map_err(err)?.unwrap_or_default();
            if !(source.starts_with("https://") || source.starts_with("http://"))
                || source.contains(' ')
            {
                return Err(err(format!(
                    "field `source`: `{source}` is not an http(s) URL"
                )));
            }
            let when = Conditions {
                all: f.strings("all").map_err(err)?,
                any: f.strings("any").map_err(err)?,
                none: f.strings("none").map_err(err)?,
                facts_any: f.strings("facts_any").map_err(err)?,
                facts_all: f.strings("facts_all").map_err(err)?,
            };
            let fires = f.strings("fires").map_err(err)?;
            let quiet = f.strings("quiet").map_err(err)?;
            let example_facts = match f.table("example_facts").map_err(err)? {
                Some(t) => record_facts(t).map_err(err)?,
                None => RecordFacts::default(),
            };
            f.finish().map_err(err)?;
            if let Some(m) = fires.iter().find(|m| quiet.contains(m)) {
                return Err(err(format!(
                    "field `quiet`: \"{m}\" is also listed under `fires`"
                )));
            }
            if when.all.is_empty() && when.any.is_empty() && when.facts_all.is_empty() {
                return Err(err(
                    "needs at least one of `all`, `any`, `facts_all`: a rule on record facts alone \
                     (`facts_any`) or on nothing would fire for every message"
                        .into(),
                ));
            }
            if level == Disposition::Admin
                && (!when.facts_any.is_empty() || !when.facts_all.is_empty())
            {
                return Err(err("an admin rule may not depend on record facts".into()));
            }
            let lookup = |field: &str, name: &str| -> Result<usize, KnowledgeError> {
                finding_index
                    .get(name)
                    .copied()
                    .ok_or_else(|| err(format!("field `{field}`: unknown finding `{name}`")))
            };
            let mut compiled = CompiledConditions::default();
            for entry in &when.all {
                let group = entry
                    .split('|')
                    .map(|n| lookup("all", n.trim()))
                    .collect::<Result<Vec<_>, _>>()?;
                compiled.all.push(group);
            }
            for n in &when.any {
                compiled.any.push(lookup("any", n)?);
            }
            for n in &when.none {
                compiled.none.push(lookup("none", n)?);
            }
            for n in &when.facts_any {
                compiled.facts_any.push(
                    fact_pred(n, &facts, &finding_index)
                        .map_err(|r| err(format!("field `facts_any`: {r}")))?,
                );
            }
            for n in &when.facts_all {
                compiled.facts_all.push(
                    fact_pred(n, &facts, &finding_index)
                        .map_err(|r| err(format!("field `facts_all`: {r}")))?,
                );
            }
            if !rule_ids.insert(id.clone()) {
                return Err(err(
                    "duplicate rule id (defined in another table or file)".into()
                ));
            }
            rules.push(PendingRule {
                rule: Rule {
                    id: id.clone(),
                    title,
                    level,
                    source,
                    file: file.name.clone(),
                    when,
                    fires,
                    quiet,
                    example_facts,
                    compiled,
                },
            });
        }
    }
    Ok(RuleSet {
        rules: rules.into_iter().map(|p| p.rule).collect(),
        findings,
        facts,
    })
}

/// `example_facts = { … }`: the fields of [`RecordFacts`] a rule's examples are evaluated with.
fn record_facts(table: &toml::Table) -> Result<RecordFacts, String> {
    fn flag(f: &mut Fields, key: &'static str) -> Result<bool, String> {
        Ok(f.boolean(key)?.unwrap_or(false))
    }
    let mut f = Fields::nested(table, "example_facts.");
    let facts = RecordFacts {
        patient_id: None,
        age_years: f.integer("age_years")?,
        age_months: f.integer("age_months")?,
        sex: f.string("sex", false)?,
        pregnant: flag(&mut f, "pregnant")?,
        immunosuppressed: flag(&mut f, "immunosuppressed")?,
        anticoagulated: flag(&mut f, "anticoagulated")?,
        cancer_history: flag(&mut f, "cancer_history")?,
        recent_surgery: flag(&mut f, "recent_surgery")?,
        diabetes: flag(&mut f, "diabetes")?,
        heart_disease: flag(&mut f, "heart_disease")?,
        conditions: f.strings("conditions")?,
        medications: f.strings("medications")?,
        measurements: Vec::new(),
    };
    f.finish()?;
    Ok(facts)
}

fn fact_pred(
    name: &str,
    facts: &[DerivedFact],
    findings: &HashMap<String, usize>,
) -> Result<FactPred, String> {
    let kind = match name {
        "pregnant" => FactKind::Flag(Flag::Pregnant),
        "immunosuppressed" => FactKind::Flag(Flag::Immunosuppressed),
        "anticoagulated" => FactKind::Flag(Flag::Anticoagulated),
        "cancer_history" => FactKind::Flag(Flag::CancerHistory),
        "recent_surgery" => FactKind::Flag(Flag::RecentSurgery),
        "diabetes" => FactKind::Flag(Flag::Diabetes),
        "heart_disease" => FactKind::Flag(Flag::HeartDisease),
        "female" => FactKind::Female,
        "female_reproductive_age" => FactKind::FemaleReproductiveAge,
        other => parse_age_pred(other).unwrap_or(FactKind::Named),
    };
    let derived = facts.iter().position(|d| d.id == name);
    let finding = findings.get(name).copied();
    if kind == FactKind::Named && derived.is_none() && finding.is_none() {
        return Err(format!(
            "unknown fact `{name}` (expected a record flag such as `immunosuppressed`, an age such as \
             `age_over_50` / `age_under_3_months` / `age_3_to_6_months`, a [[fact]] id or a finding id)"
        ));
    }
    Ok(FactPred {
        name: name.to_string(),
        kind,
        derived,
        finding,
    })
}

fn parse_age_pred(name: &str) -> Option<FactKind> {
    let rest = name.strip_prefix("age_")?;
    if let Some(n) = rest.strip_prefix("over_") {
        return n.parse().ok().map(FactKind::AgeOverYears);
    }
    if let Some(n) = rest.strip_prefix("under_") {
        if let Some(m) = n.strip_suffix("_months") {
            return m.parse().ok().map(FactKind::AgeUnderMonths);
        }
        return n.parse().ok().map(FactKind::AgeUnderYears);
    }
    let months = rest.strip_suffix("_months")?;
    let (lo, hi) = months.split_once("_to_")?;
    let (lo, hi): (u32, u32) = (lo.parse().ok()?, hi.parse().ok()?);
    (lo < hi).then_some(FactKind::AgeMonthsRange(lo, hi))
}
