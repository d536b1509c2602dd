//! Text handling shared by the rules: clauses, word tokens, contractions, negation,
//! temperatures and stated ages.
//!
//! A message is lower-cased and cut into clauses at `. ! ? ; ,`, line breaks, dashes and the
//! words "but", "however", "although", "though". A clause is a list of word tokens
//! (`[a-z0-9']`, plus a decimal point between two digits). Common contractions are brought to
//! one spelling (`cannot`, `can not`, `couldn't`, `unable to`, `not able to` → `can't`;
//! `do not` → `don't` …) in messages and in phrases alike, so a phrase written once matches
//! every spelling.

/// Words that end a clause as if they were punctuation.
const CLAUSE_WORDS: &[&str] = &["but", "however", "although", "though"];

/// Negation cues. A cue negates a phrase that starts within [`NEGATION_WINDOW`] tokens after it
/// in the same clause, unless a scope terminator comes between them.
const NEGATION_CUES: &[&str] = &[
    "no", "not", "don't", "doesn't", "didn't", "isn't", "wasn't", "aren't", "weren't", "haven't",
    "hasn't", "never", "without", "denies", "deny", "denied", "denying", "nor", "neither", "none",
];

/// How many tokens before a phrase a negation cue reaches.
pub(crate) const NEGATION_WINDOW: usize = 6;

/// A cue followed by one of these words is not a negation ("not sure", "don't know",
/// "doesn't go away", "no better", "not improving").
const PSEUDO_FOLLOWERS: &[&str] = &[
    "sure",
    "know",
    "knowing",
    "certain",
    "only",
    "just",
    "improving",
    "improve",
    "improved",
    "improvement",
    "better",
    "getting",
    "go",
    "going",
    "gone",
    "stop",
    "stopping",
    "stopped",
    "help",
    "helping",
    "helped",
    "helps",
    "work",
    "working",
    "worked",
    "works",
    "ease",
    "easing",
    "eased",
    "settle",
    "settling",
    "settled",
    "respond",
    "responding",
    "responded",
    "seem",
    "seems",
    "matter",
    "idea",
    "relief",
    "change",
    "changed",
    "changing",
    "one",
    "doubt",
];

/// Words that end a negation's scope inside a clause.
const SCOPE_TERMINATORS: &[&str] = &[
    "except", "yet", "apart", "aside", "which", "who", "whereas", "while", "because", "so", "still",
];

/// "and" followed by one of these starts a new statement and ends a negation's scope
/// ("no fever and my back hurts").
const NEW_STATEMENT_AFTER_AND: &[&str] = &[
    "i",
    "i'm",
    "i've",
    "my",
    "it",
    "it's",
    "now",
    "then",
    "also",
    "the",
    "she",
    "he",
    "they",
    "we",
    "her",
    "his",
    "our",
    "this",
    "there",
    "there's",
    "suddenly",
    "today",
    "yesterday",
    "have",
    "has",
    "had",
    "having",
    "am",
    "is",
    "was",
    "been",
    "feel",
    "feeling",
    "felt",
    "get",
    "got",
    "getting",
    "keep",
    "started",
    "woke",
    "can't",
    "can",
];

/// Words in a clause that make a bare number a temperature ("temperature of 38.3").
const TEMPERATURE_WORDS: &[&str] = &[
    "temp",
    "temps",
    "temperature",
    "temperatures",
    "fever",
    "fevers",
    "feverish",
    "febrile",
    "thermometer",
    "degrees",
    "degree",
    "reading",
    "read",
    "spiking",
    "spiked",
    "running",
    "measured",
];

/// Units after a number that rule out a temperature ("38 weeks", "100 mg").
const NOT_TEMPERATURE_UNITS: &[&str] = &[
    "hour", "hours", "hr", "hrs", "day", "days", "week", "weeks", "wk", "wks", "month", "months",
    "year", "years", "yr", "yrs", "minute", "minutes", "min", "mins", "second", "seconds", "kg",
    "kgs", "lb", "lbs", "pound", "pounds", "mg", "mcg", "ml", "percent", "bpm", "times", "am",
    "pm", "stone", "st", "cm", "mm", "units", "tablets", "pills",
];

