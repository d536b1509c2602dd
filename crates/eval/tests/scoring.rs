//! Scoring on fixtures whose answers were computed by hand.

use careflow_core::{Disposition, TokenUsage};
use careflow_eval::score::{percentile, score, LevelMetrics, Prediction, StepTokens};
use careflow_eval::suite::{Gold, Scale, SuiteItem};
use Disposition::*;

fn item(id: &str, gold: &str) -> SuiteItem {
    SuiteItem::new(id, &format!("message {id}"), gold).expect("valid gold")
}

fn pred(id: &str, d: Option<Disposition>, latency_ms: f64, cost_usd: f64) -> Prediction {
    Prediction {
        item_id: id.to_string(),
        disposition: d,
        decision: if d.is_some() { "accept" } else { "error" }.into(),
        tier: "small".into(),
        escalated: false,
        tokens: TokenUsage {
            submitted: 150,
            computed: 100,
            reused: 50,
            generated: 20,
            micros: 0,
        },
        steps: vec![
            StepTokens {
                step: "plan".into(),
                computed: 60,
                reused: 50,
                generated: 10,
            },
            StepTokens {
                step: "analyze".into(),
                computed: 40,
                reused: 0,
                generated: 10,
            },
        ],
        cost_usd,
        latency_ms,
        error: d.is_none().then(|| "engine failed".to_string()),
    }
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-12)
}

fn level<'a>(levels: &'a [LevelMetrics], name: &str) -> &'a LevelMetrics {
    levels
        .iter()
        .find(|l| l.level == name)
        .unwrap_or_else(|| panic!("no level {name}"))
}

/// 11 items on careflow's scale; a7 fails (no disposition), a11 has no prediction at all, and
/// one prediction names no item.
fn careflow_fixture() -> (Vec<SuiteItem>, Vec<Prediction>) {
    let items = vec![
        item("a1", "emergency_now"),
        item("a2", "emergency_now"),
        item("a3", "urgent_same_day"),
        item("a4", "urgent_same_day"),
        item("a5", "routine"),
        item("a6", "routine"),
        item("a7", "within_24_72h"),
        item("a8", "self_care"),
        item("a9", "admin"),
        item("a10", "admin"),
        item("a11", "within_24_72h"),
    ];
    let latencies = [
        100.0, 200.0, 200.0, 200.0, 200.0, 400.0, 500.0, 600.0, 700.0, 1000.0,
    ];
    let answers = [
        ("a1", Some(EmergencyNow)),
        ("a2", Some(UrgentSameDay)),
        ("a3", Some(UrgentSameDay)),
        ("a4", Some(EmergencyNow)),
        ("a5", Some(SelfCare)),
        ("a6", Some(Routine)),
        ("a7", None),
        ("a8", Some(Admin)),
        ("a9", Some(Admin)),
        ("a10", Some(Routine)),
    ];
    let mut preds: Vec<Prediction> = answers
        .iter()
        .zip(latencies)
        .map(|((id, d), l)| pred(id, *d, l, if *id == "a4" { 0.011 } else { 0.001 }))
        .collect();
    preds[1].escalated = true;
    preds[1].tier = "frontier".into();
    preds[3].escalated = true;
    preds[6].steps.truncate(1); // the failed request only planned
    preds.push(pred("not-in-suite", Some(Routine), 5.0, 1.0));
    (items, preds)
}

