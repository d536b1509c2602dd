//! Every rule carries its own examples as data (`fires` / `quiet` in data/rules/*.toml):
//! lay-worded messages that must fire it and near misses (negations, the symptom without the
//! red flag, look-alike words) that must not. This test holds every embedded rule to them.

use careflow_core::RecordFacts;
use careflow_knowledge::{KnowledgeError, RuleSet};

fn rules() -> RuleSet {
    RuleSet::embedded().expect("embedded rules load")
}

#[test]
fn every_rule_has_examples_both_ways() {
    let set = rules();
    let missing: Vec<String> = set
        .rules()
        .iter()
        .filter(|r| r.fires.is_empty() || r.quiet.is_empty())
        .map(|r| {
            format!(
                "{} ({}): fires {}, quiet {}",
                r.id,
                r.file,
                r.fires.len(),
                r.quiet.len()
            )
        })
        .collect();
    assert!(
        missing.is_empty(),
        "rules without examples:\n{}",
        missing.join("\n")
    );
    let fires: usize = set.rules().iter().map(|r| r.fires.len()).sum();
    let quiet: usize = set.rules().iter().map(|r| r.quiet.len()).sum();
    println!(
        "rule examples: {} rules, {fires} fires, {quiet} quiet",
        set.rules().len()
    );
}

#[test]
fn every_rule_example_behaves_as_written() {
    let set = rules();
    let bad = set.check_examples();
    assert!(
        bad.is_empty(),
        "{} rule examples do not behave as written:\n{}",
        bad.len(),
        bad.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn examples_cover_negation_and_lay_wording() {
    // The set as a whole must exercise negation and everyday words; spot-check a few.
    let set = rules();
    let all_quiet: Vec<&str> = set
        .rules()
        .iter()
        .flat_map(|r| r.quiet.iter().map(String::as_str))
        .collect();
    let negated = all_quiet
        .iter()
        .filter(|m| {
            let l = m.to_lowercase();
            l.contains("no ") || l.contains("not ") || l.contains("n't ") || l.contains("without ")
        })
        .count();
    assert!(
        negated >= 30,
        "only {negated} quiet examples use a negation"
    );
    let find = |id: &str| {
        set.rules()
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("rule {id}"))
    };
    let has = |id: &str, needle: &str| {
        let r = find(id);
        assert!(
            r.fires.iter().any(|m| m.to_lowercase().contains(needle)),
            "{id}: no fires example with \"{needle}\": {:?}",
            r.fires
        );
    };
    has("urinary.retention", "can't pee");
    has("back.cauda_equina", "wet myself");
    has("headache.thunderclap", "worst headache ever");
    let fever_quiet = set
        .rules()
        .iter()
        .filter(|r| {
            r.quiet
                .iter()
                .any(|m| m.to_lowercase().contains("no fever"))
        })
        .count();
    assert!(
        fever_quiet >= 3,
        "{fever_quiet} rules have a \"no fever\" quiet case"
    );
}

#[test]
fn example_facts_are_applied_and_checked() {
    let file = r#"
[[finding]]
id = "back_pain"
label = "back pain"
phrases = ["back pain"]

[[rule]]
id = "x.immuno"
title = "t"
level = "urgent_same_day"
source = "https://example.org"
all = ["back_pain"]
facts_any = ["immunosuppressed", "age_over_65"]
fires = ["back pain today"]
quiet = ["no back pain"]
example_facts = { immunosuppressed = true, age_years = 40, sex = "female", medications = ["x"] }
"#;
    let set = RuleSet::from_toml_str("x.toml", file).expect("loads");
    let r = &set.rules()[0];
    assert!(r.example_facts.immunosuppressed);
    assert_eq!(r.example_facts.age_years, Some(40));
    assert!(
        set.check_examples().is_empty(),
        "{:?}",
        set.check_examples()
    );
    // the same examples without the facts: the fires example no longer fires
    let bare = file.replace(
        "example_facts = { immunosuppressed = true, age_years = 40, sex = \"female\", medications = [\"x\"] }",
        "",
    );
    let set = RuleSet::from_toml_str("x.toml", &bare).expect("loads");
    let bad = set.check_examples();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].should_fire && bad[0].rule == "x.immuno");
    assert!(
        bad[0].to_string().contains("x.toml") && bad[0].to_string().contains("back pain today")
    );
    // and the rule still works on real facts
    let o = set.evaluate(
        "back pain today",
        &RecordFacts {
            age_years: Some(70),
            ..RecordFacts::default()
        },
    );
    assert_eq!(o.fired.len(), 1);

    // malformed example fields name the file, rule and field
    for (from, to, needle) in [
        (
            "age_years = 40",
            "age_years = \"forty\"",
            "example_facts.age_years",
        ),
        ("age_years = 40", "age_yrs = 40", "example_facts.age_yrs"),
        (
            "immunosuppressed = true",
            "immunosuppressed = 1",
            "example_facts.immunosuppressed",
        ),
        (
            "fires = [\"back pain today\"]",
            "fires = \"back pain today\"",
            "fires",
        ),
        (
            "quiet = [\"no back pain\"]",
            "quiet = [\"back pain today\"]",
            "quiet",
        ),
        (
            "quiet = [\"no back pain\"]",
            "quiet = [\"no back pain\"]\nexamples = []",
            "examples",
        ),
    ] {
        let text = file.replace(from, to);
        let err = RuleSet::from_toml_str("x.toml", &text).expect_err(to);
        assert!(matches!(err, KnowledgeError::Rule { .. }), "{err:?}");
        let shown = err.to_string();
        assert!(
            shown.contains("x.toml") && shown.contains("x.immuno") && shown.contains(needle),
            "{shown}"
        );
    }
}
