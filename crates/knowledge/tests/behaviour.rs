//! What a user of careflow would notice: the floors the rules set on real-looking portal
//! messages, the evidence they give, and the corpus that retrieval and the digest draw on.

use careflow_core::{Disposition, RecordFacts};
use careflow_knowledge::{Guidelines, KnowledgeError, RuleOutcome, RuleSet};
use std::collections::HashSet;

fn rules() -> RuleSet {
    RuleSet::embedded().expect("embedded rules load")
}

fn eval(msg: &str) -> RuleOutcome {
    rules().evaluate(msg, &RecordFacts::default())
}

fn fired(o: &RuleOutcome) -> Vec<&str> {
    o.fired.iter().map(|f| f.id.as_str()).collect()
}

fn at_least(o: &RuleOutcome, level: Disposition) -> bool {
    o.floor.is_some_and(|f| !f.is_below(level))
}

// ------------------------------------------------------------------ the brief's examples

#[test]
fn plain_back_pain_sets_no_clinical_floor_above_routine() {
    let o = eval("I've had sharp lower back pain for 3 days. Should I be worried?");
    assert!(
        o.floor
            .is_none_or(|f| f.acuity() <= Disposition::Routine.acuity()),
        "floor {:?}, fired {:?}",
        o.floor,
        fired(&o)
    );
    assert!(
        o.findings.iter().any(|f| f == "back pain"),
        "{:?}",
        o.findings
    );
    assert!(!o.admin_request);
}

#[test]
fn back_pain_with_loss_of_bladder_control_is_an_emergency() {
    let o = eval("back pain and I can't control my bladder since this morning");
    assert_eq!(o.floor, Some(Disposition::EmergencyNow));
    assert!(fired(&o).contains(&"back.cauda_equina"), "{:?}", fired(&o));
    let ces = o
        .fired
        .iter()
        .find(|f| f.id == "back.cauda_equina")
        .expect("fired");
    assert!(ces.source.starts_with("https://"));
    assert!(
        ces.because.iter().any(|b| b.contains("bladder")),
        "{:?}",
        ces.because
    );
    // the same with other spellings
    for msg in [
        "My lower back hurts and I cannot pass urine",
        "sciatica, and now I'm numb between my legs",
        "back ache and I wet myself twice today",
        "terrible back pain, I am unable to pee",
    ] {
        assert_eq!(eval(msg).floor, Some(Disposition::EmergencyNow), "{msg}");
    }
}

#[test]
fn negated_features_do_not_fire_their_rules() {
    let o = eval("chest pain but no sweating and no shortness of breath");
    assert!(
        !fired(&o).contains(&"chest.acs_features"),
        "{:?}",
        fired(&o)
    );
    assert!(fired(&o).contains(&"chest.any"));
    assert_eq!(o.floor, Some(Disposition::UrgentSameDay));
    assert!(
        !o.findings.iter().any(|f| f.contains("sweat")),
        "{:?}",
        o.findings
    );

    let o = eval("I do not have a fever");
    assert!(!o.findings.iter().any(|f| f == "fever"), "{:?}", o.findings);
    assert!(rules()
        .negated_findings("I do not have a fever")
        .contains(&"fever".to_string()));

    let o = eval("I don't have any chest pain, just a cough");
    assert!(
        !o.findings.iter().any(|f| f == "chest pain"),
        "{:?}",
        o.findings
    );
    assert_eq!(o.floor, None);

    let o = eval("headache without numbness or weakness, no stiff neck");
    assert!(
        o.floor
            .is_none_or(|f| f.is_below(Disposition::UrgentSameDay)),
        "{:?}",
        fired(&o)
    );
}

#[test]
fn negation_does_not_reach_past_a_new_statement() {
    // "no" belongs to the fever, not to the chest pain that follows
    let o = eval("no fever and my chest hurts with sweating");
    assert_eq!(o.floor, Some(Disposition::EmergencyNow), "{:?}", fired(&o));
    // pseudo-negations are not negations
    let o = eval("I'm not sure if it matters but I have crushing chest pain and I'm sweating");
    assert_eq!(o.floor, Some(Disposition::EmergencyNow), "{:?}", fired(&o));
    let o = eval("the chest pain doesn't go away and I feel sick");
    assert_eq!(o.floor, Some(Disposition::EmergencyNow), "{:?}", fired(&o));
}

