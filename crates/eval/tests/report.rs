//! The runner with fake strategies, the JSON report, the HTML report and the diff.

use async_trait::async_trait;
use careflow_core::{Disposition, TokenUsage};
use careflow_eval::diff::{diff, diff_files, Tolerances};
use careflow_eval::html;
use careflow_eval::report::{summary_table, Report};
use careflow_eval::runner::{run_suite, RunProgress, Strategy};
use careflow_eval::score::{Prediction, StepTokens};
use careflow_eval::suite::{parse_suite, SuiteItem};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const SUITE: &str = concat!(
    r#"{"id": "e1", "message": "crushing chest pain <script>alert(1)</script>", "gold": "emergency_now"}"#,
    "\n",
    r#"{"id": "e2", "message": "worst headache of my life & stiff neck", "gold": "emergent"}"#,
    "\n",
    r#"{"id": "u1", "message": "UTI symptoms since this morning", "gold": "urgent_same_day"}"#,
    "\n",
    r#"{"id": "w1", "message": "ear pain for 3 days", "gold": "within_1_week"}"#,
    "\n",
    r#"{"id": "r1", "message": "ringing in the ears for weeks", "gold": "routine"}"#,
    "\n",
    r#"{"id": "s1", "message": "mild cold", "gold": "self_care"}"#,
    "\n",
    r#"{"id": "n1", "message": "sore knee", "gold": "non_emergent"}"#,
    "\n",
    r#"{"id": "a1", "message": "refill my <b>metformin</b>", "gold": "admin"}"#,
    "\n",
    r#"{"id": "bad", "message": "x", "gold": "<i>urgent</i>"}"#,
    "\n",
);