#[test]
fn headline_metrics_match_the_hand_computed_answers() {
    let (items, preds) = careflow_fixture();
    let m = score(&items, &preds);
    assert_eq!((m.n, m.requests, m.scored, m.missing), (11, 10, 9, 2));
    assert_eq!(m.unmatched_predictions, 1);
    assert_eq!(m.errors, 1);
    // Correct: a1, a3, a6, a9; missing predictions count as wrong.
    assert_eq!(m.correct, 4);
    assert!(close(m.accuracy, 4.0 / 11.0));
    // Clinical golds with a prediction: a1..a6, a8. Under: a2, a5, a8 (admin for a clinical
    // message). Over: a4.
    assert_eq!(m.clinical_scored, 7);
    assert_eq!(m.under_triage, 3);
    assert!(close(m.under_triage_rate, 3.0 / 7.0));
    assert_eq!(m.over_triage, 1);
    assert!(close(m.over_triage_rate, 1.0 / 7.0));
    assert_eq!((m.emergencies, m.emergencies_missed), (2, 1));
    // Admin: a9 right, a10 sent to a clinic, a8 (clinical) sent to the front desk.
    let a = &m.admin_routing;
    assert_eq!(
        (
            a.gold_admin,
            a.correct,
            a.clinical_to_admin,
            a.admin_to_clinical
        ),
        (2, 1, 1, 1)
    );
    assert!(close(a.accuracy, 1.0 / 3.0));
    assert_eq!(m.escalated, 2);
    assert!(close(m.escalation_rate, 0.2));
    assert_eq!(m.decisions.get("accept"), Some(&9));
    assert_eq!(m.decisions.get("error"), Some(&1));
    assert_eq!(m.tiers.get("frontier"), Some(&1));
    // Tokens and cost per request (10 requests).
    assert!((m.tokens_per_request.computed - 100.0).abs() < 1e-12);
    assert!((m.tokens_per_request.reused - 50.0).abs() < 1e-12);
    assert!((m.tokens_per_request.generated - 20.0).abs() < 1e-12);
    assert_eq!(m.steps.len(), 2);
    assert_eq!(m.steps[0].step, "plan");
    assert!((m.steps[0].reused - 50.0).abs() < 1e-12);
    assert!(
        (m.steps[1].computed - 36.0).abs() < 1e-12,
        "{:?}",
        m.steps[1]
    );
    assert!((m.cost_total_usd - 0.02).abs() < 1e-12);
    assert!(close(m.cost_per_request_usd, 0.002));
    assert!(close(m.cost_per_1000_requests_usd, 2.0));
    // Latency, nearest rank over 10 values with a run of ties at 200.
    assert_eq!(m.latency_p50_ms, Some(200.0));
    assert_eq!(m.latency_p95_ms, Some(1000.0));
    assert!(close(m.latency_mean_ms, 410.0));
    assert_eq!(m.latency_max_ms, Some(1000.0));
}

#[test]
fn per_level_precision_and_recall_with_a_level_never_predicted() {
    let (items, preds) = careflow_fixture();
    let m = score(&items, &preds);
    let c = &m.scales.careflow;
    assert_eq!((c.n, c.correct, c.missing), (11, 4, 2));
    let e = level(&c.levels, "emergency_now");
    assert_eq!((e.support, e.predicted, e.true_positive), (2, 2, 1));
    assert!(close(e.precision, 0.5) && close(e.recall, 0.5));
    // within_24_72h: two golds, both without a prediction; never predicted → precision null.
    let w = level(&c.levels, "within_24_72h");
    assert_eq!((w.support, w.predicted, w.true_positive), (2, 0, 0));
    assert_eq!(w.precision, None);
    assert!(close(w.recall, 0.0));
    let s = level(&c.levels, "self_care");
    assert_eq!((s.support, s.predicted), (1, 1));
    assert!(close(s.precision, 0.0) && close(s.recall, 0.0));
    let a = level(&c.levels, "admin");
    assert!(close(a.precision, 0.5) && close(a.recall, 0.5));
    // Confusion: rows gold, columns predicted + missing.
    assert_eq!(
        c.confusion.columns.last().map(String::as_str),
        Some("missing")
    );
    let row = |g: &str| {
        let i = c.confusion.labels.iter().position(|l| l == g).unwrap();
        c.confusion.counts[i].clone()
    };
    assert_eq!(row("within_24_72h"), vec![0, 0, 0, 0, 0, 0, 2]);
    assert_eq!(row("emergency_now"), vec![1, 1, 0, 0, 0, 0, 0]);
    assert_eq!(row("self_care"), vec![0, 0, 0, 0, 0, 1, 0]);
    let total: usize = c.confusion.counts.iter().flatten().sum();
    assert_eq!(total, 11);
}

