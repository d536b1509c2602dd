//! The ledger on a real database: SQLite always; PostgreSQL when
//! `CAREFLOW_TEST_POSTGRES_URL` names a server (scripts/test.sh starts one; each test
//! creates and drops a database of its own there).

use careflow_core::TokenUsage;
use careflow_ledger::{Ledger, LedgerEntry, LedgerError, Prices, DAY_MS};

fn entry(
    request: &str,
    at_ms: i64,
    step: &str,
    tier: &str,
    computed: u64,
    reused: u64,
) -> LedgerEntry {
    let usage = TokenUsage {
        submitted: computed + reused,
        computed,
        reused,
        generated: 40,
        micros: 1_000,
    };
    let cost_usd = Prices::embedded().unwrap().cost(tier, &usage).unwrap();
    LedgerEntry {
        request_id: request.to_string(),
        at_ms,
        workflow: "triage".into(),
        step: step.into(),
        tier: tier.into(),
        model: "smollm2-135m".into(),
        adapter: (step == "analyze").then(|| "triage-lora".to_string()),
        usage,
        cost_usd,
        decision: (step == "validate").then(|| "routine".to_string()),
    }
}

fn request(id: &str, at_ms: i64) -> Vec<LedgerEntry> {
    vec![
        entry(id, at_ms, "plan", "local_small", 900, 0),
        entry(id, at_ms + 10, "retrieve", "local_small", 100, 900),
        entry(id, at_ms + 20, "analyze", "local_small", 150, 1000),
        entry(id, at_ms + 30, "validate", "local_frontier", 1200, 0),
    ]
}

const T0: i64 = 1_790_000_000_000; // 2026-09-21

async fn records_reads_back_and_summarises(ledger: &Ledger) {
    let a = request("req-a", T0);
    let b = request("req-b", T0 + DAY_MS);
    ledger.record(&a).await.unwrap();
    ledger.record(&b).await.unwrap();
    ledger.record(&[]).await.unwrap();

    assert_eq!(ledger.entries("req-a").await.unwrap(), a);
    assert!(ledger.entries("req-none").await.unwrap().is_empty());

    let s = ledger.summary(0).await.unwrap();
    assert_eq!((s.requests, s.entries, s.days_covered), (2, 8, 2));
    assert_eq!(
        (s.first_at_ms, s.last_at_ms),
        (Some(T0), Some(T0 + DAY_MS + 30))
    );
    let want: TokenUsage = a.iter().chain(&b).map(|e| e.usage).sum();
    assert_eq!(s.usage, want);
    let total: f64 = a.iter().chain(&b).map(|e| e.cost_usd).sum();
    assert!((s.cost_usd - total).abs() < 1e-12);
    let per = s.per_request.unwrap();
    assert!((per.cost_usd - total / 2.0).abs() < 1e-12);
    assert_eq!(per.computed, want.computed as f64 / 2.0);
    assert_eq!(s.requests_per_day(), Some(1.0));

    let tiers: Vec<&str> = s.by_tier.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(tiers, ["local_small", "local_frontier"]);
    let steps: Vec<&str> = s.by_step.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(steps, ["plan", "retrieve", "analyze", "validate"]);
    let frontier = &s.by_tier[1];
    assert_eq!((frontier.requests, frontier.entries), (2, 2));
    assert_eq!(frontier.usage.computed, 2400);
    let share: f64 = s.by_tier.iter().map(|t| t.per_request.cost_usd).sum();
    assert!((share - per.cost_usd).abs() < 1e-12);

    // Since the second day: one request.
    let later = ledger.summary(T0 + DAY_MS).await.unwrap();
    assert_eq!((later.requests, later.entries), (1, 4));

    let all = ledger.spent_since(None, 0).await.unwrap();
    assert!((all - total).abs() < 1e-12);
    let frontier_cost = ledger.spent_since(Some("local_frontier"), 0).await.unwrap();
    assert!((frontier_cost - frontier.cost_usd).abs() < 1e-12);
    assert!(frontier_cost > 0.0);
    assert_eq!(ledger.spent_since(Some("nope"), 0).await.unwrap(), 0.0);
    assert_eq!(
        ledger.spent_since(None, T0 + 10 * DAY_MS).await.unwrap(),
        0.0
    );
}

async fn an_empty_ledger_summarises_to_zeros(ledger: &Ledger) {
    let s = ledger.summary(0).await.unwrap();
    assert_eq!((s.requests, s.entries, s.days_covered), (0, 0, 0));
    assert_eq!(s.per_request, None);
    assert_eq!(s.cost_per_request_usd(), None);
    assert_eq!(s.requests_per_day(), None);
    assert!(s.by_tier.is_empty() && s.by_step.is_empty());
    assert_eq!(ledger.spent_since(None, 0).await.unwrap(), 0.0);
}