/// Nouns after "N days old" that show the age is of a thing, not a person ("a 3 day old rash").
const AGED_THINGS: &[&str] = &[
    "rash",
    "injury",
    "cut",
    "wound",
    "bruise",
    "burn",
    "bite",
    "scar",
    "lump",
    "pain",
    "cough",
    "cold",
    "prescription",
    "problem",
    "issue",
    "mole",
    "blister",
    "tattoo",
    "piercing",
    "stitches",
    "symptom",
    "symptoms",
    "sprain",
    "fracture",
    "message",
    "bill",
    "test",
];

/// One clause of a message: its word tokens, already normalised.
pub(crate) type Clause = Vec<String>;

/// A token of a phrase pattern.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PatTok {
    /// The word itself (also matches its plural with `s`/`es`).
    Word(String),
    /// A word beginning (`hurt*` matches hurt, hurts, hurting).
    Prefix(String),
    /// `...`: up to [`GAP_MAX`] arbitrary tokens.
    Gap,
}

/// Longest stretch a `...` in a phrase skips.
pub(crate) const GAP_MAX: usize = 3;

/// Cuts text into clauses of normalised word tokens.
pub(crate) fn clauses(text: &str) -> Vec<Clause> {
    let mut out = Vec::new();
    for raw in raw_clauses(text, false) {
        let normalised = normalise(raw);
        let mut current = Vec::new();
        for tok in normalised {
            if CLAUSE_WORDS.contains(&tok.as_str()) {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            } else {
                current.push(tok);
            }
        }
        if !current.is_empty() {
            out.push(current);
        }
    }
    out
}

/// Compiles a phrase (`"pain in ... back"`, `"hurt*"`) into pattern tokens.
/// Returns `None` for an empty phrase or one that starts or ends with `...`.
pub(crate) fn compile_phrase(phrase: &str) -> Option<Vec<PatTok>> {
    const GAP_MARK: &str = "\u{1}gap";
    let mut raw = Vec::new();
    for piece in phrase.split_whitespace() {
        if piece == "..." {
            raw.push(GAP_MARK.to_string());
            continue;
        }
        for clause in raw_clauses(piece, true) {
            raw.extend(clause);
        }
    }
    let toks: Vec<PatTok> = normalise(raw)
        .into_iter()
        .map(|t| {
            if t == GAP_MARK {
                PatTok::Gap
            } else if let Some(stem) = t.strip_suffix('*') {
                PatTok::Prefix(stem.trim_end_matches('*').to_string())
            } else {
                PatTok::Word(t)
            }
        })
        .collect();
    let bad_prefix = toks
        .iter()
        .any(|t| matches!(t, PatTok::Prefix(p) if p.chars().count() < 2));
    match (toks.first(), toks.last()) {
        (None, _) | (Some(PatTok::Gap), _) | (_, Some(PatTok::Gap)) => None,
        _ if bad_prefix => None,
        _ => Some(toks),
    }
}

/// Splits into clauses of raw (not yet normalised) tokens. In pattern mode `*` stays part of
/// a word and no punctuation ends a clause.
fn raw_clauses(text: &str, pattern: bool) -> Vec<Vec<String>> {
    let chars: Vec<char> = text.chars().collect();
    let mut clauses = Vec::new();
    let mut clause = Vec::new();
    let mut word = String::new();
    for (i, &c0) in chars.iter().enumerate() {
        let c = match c0 {
            '\u{2019}' | '\u{2018}' | '`' | '\u{b4}' => '\'',
            other => other,
        };
        let lower: Vec<char> = c.to_lowercase().collect();
        if c.is_alphanumeric() || c == '\'' || (pattern && c == '*') {
            word.extend(lower);
            continue;
        }
        let prev_digit = word.chars().last().is_some_and(|p| p.is_ascii_digit());
        let next_digit = chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        if c == '.' && prev_digit && next_digit {
            word.push('.');
            continue;
        }
        push_word(&mut clause, &mut word);
        let ends_clause = !pattern
            && matches!(
                c,
                '.' | '!' | '?' | ';' | ',' | '\n' | '\u{2014}' | '\u{2013}' | '\u{2026}'
            );
        if ends_clause && !clause.is_empty() {
            clauses.push(std::mem::take(&mut clause));
        }
    }
    push_word(&mut clause, &mut word);
    if !clause.is_empty() {
        clauses.push(clause);
    }
    clauses
}