#[test]
fn findings_list_what_was_said_and_not_bare_modifiers() {
    // "won't stop" alone is not a seizure finding; "sitting down" alone is not breathlessness
    let o = eval("I cut myself while cooking, it won't stop bleeding");
    assert_eq!(o.floor, Some(Disposition::EmergencyNow));
    assert!(
        !o.findings.iter().any(|f| f.contains("seizure")),
        "{:?}",
        o.findings
    );
    let o = eval("my hip hurts when sitting down");
    assert!(o.findings.is_empty(), "{:?}", o.findings);
    // a modifier that a fired rule used is listed
    let o = eval("sudden severe headache");
    assert!(
        o.findings.iter().any(|f| f == "sudden onset"),
        "{:?}",
        o.findings
    );
    // worry is not history
    assert!(eval("I'm worried I might have cancer").findings.is_empty());
    // "without" does not reach a later statement
    let o = eval("I've lost 10 pounds without trying and have back pain");
    assert!(
        o.findings.iter().any(|f| f == "back pain"),
        "{:?}",
        o.findings
    );
    assert_eq!(o.floor, Some(Disposition::Within24To72h));
    // "is not drinking" matches the phrase "not drinking"
    let o = eval("My 3 year old has a fever of 39.5 and is not drinking");
    assert_eq!(o.floor, Some(Disposition::UrgentSameDay), "{:?}", fired(&o));
}

#[test]
fn infant_fever_from_the_record_age() {
    let facts = RecordFacts {
        age_months: Some(2),
        ..RecordFacts::default()
    };
    let o = rules().evaluate("my 2 month old has a temperature of 38.3", &facts);
    assert!(
        at_least(&o, Disposition::UrgentSameDay),
        "{:?} {:?}",
        o.floor,
        fired(&o)
    );
    assert!(fired(&o).contains(&"fever.infant_under_3_months"));
    assert!(o.findings.iter().any(|f| f == "fever"));
}

#[test]
fn infant_fever_from_an_age_stated_in_the_message() {
    // The record may be the parent's: the baby's age in the message still counts.
    let parent = RecordFacts {
        age_years: Some(34),
        ..RecordFacts::default()
    };
    let o = rules().evaluate("My 6 week old feels hot, thermometer says 101.5F", &parent);
    assert!(at_least(&o, Disposition::UrgentSameDay), "{:?}", fired(&o));
    // a normal temperature in the same baby does not make a fever
    let o = rules().evaluate("My 6 week old has a temperature of 37.2", &parent);
    assert!(!o.findings.iter().any(|f| f == "fever"), "{:?}", o.findings);
}

#[test]
fn temperatures_are_parsed_in_both_scales() {
    let t =
        careflow_knowledge::temperatures_c("she is at 101.5F and was 39C last night, 102 F now");
    assert_eq!(t.len(), 3, "{t:?}");
    assert!((t[0] - 38.61).abs() < 0.01);
    assert!((t[1] - 39.0).abs() < 0.01);
    assert!((t[2] - 38.89).abs() < 0.01);
    assert!(careflow_knowledge::temperatures_c("I'm 38 weeks pregnant").is_empty());
    assert!(eval("temperature 101.5F")
        .findings
        .iter()
        .any(|f| f == "fever"));
    assert!(!eval("temp 99.1F").findings.iter().any(|f| f == "fever"));
    let high = eval("temp of 39.4 since this morning");
    assert!(
        high.findings.iter().any(|f| f.starts_with("high fever")),
        "{:?}",
        high.findings
    );
}

#[test]
fn baby_3_to_6_months_needs_39_degrees() {
    let facts = RecordFacts {
        age_months: Some(4),
        ..RecordFacts::default()
    };
    let o = rules().evaluate("fever of 38.4", &facts);
    assert!(!fired(&o).contains(&"fever.infant_3_to_6_months_high"));
    let o = rules().evaluate("fever of 39.2", &facts);
    assert!(
        fired(&o).contains(&"fever.infant_3_to_6_months_high"),
        "{:?}",
        fired(&o)
    );
    let o = rules().evaluate("fever and a rash that doesn't fade under a glass", &facts);
    assert_eq!(o.floor, Some(Disposition::EmergencyNow));
}

#[test]
fn headache_with_immunosuppression_from_the_record() {
    let facts = RecordFacts {
        immunosuppressed: true,
        ..RecordFacts::default()
    };
    let o = rules().evaluate("I've had a headache since yesterday", &facts);
    assert_eq!(o.floor, Some(Disposition::UrgentSameDay), "{:?}", fired(&o));
    let rule = o
        .fired
        .iter()
        .find(|f| f.id == "headache.risk_factors")
        .expect("fired");
    assert!(
        rule.because
            .iter()
            .any(|b| b.contains("immunosuppressed (record)")),
        "{:?}",
        rule.because
    );
    // the same headache without the fact sets no floor
    assert_eq!(eval("I've had a headache since yesterday").floor, None);
}