/// A request whose third entry fails (in the database, or before it reaches it) leaves
/// none of its entries behind, and the ledger stays usable.
async fn a_failure_midway_leaves_no_partial_request(ledger: &Ledger) {
    // The database refuses it: CHECK (length(step) > 0).
    let mut r = request("req-check", T0);
    r[2].step = String::new();
    let e = ledger.record(&r).await.unwrap_err();
    assert!(matches!(e, LedgerError::RolledBack { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("req-check") && msg.contains("entry 2"),
        "{msg}"
    );
    assert!(ledger.entries("req-check").await.unwrap().is_empty());

    // careflow refuses it: a token count beyond BIGINT.
    let mut r = request("req-range", T0);
    r[2].usage.computed = u64::MAX;
    let msg = ledger.record(&r).await.unwrap_err().to_string();
    assert!(
        msg.contains("field `computed`") && msg.contains("rolled back"),
        "{msg}"
    );
    assert!(ledger.entries("req-range").await.unwrap().is_empty());

    let mut r = request("req-nan", T0);
    r[1].cost_usd = f64::NAN;
    let msg = ledger.record(&r).await.unwrap_err().to_string();
    assert!(msg.contains("field `cost_usd`"), "{msg}");
    assert!(ledger.entries("req-nan").await.unwrap().is_empty());

    let mut r = request("req-mixed", T0);
    r[3].request_id = "other".into();
    let msg = ledger.record(&r).await.unwrap_err().to_string();
    assert!(msg.contains("entry 3 has `other`"), "{msg}");
    assert!(ledger.entries("req-mixed").await.unwrap().is_empty());

    let s = ledger.summary(0).await.unwrap();
    assert_eq!(s.entries, 0);
    ledger.record(&request("req-ok", T0)).await.unwrap();
    assert_eq!(ledger.entries("req-ok").await.unwrap().len(), 4);
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("sub/ledger.db").display())
}

#[tokio::test]
async fn sqlite_records_reads_back_and_summarises() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::connect(&sqlite_url(&dir)).await.unwrap();
    an_empty_ledger_summarises_to_zeros(&ledger).await;
    records_reads_back_and_summarises(&ledger).await;
    // Connecting again finds the table and its rows.
    let again = Ledger::connect(&sqlite_url(&dir)).await.unwrap();
    assert_eq!(again.summary(0).await.unwrap().requests, 2);
}

#[tokio::test]
async fn sqlite_a_failure_midway_leaves_no_partial_request() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::connect(&sqlite_url(&dir)).await.unwrap();
    a_failure_midway_leaves_no_partial_request(&ledger).await;
}

#[tokio::test]
async fn sqlite_in_memory_works() {
    let ledger = Ledger::connect("sqlite::memory:").await.unwrap();
    records_reads_back_and_summarises(&ledger).await;
}

#[tokio::test]
async fn bad_urls_are_refused_with_the_url_and_no_password() {
    for (url, want) in [
        ("mysql://x", "expected sqlite://PATH"),
        ("sqlite://", "no file path"),
        ("sqlite:///tmp/x.db?mode=ro", "mode=ro"),
        ("postgres://me:secret@[::1", "postgres://me:***@"),
    ] {
        let e = Ledger::connect(url).await.unwrap_err().to_string();
        assert!(e.contains(want), "{url}: {e}");
        assert!(!e.contains("secret"), "{e}");
    }
}

mod postgres {
    use super::*;
    use sqlx::{Connection, Executor, PgConnection};

    fn unique(prefix: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{prefix}_{}_{nanos}", std::process::id())
    }

    /// `url` with its database replaced by `database`.
    fn with_database(url: &str, database: &str) -> String {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (url, String::new()),
        };
        let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
        let root = match base[after_scheme..].find('/') {
            Some(i) => &base[..after_scheme + i],
            None => base,
        };
        format!("{root}/{database}{query}")
    }

    /// Runs `body` on a ledger in a fresh database, then drops the database (also when
    /// `body` panics; the panic is then passed on).
    async fn on_fresh_database<F, Fut>(name: &str, body: F)
    where
        F: FnOnce(Ledger) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let Ok(url) = std::env::var("CAREFLOW_TEST_POSTGRES_URL") else {
            println!("skipped: set CAREFLOW_TEST_POSTGRES_URL=postgres://… to run the PostgreSQL ledger test `{name}`");
            return;
        };
        let database = unique("careflow_ledger");
        let mut admin = PgConnection::connect(&url)
            .await
            .expect("connect to PostgreSQL");
        admin
            .execute(format!("CREATE DATABASE {database}").as_str())
            .await
            .expect("create database");
        let ledger = Ledger::connect(&with_database(&url, &database))
            .await
            .unwrap();
        // Connecting twice creates nothing twice.
        let second = Ledger::connect(&with_database(&url, &database))
            .await
            .unwrap();
        second.close().await;
        let outcome = tokio::spawn(body(ledger.clone())).await;
        ledger.close().await;
        // A closed connection's server process may still be exiting: end it, then drop.
        let _ = sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&database)
        .execute(&mut admin)
        .await;
        let mut dropped = false;
        for _ in 0..50 {
            let drop = format!("DROP DATABASE IF EXISTS {database}");
            if admin.execute(drop.as_str()).await.is_ok() {
                dropped = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
        assert!(dropped, "could not drop the test database {database}");
    }

    #[tokio::test]
    async fn postgres_records_reads_back_and_summarises() {
        on_fresh_database("records_reads_back_and_summarises", |l| async move {
            an_empty_ledger_summarises_to_zeros(&l).await;
            records_reads_back_and_summarises(&l).await;
        })
        .await;
    }

    #[tokio::test]
    async fn postgres_a_failure_midway_leaves_no_partial_request() {
        on_fresh_database(
            "a_failure_midway_leaves_no_partial_request",
            |l| async move {
                a_failure_midway_leaves_no_partial_request(&l).await;
            },
        )
        .await;
    }
}