fn push_word(clause: &mut Vec<String>, word: &mut String) {
    let w = word.trim_matches('\'');
    if !w.is_empty() {
        clause.push(w.to_string());
    }
    word.clear();
}

/// Brings contractions and their spelled-out forms to one spelling.
fn normalise(tokens: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        let next = tokens.get(i + 1).map(String::as_str);
        let next2 = tokens.get(i + 2).map(String::as_str);
        // three-token forms
        if t == "not" && next == Some("able") && next2 == Some("to") {
            out.push("can't".into());
            i += 3;
            continue;
        }
        // two-token forms
        let merged = match (t, next) {
            ("can" | "could", Some("not")) => Some("can't"),
            ("unable", Some("to")) => Some("can't"),
            ("do", Some("not")) => Some("don't"),
            ("does", Some("not")) => Some("doesn't"),
            ("did", Some("not")) => Some("didn't"),
            ("is", Some("not")) => Some("isn't"),
            ("was", Some("not")) => Some("wasn't"),
            ("are", Some("not")) => Some("aren't"),
            ("were", Some("not")) => Some("weren't"),
            ("have", Some("not")) => Some("haven't"),
            ("has", Some("not")) => Some("hasn't"),
            ("will" | "would", Some("not")) => Some("won't"),
            ("i", Some("am")) => Some("i'm"),
            _ => None,
        };
        if let Some(m) = merged {
            out.push(m.into());
            i += 2;
            continue;
        }
        let single = match t {
            "cannot" | "cant" | "couldn't" | "couldnt" => "can't",
            "dont" => "don't",
            "doesnt" => "doesn't",
            "didnt" => "didn't",
            "isnt" => "isn't",
            "wasnt" => "wasn't",
            "arent" => "aren't",
            "werent" => "weren't",
            "havent" => "haven't",
            "hasnt" => "hasn't",
            "wont" | "wouldn't" | "wouldnt" => "won't",
            "im" => "i'm",
            "ive" => "i've",
            other => other,
        };
        out.push(single.to_string());
        i += 1;
    }
    out
}

fn word_matches(tok: &str, word: &str) -> bool {
    // "not" in a phrase also matches the contracted forms ("isn't drinking" for "not drinking").
    if word == "not" && tok.ends_with("n't") {
        return true;
    }
    tok == word
        || tok
            .strip_prefix(word)
            .is_some_and(|rest| rest == "s" || rest == "es")
}

/// A phrase found in a clause: `[start, end)` and the token positions its `...` skipped.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
    pub gap_tokens: Vec<usize>,
}