#[test]
fn record_medications_feed_derived_facts() {
    let facts = RecordFacts {
        medications: vec!["Carbimazole 20 MG Oral Tablet".into()],
        ..RecordFacts::default()
    };
    let o = rules().evaluate("I have a sore throat", &facts);
    assert!(
        fired(&o).contains(&"throat.neutropenia_risk"),
        "{:?}",
        fired(&o)
    );
    assert_eq!(eval("I have a sore throat").floor, None);
}

#[test]
fn admin_requests_are_routed_not_triaged() {
    let o = eval("Can I get a refill of my lisinopril?");
    assert!(o.admin_request);
    assert_eq!(o.floor, None);
    assert!(fired(&o).contains(&"admin.refill"));
    for msg in [
        "I need to reschedule my appointment on Tuesday",
        "Could you send me a sick note for work?",
        "I think I was charged twice on my bill",
    ] {
        let o = eval(msg);
        assert!(
            o.admin_request && o.floor.is_none(),
            "{msg}: {:?}",
            fired(&o)
        );
    }
    // a clinical red flag in the same message wins
    let o = eval("Can I get a refill of my inhaler? I'm struggling to breathe today");
    assert!(!o.admin_request);
    assert_eq!(o.floor, Some(Disposition::EmergencyNow));
    assert_eq!(o.fired.last().map(|f| f.level), Some(Disposition::Admin));
}

// ------------------------------------------------------------------ coverage of the areas

#[test]
fn each_complaint_area_reaches_its_level() {
    let cases: &[(&str, Disposition)] = &[
        (
            "crushing chest pain going down my left arm",
            Disposition::EmergencyNow,
        ),
        ("I have some chest tightness", Disposition::UrgentSameDay),
        (
            "worst headache of my life, came on suddenly",
            Disposition::EmergencyNow,
        ),
        (
            "I've never had a headache like this before",
            Disposition::EmergencyNow,
        ),
        (
            "headache, fever of 39 and a stiff neck",
            Disposition::EmergencyNow,
        ),
        (
            "my dad's face is drooping on one side and his speech is slurred",
            Disposition::EmergencyNow,
        ),
        (
            "I'm short of breath even at rest",
            Disposition::EmergencyNow,
        ),
        (
            "I get out of breath on the stairs lately",
            Disposition::UrgentSameDay,
        ),
        ("my lips are turning blue", Disposition::EmergencyNow),
        (
            "I've been having thoughts of ending my life",
            Disposition::EmergencyNow,
        ),
        ("I don't want to be here anymore", Disposition::EmergencyNow),
        (
            "my throat is swelling up after eating peanuts",
            Disposition::EmergencyNow,
        ),
        (
            "I came out in hives this morning",
            Disposition::Within24To72h,
        ),
        (
            "stomach pain and I threw up blood",
            Disposition::UrgentSameDay,
        ),
        (
            "black tarry stools since yesterday",
            Disposition::UrgentSameDay,
        ),
        ("it burns when I pee", Disposition::Within24To72h),
        (
            "burning when I pee with a fever and pain in my side",
            Disposition::UrgentSameDay,
        ),
        (
            "sore throat and I can't swallow fluids, drooling",
            Disposition::EmergencyNow,
        ),
        (
            "my son has a fever and purple spots that don't fade",
            Disposition::EmergencyNow,
        ),
        (
            "I had a seizure for the first time",
            Disposition::EmergencyNow,
        ),
        (
            "sudden severe pain in my testicle",
            Disposition::EmergencyNow,
        ),
    ];
    for (msg, level) in cases {
        let o = eval(msg);
        assert_eq!(
            o.floor,
            Some(*level),
            "{msg}: fired {:?}, findings {:?}",
            fired(&o),
            o.findings
        );
    }
}

#[test]
fn pregnancy_bleeding_uses_the_record_or_the_message() {
    let o = eval("I'm 9 weeks pregnant and spotting");
    assert_eq!(o.floor, Some(Disposition::UrgentSameDay), "{:?}", fired(&o));
    let o = eval("I'm 9 weeks pregnant, bleeding heavily with cramps");
    assert_eq!(o.floor, Some(Disposition::EmergencyNow), "{:?}", fired(&o));
    let pregnant = RecordFacts {
        pregnant: true,
        ..RecordFacts::default()
    };
    let o = rules().evaluate("some bleeding this morning", &pregnant);
    assert_eq!(o.floor, Some(Disposition::UrgentSameDay), "{:?}", fired(&o));
    // "not pregnant" is not pregnant
    let o = eval("I'm not pregnant, just some spotting between periods");
    assert!(
        o.floor
            .is_none_or(|f| f.is_below(Disposition::UrgentSameDay)),
        "{:?}",
        fired(&o)
    );
}