/// Answers from a fixed table; counts requests in flight to prove the runner never overlaps them.
struct Table {
    name: &'static str,
    answer: fn(&SuiteItem) -> Option<Disposition>,
    reused: u64,
    cost: f64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Table {
    fn new(
        name: &'static str,
        answer: fn(&SuiteItem) -> Option<Disposition>,
        reused: u64,
        cost: f64,
    ) -> Table {
        Table {
            name,
            answer,
            reused,
            cost,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl Strategy for Table {
    fn name(&self) -> &str {
        self.name
    }

    async fn predict(&self, item: &SuiteItem) -> Prediction {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let d = (self.answer)(item);
        let computed = 400 - self.reused.min(300);
        Prediction {
            item_id: String::new(), // the runner fills it in
            disposition: d,
            decision: if d.is_some() { "accept" } else { "error" }.into(),
            tier: "small".into(),
            escalated: item.id == "u1",
            tokens: TokenUsage {
                submitted: computed + self.reused,
                computed,
                reused: self.reused,
                generated: 30,
                micros: 0,
            },
            steps: ["plan", "retrieve", "analyze", "respond"]
                .iter()
                .map(|s| StepTokens {
                    step: s.to_string(),
                    computed: computed / 4,
                    reused: self.reused / 4,
                    generated: 7,
                })
                .collect(),
            cost_usd: self.cost,
            latency_ms: if item.id == "r1" {
                0.0
            } else {
                100.0 + item.message.len() as f64
            },
            error: d.is_none().then(|| "timed out".to_string()),
        }
    }
}

fn oracle(item: &SuiteItem) -> Option<Disposition> {
    // The most urgent careflow level that reads as the gold on its scale.
    Disposition::ALL
        .into_iter()
        .find(|d| item.gold.scale.map(*d) == item.gold.label)
}

fn sloppy(item: &SuiteItem) -> Option<Disposition> {
    match item.id.as_str() {
        "e1" => Some(Disposition::Routine), // under-triage of an emergency
        "s1" => None,                       // failed
        _ => oracle(item),
    }
}

async fn run() -> (Vec<SuiteItem>, Report, Vec<RunProgress>) {
    let suite = parse_suite(SUITE);
    assert_eq!(suite.items.len(), 8);
    assert_eq!(suite.problems.len(), 1);
    let stateful = Table::new("stateful", oracle, 300, 0.0004);
    let stateless = Table::new("stateless", sloppy, 0, 0.0012);
    let seen = Mutex::new(Vec::new());
    let progress = |p: &RunProgress| seen.lock().unwrap().push(p.clone());
    let strategies: [&dyn Strategy; 2] = [&stateful, &stateless];
    let reports = run_suite(&suite.items, &strategies, 3, &progress).await;
    assert_eq!(stateful.max_in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(stateless.max_in_flight.load(Ordering::SeqCst), 1);
    let report = Report::new("suite <test>.jsonl", reports, suite.problems);
    (suite.items, report, seen.into_inner().unwrap())
}

#[tokio::test]
async fn runner_scores_every_strategy_and_reports_progress() {
    let (items, report, progress) = run().await;
    assert_eq!(progress.len(), 2 * 3 * items.len());
    let last = progress.last().unwrap();
    assert_eq!(
        (last.done, last.total, last.strategy.as_str()),
        (48, 48, "stateless")
    );
    assert_eq!((last.repeat, last.repeats, last.strategy_index), (3, 3, 2));

    let good = report.strategy("stateful").unwrap();
    assert_eq!(good.repeats, 3);
    assert_eq!(good.predictions.len(), 24);
    assert!(good.predictions.iter().all(|p| !p.item_id.is_empty()));
    // A latency the strategy left at 0 is replaced by the measured wall time.
    assert!(good.predictions.iter().all(|p| p.latency_ms > 0.0));
    let m = &good.metrics;
    assert_eq!((m.n, m.correct, m.under_triage, m.missing), (24, 24, 0, 0));
    assert_eq!(
        good.intervals.accuracy.map(|i| (i.low, i.high)),
        Some((1.0, 1.0))
    );
    assert!((m.tokens_per_request.reused - 300.0).abs() < 1e-9);
    assert!((m.escalation_rate.unwrap() - 1.0 / 8.0).abs() < 1e-12);

    let bad = &report.strategy("stateless").unwrap().metrics;
    assert_eq!((bad.n, bad.correct, bad.missing), (24, 18, 3));
    assert_eq!((bad.emergencies, bad.emergencies_missed), (6, 3));
    assert!(bad.cost_per_request_usd.unwrap() > m.cost_per_request_usd.unwrap());
    let iv = report
        .strategy("stateless")
        .unwrap()
        .intervals
        .accuracy
        .unwrap();
    assert!(iv.contains(0.75), "{iv:?}");

    let table = summary_table(&report);
    assert!(
        table.contains("stateless") && table.contains("line 9"),
        "{table}"
    );
}

#[tokio::test]
async fn json_report_round_trips_through_a_file() {
    let (_, report, _) = run().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    report.write_json(&path).unwrap();
    let back = Report::read_json(&path).unwrap();
    assert_eq!(back, report);
    // Stable top-level and metric field names.
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["problems"][0]["line"], 9);
    assert_eq!(v["problems"][0]["field"], "gold");
    let m = &v["strategies"][0]["metrics"];
    for key in [
        "accuracy",
        "under_triage_rate",
        "emergencies_missed",
        "over_triage_rate",
        "escalation_rate",
        "cost_per_request_usd",
        "cost_per_1000_requests_usd",
        "latency_p50_ms",
        "latency_p95_ms",
    ] {
        assert!(m.get(key).is_some(), "{key}");
    }
    assert!(m["scales"]["three_level"]["confusion"]["counts"].is_array());
    assert!(v["strategies"][0]["intervals"]["accuracy"]["low"].is_number());
    assert!(v["strategies"][1]["predictions"][5]["disposition"].is_null());
}

#[tokio::test]
async fn html_report_is_self_contained_with_one_svg_per_plot_and_escaped_text() {
    let (items, report, _) = run().await;
    let page = html::render(&report, &items).unwrap();
    // 2 shared plots + (confusion, step tokens) per strategy.
    let plots = 2 + 2 * report.strategies.len();
    assert_eq!(page.matches("<svg").count(), plots);
    assert_eq!(page.matches("</svg>").count(), plots);
    // Text is drawn as SVG text (no font file needed).
    assert!(page.matches("<text").count() > 20);
    for label in [
        "Cost vs accuracy",
        "Latency distribution",
        "urgent_same_day",
        "computed",
        "reused",
    ] {
        assert!(page.contains(label), "{label}");
    }
    // No scripts, no external assets; message text escaped.
    assert!(!page.contains("<script"), "unescaped script");
    assert!(!page.contains("<b>metformin"));
    assert!(page.contains("crushing chest pain &lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("suite &lt;test&gt;.jsonl"));
    assert!(page.contains("&lt;i&gt;urgent&lt;/i&gt;"));
    for external in ["src=", "href=", "<link", "@import", "url("] {
        assert!(!page.contains(external), "{external}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.html");
    html::write_html(&report, &items, &path).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 1000);
    if let Ok(dir) = std::env::var("CAREFLOW_EVAL_HTML_OUT") {
        std::fs::write(std::path::Path::new(&dir).join("report.html"), &page).unwrap();
    }
}

#[tokio::test]
async fn diff_flags_regressions_beyond_tolerance_only() {
    let (_, base, _) = run().await;
    let tol = Tolerances::default();
    let same = diff(&base, &base, &tol);
    assert!(same.regressions().is_empty() && !same.has_regressions());

    let mut cand = base.clone();
    {
        let m = &mut cand.strategies[0].metrics;
        m.under_triage_rate = m.under_triage_rate.map(|r| r + 0.001); // any increase
        m.accuracy = m.accuracy.map(|a| a - 0.01); // within 0.02
        m.cost_per_request_usd = m.cost_per_request_usd.map(|c| c * 1.25); // above 10 %
        m.latency_p95_ms = m.latency_p95_ms.map(|l| l * 1.1); // within 20 %
    }
    {
        let m = &mut cand.strategies[1].metrics;
        m.emergencies_missed += 1;
        m.cost_per_request_usd = m.cost_per_request_usd.map(|c| c * 1.05); // within 10 %
        m.escalation_rate = m.escalation_rate.map(|e| e + 0.2); // above 0.05
    }
    cand.strategies.push(cand.strategies[0].clone());
    cand.strategies[2].name = "cascade".into();
    let d = diff(&base, &cand, &tol);
    let flagged: Vec<(String, String)> = d
        .regressions()
        .into_iter()
        .map(|r| (r.strategy, r.metric))
        .collect();
    assert_eq!(
        flagged,
        [
            ("stateful".to_string(), "under_triage_rate".to_string()),
            ("stateful".to_string(), "cost_per_request_usd".to_string()),
            ("stateless".to_string(), "emergencies_missed".to_string()),
            ("stateless".to_string(), "escalation_rate".to_string()),
        ]
    );
    assert_eq!(d.only_in_candidate, ["cascade"]);
    assert!(d.only_in_baseline.is_empty());
    // Improvements are never regressions.
    let back = diff(&cand, &base, &tol);
    assert!(back
        .regressions()
        .iter()
        .all(|r| r.metric == "accuracy" || r.metric == "latency_p95_ms"));
    // A stricter tolerance flags the accuracy drop too; the diff serializes.
    let strict = Tolerances {
        accuracy: 0.005,
        ..tol
    };
    assert!(diff(&base, &cand, &strict)
        .regressions()
        .iter()
        .any(|r| r.metric == "accuracy"));
    let json = serde_json::to_string(&d).unwrap();
    assert!(json.contains("\"regression\":true"));

    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    base.write_json(&a).unwrap();
    cand.write_json(&b).unwrap();
    let from_files = diff_files(&a, &b, &tol).unwrap();
    assert_eq!(from_files.regressions().len(), 4);
    std::fs::write(&b, "{\"schema_version\": 9}").unwrap();
    assert!(diff_files(&a, &b, &tol).is_err());
}