impl Span {
    pub fn overlaps(&self, other: &Span) -> bool {
        self.start < other.end && other.start < self.end
    }
    pub fn contains(&self, other: &Span) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

/// Every place where `pat` matches in `clause` (at most one per start position: the one with
/// the shortest gaps).
pub(crate) fn find_all(pat: &[PatTok], clause: &[String]) -> Vec<Span> {
    let mut spans = Vec::new();
    for start in 0..clause.len() {
        let mut gaps = Vec::new();
        if let Some(end) = match_at(pat, clause, start, &mut gaps) {
            spans.push(Span {
                start,
                end,
                gap_tokens: gaps,
            });
        }
    }
    spans
}

fn match_at(pat: &[PatTok], toks: &[String], i: usize, gaps: &mut Vec<usize>) -> Option<usize> {
    let Some((first, rest)) = pat.split_first() else {
        return Some(i);
    };
    match first {
        PatTok::Gap => {
            for skip in 0..=GAP_MAX {
                if i + skip > toks.len() {
                    break;
                }
                let before = gaps.len();
                gaps.extend(i..i + skip);
                if let Some(end) = match_at(rest, toks, i + skip, gaps) {
                    return Some(end);
                }
                gaps.truncate(before);
            }
            None
        }
        PatTok::Word(w) => {
            let tok = toks.get(i)?;
            if word_matches(tok, w) {
                match_at(rest, toks, i + 1, gaps)
            } else {
                None
            }
        }
        PatTok::Prefix(p) => {
            let tok = toks.get(i)?;
            if tok.starts_with(p.as_str()) {
                match_at(rest, toks, i + 1, gaps)
            } else {
                None
            }
        }
    }
}

/// Whether the token at `j` is a negation cue in this clause (pseudo-negations excluded).
fn is_cue(clause: &[String], j: usize) -> bool {
    let tok = clause[j].as_str();
    let next = clause.get(j + 1).map(String::as_str);
    let cue = NEGATION_CUES.contains(&tok)
        || (tok == "free" && next == Some("of"))
        || (tok == "negative" && next == Some("for"))
        || (tok == "absence" && next == Some("of"));
    if !cue {
        return false;
    }
    if next.is_some_and(|n| PSEUDO_FOLLOWERS.contains(&n)) {
        return false;
    }
    if tok == "never" {
        // "never had a headache like this (before)" intensifies; it does not negate.
        let after = &clause[j + 1..];
        let intensifier = after.iter().any(|t| t == "before")
            || after.windows(2).any(|w| {
                matches!(
                    (w[0].as_str(), w[1].as_str()),
                    ("like", "this")
                        | ("like", "that")
                        | ("this", "bad")
                        | ("so", "bad")
                        | ("this", "severe")
                        | ("this", "much")
                        | ("my", "life")
                )
            });
        if intensifier {
            return false;
        }
    }
    true
}

fn is_terminator(clause: &[String], j: usize) -> bool {
    let tok = clause[j].as_str();
    if SCOPE_TERMINATORS.contains(&tok) {
        return true;
    }
    tok == "and"
        && clause
            .get(j + 1)
            .is_some_and(|n| NEW_STATEMENT_AFTER_AND.contains(&n.as_str()))
}

/// Whether a phrase found at `span` is negated: by a cue shortly before it in the clause, or
/// by a cue inside one of its `...` gaps ("my chest doesn't hurt").
pub(crate) fn is_negated(clause: &[String], span: &Span) -> bool {
    if span.gap_tokens.iter().any(|&g| is_cue(clause, g)) {
        return true;
    }
    let lowest = span.start.saturating_sub(NEGATION_WINDOW);
    for j in (lowest..span.start).rev() {
        if is_terminator(clause, j) {
            return false;
        }
        if is_cue(clause, j) {
            return true;
        }
    }
    false
}

/// Splits a token into its leading number and the rest ("101.5f" → (101.5, "f")).
fn split_number(tok: &str) -> Option<(f32, &str)> {
    let end = tok
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(tok.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let value: f32 = tok[..end].parse().ok()?;
    Some((value, &tok[end..]))
}

fn number_word(tok: &str) -> Option<u32> {
    let n = match tok {
        "a" | "an" | "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        _ => return None,
    };
    Some(n)
}

#[derive(Clone, Copy, PartialEq)]
enum Unit {
    Celsius,
    Fahrenheit,
}

fn unit_word(tok: &str) -> Option<Unit> {
    match tok {
        "c" | "celsius" | "centigrade" | "degc" | "°c" => Some(Unit::Celsius),
        "f" | "fahrenheit" | "degf" | "°f" => Some(Unit::Fahrenheit),
        _ => None,
    }
}

/// Temperatures stated in a clause, in °C. A number counts when it carries a unit (`39C`,
/// `102 F`, `38 degrees`) or when the clause speaks of temperature or fever; a plausible body
/// temperature is then read as °C (34–44) or °F (93–113). Numbers after a negation cue or
/// after "below/under/less than" are ignored.
pub(crate) fn temperatures_in_clause(clause: &[String]) -> Vec<f32> {
    let has_keyword = clause
        .iter()
        .any(|t| TEMPERATURE_WORDS.contains(&t.as_str()));
    let mut out = Vec::new();
    for (i, tok) in clause.iter().enumerate() {
        let Some((value, suffix)) = split_number(tok) else {
            continue;
        };
        let next = clause.get(i + 1).map(String::as_str);
        let next2 = clause.get(i + 2).map(String::as_str);
        let (unit, explicit) = if suffix.is_empty() {
            match next {
                Some(n) if unit_word(n).is_some() => (unit_word(n), true),
                Some("degrees" | "degree" | "deg") => (next2.and_then(unit_word), true),
                Some(n) if NOT_TEMPERATURE_UNITS.contains(&n) => continue,
                _ => (None, false),
            }
        } else if let Some(u) = unit_word(suffix) {
            (Some(u), true)
        } else {
            continue;
        };
        if !explicit && !has_keyword {
            continue;
        }
        let celsius = match unit {
            Some(Unit::Celsius) => value,
            Some(Unit::Fahrenheit) => (value - 32.0) * 5.0 / 9.0,
            None if (34.0..=44.0).contains(&value) => value,
            None if (93.0..=113.0).contains(&value) => (value - 32.0) * 5.0 / 9.0,
            None => continue,
        };
        if !(30.0..=45.0).contains(&celsius) {
            continue;
        }
        if temperature_negated(clause, i) {
            continue;
        }
        out.push(celsius);
    }
    out
}

fn temperature_negated(clause: &[String], i: usize) -> bool {
    let lowest = i.saturating_sub(NEGATION_WINDOW);
    for j in (lowest..i).rev() {
        let tok = clause[j].as_str();
        if is_terminator(clause, j) {
            return false;
        }
        // Pseudo-negation does not apply here: "hasn't gone above 38" is below 38.
        if NEGATION_CUES.contains(&tok) {
            return true;
        }
        if i - j <= 2 && matches!(tok, "below" | "under" | "less" | "lower" | "normal") {
            return true;
        }
    }
    false
}

/// Ages stated in a clause, in whole months ("my 2 month old", "6-week-old", "I'm 67",
/// "aged 70", "67yo", "newborn").
pub(crate) fn ages_in_clause(clause: &[String]) -> Vec<u32> {
    let mut out = Vec::new();
    for (i, tok) in clause.iter().enumerate() {
        if tok == "newborn" || (tok == "new" && clause.get(i + 1).is_some_and(|n| n == "born")) {
            out.push(0);
            continue;
        }
        let (n, suffix) = match split_number(tok) {
            Some((v, s)) if v.fract() == 0.0 && (0.0..=120.0).contains(&v) => (v as u32, s),
            Some(_) => continue,
            None => match number_word(tok) {
                Some(n) => (n, ""),
                None => continue,
            },
        };
        if matches!(suffix, "yo" | "yrs" | "yr" | "y") {
            out.push(n * 12);
            continue;
        }
        if !suffix.is_empty() {
            continue;
        }
        let prev = i.checked_sub(1).map(|p| clause[p].as_str());
        let next = clause.get(i + 1).map(String::as_str);
        // "67 yo", "3 yo" (a numeral, not a number word)
        if next == Some("yo") && number_word(tok).is_none() {
            out.push(n * 12);
            continue;
        }
        if matches!(prev, Some("i'm" | "aged" | "age"))
            && number_word(tok).is_none()
            && matches!(
                next,
                None | Some(
                    "years"
                        | "year"
                        | "yrs"
                        | "yo"
                        | "and"
                        | "with"
                        | "male"
                        | "female"
                        | "man"
                        | "woman"
                        | "m"
                        | "f"
                        | "now"
                        | "so"
                )
            )
        {
            out.push(n * 12);
            continue;
        }
        let per_unit = match next {
            Some("year" | "years" | "yr" | "yrs") => Some(12.0),
            Some("month" | "months" | "mo" | "mos" | "mth" | "mths") => Some(1.0),
            Some("week" | "weeks" | "wk" | "wks") => Some(7.0 / 30.44),
            Some("day" | "days") => Some(1.0 / 30.44),
            _ => None,
        };
        let Some(per_unit) = per_unit else { continue };
        let after = clause.get(i + 2).map(String::as_str);
        let thing_after = clause.get(i + 3).map(String::as_str);
        if after == Some("old") && !thing_after.is_some_and(|t| AGED_THINGS.contains(&t)) {
            out.push((n as f32 * per_unit).floor() as u32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        clauses(s).into_iter().flatten().collect()
    }

    #[test]
    fn clauses_split_at_punctuation_and_but_keeping_decimals() {
        let c = clauses("Chest pain but no sweating, temp 38.5. OK; fine");
        assert_eq!(c.len(), 5, "{c:?}");
        assert_eq!(c[2], vec!["temp", "38.5"]);
    }

    #[test]
    fn contractions_are_one_spelling() {
        assert_eq!(toks("I cannot pee"), toks("I can't pee"));
        assert_eq!(toks("I can not pee"), toks("I cant pee"));
        assert_eq!(toks("I am unable to pee"), vec!["i'm", "can't", "pee"]);
        assert_eq!(toks("I do not have a fever")[1], "don't");
        assert_eq!(
            toks("I\u{2019}m not able to walk"),
            vec!["i'm", "can't", "walk"]
        );
    }

    #[test]
    fn phrases_compile_with_gaps_and_prefixes() {
        let p = compile_phrase("pain in ... back").unwrap();
        assert_eq!(p.len(), 4);
        assert!(compile_phrase("... back").is_none());
        assert!(compile_phrase("   ").is_none());
        let c = &clauses("the pain in my lower back is bad")[0];
        let spans = find_all(&p, c);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].gap_tokens, vec![3, 4]);
        let hurt = compile_phrase("hurt*").unwrap();
        assert_eq!(find_all(&hurt, &clauses("it hurts")[0]).len(), 1);
        let headache = compile_phrase("headache").unwrap();
        assert_eq!(find_all(&headache, &clauses("bad headaches")[0]).len(), 1);
    }

    #[test]
    fn negation_within_the_clause_only() {
        let fever = compile_phrase("fever").unwrap();
        for (text, negated) in [
            ("I do not have a fever", true),
            ("no cough or fever", true),
            ("I have a fever", false),
            ("no cough and my fever is back", false),
            ("I'm not sure but I have a fever", false),
            ("not sure if I have a fever", false),
        ] {
            let c = clauses(text);
            let hit = c
                .iter()
                .find_map(|cl| find_all(&fever, cl).first().map(|s| is_negated(cl, s)));
            assert_eq!(hit, Some(negated), "{text}");
        }
        let chest = compile_phrase("chest ... hurt*").unwrap();
        let c = &clauses("my chest doesn't hurt")[0];
        assert!(is_negated(c, &find_all(&chest, c)[0]));
        let headache = compile_phrase("headache").unwrap();
        let c = &clauses("I've never had a headache like this")[0];
        assert!(!is_negated(c, &find_all(&headache, c)[0]));
    }

    #[test]
    fn temperatures_with_and_without_units() {
        let t = |s: &str| -> Vec<f32> {
            clauses(s)
                .iter()
                .flat_map(|c| temperatures_in_clause(c))
                .collect()
        };
        assert_eq!(t("temperature of 38.3"), vec![38.3]);
        assert!((t("she is at 101.5F")[0] - 38.61).abs() < 0.01);
        assert!((t("102 F since last night")[0] - 38.89).abs() < 0.01);
        assert_eq!(t("39C"), vec![39.0]);
        assert_eq!(t("39°C"), vec![39.0]);
        assert!(t("I'm 38 weeks pregnant").is_empty());
        assert!(t("fever for 39 hours").is_empty());
        assert!(t("I took 100 mg").is_empty());
        assert!(t("pain for 38 days").is_empty());
        assert!(t("temperature hasn't gone above 38").is_empty());
        assert!(t("temp below 38").is_empty());
    }

    #[test]
    fn stated_ages() {
        let a =
            |s: &str| -> Vec<u32> { clauses(s).iter().flat_map(|c| ages_in_clause(c)).collect() };
        assert_eq!(a("my 2 month old has a temperature"), vec![2]);
        assert_eq!(a("my 6-week-old baby"), vec![1]);
        assert_eq!(a("my son is 5 months old"), vec![5]);
        assert_eq!(a("I'm 67 and my back hurts"), vec![804]);
        assert_eq!(a("a 70 year old man"), vec![840]);
        assert_eq!(a("my two month old"), vec![2]);
        assert_eq!(a("newborn with a fever"), vec![0]);
        assert_eq!(a("my 3 yo has a rash"), vec![36]);
        assert_eq!(a("67 yo, can't see"), vec![804]);
        assert!(a("a 3 day old rash").is_empty());
        assert!(a("I'm 38 weeks pregnant").is_empty());
        assert!(a("for 3 days").is_empty());
    }
}