#[test]
fn abdominal_pain_depends_on_who_has_it() {
    let old = RecordFacts {
        age_years: Some(78),
        ..RecordFacts::default()
    };
    let o = rules().evaluate("sudden severe stomach pain", &old);
    assert_eq!(o.floor, Some(Disposition::EmergencyNow), "{:?}", fired(&o));
    let young = RecordFacts {
        age_years: Some(30),
        sex: Some("male".into()),
        ..RecordFacts::default()
    };
    let o = rules().evaluate("sudden severe stomach pain", &young);
    assert_eq!(o.floor, Some(Disposition::UrgentSameDay), "{:?}", fired(&o));
}

#[test]
fn back_pain_red_flags_by_fact() {
    let immuno = RecordFacts {
        immunosuppressed: true,
        ..RecordFacts::default()
    };
    let o = rules().evaluate("back pain and a fever of 38.6", &immuno);
    assert!(
        fired(&o).contains(&"back.infection_risk"),
        "{:?}",
        fired(&o)
    );
    assert_eq!(o.floor, Some(Disposition::UrgentSameDay));
    let older = RecordFacts {
        age_years: Some(67),
        cancer_history: true,
        ..RecordFacts::default()
    };
    let o = rules().evaluate("new lower back pain this week", &older);
    assert_eq!(o.floor, Some(Disposition::Within24To72h), "{:?}", fired(&o));
    let osteo = RecordFacts {
        conditions: vec!["Osteoporosis".into()],
        ..RecordFacts::default()
    };
    let o = rules().evaluate("I slipped and now my back hurts", &osteo);
    assert_eq!(o.floor, Some(Disposition::UrgentSameDay), "{:?}", fired(&o));
}

#[test]
fn outcome_serialises_with_snake_case_levels() {
    let o = eval("back pain and I can't control my bladder");
    let json = serde_json::to_value(&o).expect("serialise");
    assert_eq!(json["floor"], "emergency_now");
    assert_eq!(json["fired"][0]["level"], "emergency_now");
    assert!(json["findings"].is_array());
}

// ------------------------------------------------------------------ the data itself

#[test]
fn every_embedded_rule_is_well_formed() {
    let set = rules();
    assert!(set.rules().len() >= 40, "{}", set.rules().len());
    let mut ids = HashSet::new();
    for r in set.rules() {
        assert!(ids.insert(r.id.clone()), "duplicate id {}", r.id);
        assert!(
            r.source.starts_with("https://") || r.source.starts_with("http://"),
            "{}",
            r.id
        );
        assert!(!r.title.is_empty(), "{}", r.id);
        assert_eq!(
            r.level.label().parse::<Disposition>(),
            Ok(r.level),
            "{}",
            r.id
        );
    }
    for area in [
        "back.",
        "chest.",
        "headache.",
        "stroke.",
        "breathing.",
        "abdo.",
        "fever.",
        "mh.",
        "allergy.",
        "preg.",
        "urinary.",
        "throat.",
        "rash.",
        "admin.",
    ] {
        assert!(
            set.rules().iter().any(|r| r.id.starts_with(area)),
            "no rule for {area}"
        );
    }
    assert!(set.finding_vocabulary().len() >= 80);
}

