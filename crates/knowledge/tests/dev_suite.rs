//! The dev evaluation suite (data/eval/dev.jsonl) against the rules alone: every line parses,
//! every emergency is caught by the rules' floor (recall of emergencies = 100%), every rule an
//! item lists fires on it, and admin messages are routed as admin. Over-triage by the floor is
//! reported, not asserted: the floor is a safety net and may sit above the gold.

use careflow_core::{Disposition, RecordFacts};
use careflow_knowledge::{load_suite, EvalItem, RuleOutcome, RuleSet};
use std::collections::{BTreeMap, HashSet};

const DEV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/eval/dev.jsonl");

fn suite() -> Vec<EvalItem> {
    load_suite(DEV).unwrap_or_else(|e| panic!("{e}"))
}

fn gold(item: &EvalItem) -> Disposition {
    item.gold_disposition().unwrap_or_else(|| {
        panic!(
            "{} (line {}): gold `{}` is not a careflow label",
            item.id, item.line, item.gold
        )
    })
}

#[test]
fn dev_suite_is_balanced_and_well_formed() {
    let items = suite();
    assert!(items.len() >= 160, "{} items", items.len());
    let mut per_level: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_tag: BTreeMap<&str, usize> = BTreeMap::new();
    let mut messages = HashSet::new();
    for item in &items {
        *per_level.entry(gold(item).label()).or_default() += 1;
        for t in &item.tags {
            *per_tag.entry(t.as_str()).or_default() += 1;
        }
        assert!(item.id.starts_with("dev-"), "{}", item.id);
        assert!(item.rationale.is_some(), "{}: no rationale", item.id);
        assert!(
            messages.insert(item.message.to_lowercase()),
            "{}: duplicate message",
            item.id
        );
        assert!(
            item.patient_id.is_none_or(|p| (1..=28).contains(&p)),
            "{}",
            item.id
        );
    }
    for level in Disposition::ALL {
        let n = per_level.get(level.label()).copied().unwrap_or(0);
        let min = if level == Disposition::Admin { 30 } else { 20 };
        assert!(n >= min, "{}: {n} items (want >= {min})", level.label());
    }
    for tag in [
        "negation",
        "vague",
        "two_complaints",
        "child",
        "pregnancy",
        "admin",
    ] {
        let n = per_tag.get(tag).copied().unwrap_or(0);
        assert!(n >= 5, "tag {tag}: {n} items");
    }
    println!(
        "dev suite: {} items; levels {per_level:?}; tags {per_tag:?}",
        items.len()
    );
}

#[test]
fn rules_only_floor_over_the_dev_suite() {
    let set = RuleSet::embedded().expect("embedded rules load");
    let known: HashSet<&str> = set.rules().iter().map(|r| r.id.as_str()).collect();
    let facts = RecordFacts::default();
    let items = suite();
    let mut problems: Vec<String> = Vec::new();
    let (mut emergencies, mut caught) = (0usize, 0usize);
    let (mut clinical_non_emergency, mut over, mut at_gold, mut under) =
        (0usize, 0usize, 0usize, 0usize);
    let (mut admin_items, mut admin_routed) = (0usize, 0usize);
    let mut over_lines = Vec::new();
    for item in &items {
        let g = gold(item);
        let o: RuleOutcome = set.evaluate(&item.message, &facts);
        let fired: Vec<&str> = o.fired.iter().map(|f| f.id.as_str()).collect();
        let show = |what: &str| {
            format!(
                "{} (line {}): {what}; gold {}, floor {:?}, fired {fired:?}, findings {:?}: \"{}\"",
                item.id,
                item.line,
                g.label(),
                o.floor.map(Disposition::label),
                o.findings,
                item.message
            )
        };
        // (c) every listed rule exists and fires
        for r in &item.rules {
            if !known.contains(r.as_str()) {
                problems.push(show(&format!("lists unknown rule `{r}`")));
            } else if !fired.contains(&r.as_str()) {
                problems.push(show(&format!("listed rule `{r}` did not fire")));
            }
        }
        match g {
            // (a) recall of emergencies
            Disposition::EmergencyNow => {
                emergencies += 1;
                if o.floor == Some(Disposition::EmergencyNow) {
                    caught += 1;
                } else {
                    problems.push(show("emergency missed by the rules' floor"));
                }
            }
            // (d) admin routing
            Disposition::Admin => {
                admin_items += 1;
                let clinical_listed = item.rules.iter().any(|r| !r.starts_with("admin."));
                if !clinical_listed {
                    if o.admin_request {
                        admin_routed += 1;
                    } else {
                        problems.push(show("admin message not routed as admin"));
                    }
                }
                if o.floor.is_some() {
                    over_lines.push(show("clinical floor on an admin message"));
                }
            }
            // (b) over-triage: reported, not asserted
            _ => {
                clinical_non_emergency += 1;
                match o.floor {
                    Some(f) if g.is_below(f) => {
                        over += 1;
                        over_lines.push(show("floor above gold"));
                    }
                    Some(f) if f == g => at_gold += 1,
                    _ => under += 1,
                }
            }
        }
    }
    for l in &over_lines {
        println!("over-triage: {l}");
    }
    let pct = |a: usize, b: usize| {
        if b == 0 {
            100.0
        } else {
            100.0 * a as f64 / b as f64
        }
    };
    println!(
        "dev suite, rules only: {} items; emergency recall {caught}/{emergencies} = {:.1}%; \
         non-emergency clinical items {clinical_non_emergency}: floor above gold {over} ({:.1}%), \
         at gold {at_gold}, below gold or none {under}; admin routed {admin_routed}/{admin_items}",
        items.len(),
        pct(caught, emergencies),
        pct(over, clinical_non_emergency),
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(caught, emergencies);
}