#[test]
fn published_scale_golds_are_scored_on_their_own_scale_and_collapsed() {
    let three = |id: &str, label: &str| SuiteItem {
        gold: Gold::parse(label, Some(Scale::ThreeLevel)).unwrap(),
        ..item(id, "self_care")
    };
    let items = vec![
        item("c1", "emergent"),      // 4-level (inferred)
        item("c2", "within_1_week"), // 4-level
        item("c3", "within_1_week"),
        item("c4", "non_emergent"), // 3-level (inferred)
        item("c5", "non_emergent"),
        item("c6", "urgent_same_day"), // careflow
        item("c7", "within_24_72h"),
        three("c8", "emergent"), // 3-level (stated)
    ];
    assert_eq!(items[0].gold.scale, Scale::FourLevel);
    assert_eq!(items[3].gold.scale, Scale::ThreeLevel);
    let answers = [
        ("c1", UrgentSameDay), // under, emergency missed
        ("c2", Within24To72h), // within_1_week: right
        ("c3", UrgentSameDay), // within_1_day > within_1_week: over (4-level)
        ("c4", Routine),       // non_emergent: right
        ("c5", SelfCare),      // under
        ("c6", Within24To72h), // under on careflow and 4-level, right on 3-level
        ("c7", Routine),       // under on careflow, right on 4- and 3-level
        ("c8", EmergencyNow),  // emergent: right
    ];
    let preds: Vec<Prediction> = answers
        .iter()
        .map(|(id, d)| pred(id, Some(*d), 10.0, 0.0))
        .collect();
    let m = score(&items, &preds);
    assert_eq!((m.n, m.correct), (8, 3));
    assert!(close(m.accuracy, 3.0 / 8.0));
    assert_eq!(
        (m.under_triage, m.over_triage, m.clinical_scored),
        (4, 1, 8)
    );
    assert_eq!((m.emergencies, m.emergencies_missed), (2, 1));

    let c = &m.scales.careflow;
    assert_eq!(
        (c.n, c.correct, c.under_triage, c.over_triage),
        (2, 0, 2, 0)
    );
    let f = &m.scales.four_level;
    assert_eq!(
        (f.n, f.correct, f.under_triage, f.over_triage),
        (5, 2, 2, 1)
    );
    assert!(close(f.accuracy, 0.4));
    let t = &m.scales.three_level;
    assert_eq!(
        (t.n, t.correct, t.under_triage, t.over_triage),
        (8, 6, 2, 0)
    );
    assert!(close(t.accuracy, 0.75));
    assert!(close(t.under_triage_rate, 0.25));
    assert!(close(t.over_triage_rate, 0.0));
    // 3-level self_care: no gold has it (recall null), predicted once (precision 0).
    let s = level(&t.levels, "self_care");
    assert_eq!((s.support, s.predicted), (0, 1));
    assert_eq!(s.recall, None);
    assert!(close(s.precision, 0.0));
    let ne = level(&t.levels, "non_emergent");
    assert_eq!((ne.support, ne.predicted, ne.true_positive), (6, 6, 5));
}

#[test]
fn repeats_are_trials_and_an_empty_run_has_null_rates() {
    let items = vec![item("r1", "routine"), item("r2", "self_care")];
    let preds = vec![
        pred("r1", Some(Routine), 1.0, 0.0),
        pred("r2", Some(Routine), 1.0, 0.0),
        pred("r1", Some(SelfCare), 1.0, 0.0),
        pred("r2", Some(SelfCare), 1.0, 0.0),
    ];
    let m = score(&items, &preds);
    assert_eq!((m.n, m.requests, m.correct), (4, 4, 2));
    assert_eq!((m.under_triage, m.over_triage), (1, 1));

    let m = score(&items, &[]);
    assert_eq!((m.n, m.requests, m.missing), (2, 0, 2));
    assert_eq!(m.accuracy, Some(0.0));
    assert_eq!(m.under_triage_rate, None);
    assert_eq!(m.escalation_rate, None);
    assert_eq!(m.cost_per_request_usd, None);
    assert_eq!(m.latency_p50_ms, None);
    assert_eq!(m.admin_routing.accuracy, None);

    let m = score(&[], &[]);
    assert_eq!((m.n, m.accuracy), (0, None));
}

#[test]
fn percentile_method_is_nearest_rank_with_ties() {
    let v = [
        100.0, 200.0, 200.0, 200.0, 200.0, 400.0, 500.0, 600.0, 700.0, 1000.0,
    ];
    assert_eq!(percentile(&v, 50.0), Some(200.0));
    assert_eq!(percentile(&v, 60.0), Some(400.0));
    assert_eq!(percentile(&v, 95.0), Some(1000.0));
    assert_eq!(percentile(&v, 90.0), Some(700.0));
    assert_eq!(percentile(&[2.0, 2.0], 50.0), Some(2.0));
}