#[test]
fn malformed_rule_files_name_the_file_rule_and_field() {
    let base = r#"
[[finding]]
id = "x_pain"
label = "x pain"
phrases = ["x pain"]
"#;
    let bad_level = format!(
        "{base}\n[[rule]]\nid = \"x.bad\"\ntitle = \"t\"\nlevel = \"urgent\"\nsource = \"https://example.org\"\nall = [\"x_pain\"]\n"
    );
    let err = RuleSet::from_toml_str("custom.toml", &bad_level).unwrap_err();
    match &err {
        KnowledgeError::Rule { file, id, reason } => {
            assert_eq!(
                file, "custom.toml line 7",
                "the file and the line of the rule"
            );
            assert_eq!(id, "x.bad");
            assert!(reason.contains("level"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("custom.toml") && err.to_string().contains("x.bad"));

    let cases = [
        (
            "source = \"https://example.org\"",
            "source = \"\"",
            "source",
        ),
        ("all = [\"x_pain\"]", "all = [\"y_pain\"]", "y_pain"),
        (
            "all = [\"x_pain\"]",
            "all = [\"x_pain\"]\nfacts_any = [\"age_over_fifty\"]",
            "facts_any",
        ),
        ("all = [\"x_pain\"]", "alll = [\"x_pain\"]", "alll"),
        ("level = \"urgent\"", "level = 3", "level"),
    ];
    let good = bad_level.replace("\"urgent\"", "\"urgent_same_day\"");
    assert!(RuleSet::from_toml_str("custom.toml", &good).is_ok());
    for (from, to, needle) in cases {
        let text = if from.starts_with("level") {
            bad_level.replace(from, to)
        } else {
            good.replace(from, to)
        };
        let err = RuleSet::from_toml_str("custom.toml", &text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("custom.toml") && err.contains("x.bad") && err.contains(needle),
            "{err}"
        );
    }
    let syntax = RuleSet::from_toml_str("broken.toml", "[[rule]\nid = 1").unwrap_err();
    assert!(matches!(&syntax, KnowledgeError::Parse { file, .. } if file == "broken.toml"));
    let dup = format!("{good}\n[[rule]]\nid = \"x.bad\"\ntitle = \"t\"\nlevel = \"routine\"\nsource = \"https://e.org\"\nany = [\"x_pain\"]\n");
    assert!(RuleSet::from_toml_str("custom.toml", &dup)
        .unwrap_err()
        .to_string()
        .contains("duplicate"));
}

#[test]
fn rules_load_from_a_directory_too() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/rules");
    let from_dir = RuleSet::from_dir(&dir).expect("data/rules loads");
    assert_eq!(from_dir.rules().len(), rules().rules().len());
    let missing = RuleSet::from_dir(std::path::Path::new("/nonexistent/careflow/rules"));
    assert!(matches!(missing, Err(KnowledgeError::Io { .. })));
}

#[test]
fn every_passage_has_a_source_and_a_unique_id() {
    let g = Guidelines::embedded().expect("embedded guidelines load");
    assert!(g.passages().len() >= 45, "{}", g.passages().len());
    assert_eq!(g.topics().len(), 15);
    let mut ids = HashSet::new();
    for p in g.passages() {
        assert!(ids.insert(p.id.clone()), "duplicate {}", p.id);
        assert!(
            p.source.starts_with("https://") || p.source.starts_with("http://"),
            "{}",
            p.id
        );
        assert!(!p.text.is_empty() && !p.title.is_empty(), "{}", p.id);
        assert!(g.get(&p.id).is_some());
    }
    assert!(g.get("nope-99").is_none());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/guidelines");
    assert_eq!(
        Guidelines::from_dir(&dir).expect("loads").passages().len(),
        g.passages().len()
    );
}

#[test]
fn search_finds_the_right_topic() {
    let g = Guidelines::embedded().expect("loads");
    let hits = g.search("chest pain sweating", 3);
    assert!(!hits.is_empty() && hits.len() <= 3);
    assert!(
        hits[0].0.id.starts_with("chest-"),
        "{:?}",
        hits.iter().map(|h| &h.0.id).collect::<Vec<_>>()
    );
    assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1));
    assert!(hits.iter().all(|h| h.1 > 0.0));
    for (query, prefix) in [
        ("can't control my bladder back pain", "back-"),
        ("baby temperature 38 under 3 months", "fever-"),
        ("throat swelling after bee sting", "allergy-"),
        ("repeat prescription refill", "admin-"),
        ("face drooping slurred speech", "stroke-"),
        ("carbimazole sore throat", "throat-"),
    ] {
        let top = g.search(query, 1);
        assert!(
            top.first().is_some_and(|h| h.0.id.starts_with(prefix)),
            "{query}: {:?}",
            top.first().map(|h| &h.0.id)
        );
    }
    assert!(g.search("zzzz qqqq", 5).is_empty());
    assert!(g.search("chest pain", 0).is_empty());
}

#[test]
fn digest_is_compact_and_names_every_topic() {
    let g = Guidelines::embedded().expect("loads");
    let d = g.digest();
    let n = d.chars().count();
    assert!((2500..=4000).contains(&n), "digest is {n} characters");
    for t in g.topics() {
        assert!(d.contains(&t.title), "{}", t.title);
    }
    for p in g.passages() {
        assert!(d.contains(&p.id), "{}", p.id);
    }
}
