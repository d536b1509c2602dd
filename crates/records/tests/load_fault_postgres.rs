//! "Database down mid-load" on PostgreSQL, with a real fault: while the loader is writing,
//! a second connection terminates the loader's backend (`pg_terminate_backend`). The load
//! must fail with a clear error and leave every table as it was: empty in a fresh
//! database, and the previous rows (with an edit made after the first load) untouched in
//! one that already holds the sample.
//!
//! Runs when `CAREFLOW_TEST_POSTGRES_URL` names a server (scripts/test.sh starts a
//! throwaway one and sets it); otherwise says it skipped. It works in a database of its own
//! (created and dropped here), so that the loader's backend is the only one writing there.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use careflow_records::{Records, RecordsError, SYNTHEA_ZIP_SHA256};
use common::*;
use sqlx::{Executor, PgPool};

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// The URL with `database` in place of its database.
fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next().unwrap_or(before_query);
    let mut out = format!("{scheme}://{authority}/{database}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_load_killed_mid_write_leaves_the_database_as_it_was() {
    let Ok(url) = std::env::var("CAREFLOW_TEST_POSTGRES_URL") else {
        println!("skipped: set CAREFLOW_TEST_POSTGRES_URL=postgres://… to run the PostgreSQL load-fault test");
        return;
    };
    let admin = PgPool::connect(&url).await.expect("connect to PostgreSQL");
    let database = unique("careflow_load_fault");
    admin
        .execute(format!("CREATE DATABASE {database}").as_str())
        .await
        .expect("create database");
    let outcome = tokio::spawn(exercise(
        with_database(&url, &database),
        database.clone(),
        admin.clone(),
    ))
    .await;
    // Close whatever is still connected there, then drop it.
    let _ = sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&database)
    .execute(&admin)
    .await;
    let mut dropped = false;
    for _ in 0..50 {
        if admin
            .execute(format!("DROP DATABASE IF EXISTS {database}").as_str())
            .await
            .is_ok()
        {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    assert!(dropped, "drop database {database}");
}

/// What the test compares before and after a failed load: rows per table, and two values
/// an operator edited after the first load (which a load that committed any of its tables
/// would have overwritten).
#[derive(Debug, PartialEq)]
struct Snapshot {
    counts: Vec<(String, i64)>,
    first_concept_name: Option<String>,
    person_1_year_of_birth: Option<i64>,
}

async fn snapshot(pg: &Records, raw: &PgPool) -> Snapshot {
    Snapshot {
        counts: pg.counts().await.expect("counts"),
        first_concept_name: sqlx::query_scalar(
            "SELECT concept_name FROM concept ORDER BY concept_id LIMIT 1",
        )
        .fetch_optional(raw)
        .await
        .expect("concept name"),
        person_1_year_of_birth: sqlx::query_scalar(
            "SELECT year_of_birth::bigint FROM person WHERE person_id = 1",
        )
        .fetch_optional(raw)
        .await
        .expect("year of birth"),
    }
}

/// Loads the sample into `pg`; once about half its rows are written (the first tables
/// are done, the loader is inside `measurement`), the progress callback hands over to a
/// second connection that terminates the loader's backend and waits until it is gone;
/// then the load goes on, against a dead connection. Returns the load's error.
async fn load_and_kill(pg: &Records, admin: &PgPool, database: &str) -> RecordsError {
    let (to_killer, killer_rx) = mpsc::channel::<()>();
    let (to_loader, loader_rx) = mpsc::channel::<Result<i32, String>>();
    let loader_rx = std::sync::Mutex::new(loader_rx);
    let to_killer = std::sync::Mutex::new(to_killer);
    let admin = admin.clone();
    let db = database.to_string();
    let killer = tokio::spawn(async move {
        let Ok(()) = tokio::task::spawn_blocking(move || killer_rx.recv())
            .await
            .expect("join")
        else {
            return None; // the load ended without calling for the fault
        };
        let outcome = async {
            // The loader's backend is the one of this database with a transaction id: it
            // has written rows.
            let pids: Vec<i32> = sqlx::query_scalar(
                "SELECT pid FROM pg_stat_activity \
                 WHERE datname = $1 AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()",
            )
            .bind(&db)
            .fetch_all(&admin)
            .await
            .map_err(|e| e.to_string())?;
            let [pid] = pids[..] else {
                return Err(format!("expected one writing backend, found {pids:?}"));
            };
            let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .fetch_one(&admin)
                .await
                .map_err(|e| e.to_string())?;
            if !killed {
                return Err(format!("pg_terminate_backend({pid}) returned false"));
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let alive: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
                )
                .bind(pid)
                .fetch_one(&admin)
                .await
                .map_err(|e| e.to_string())?;
                if !alive {
                    return Ok(pid);
                }
                if Instant::now() > deadline {
                    return Err(format!("backend {pid} still alive 10 s after termination"));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        .await;
        let _ = to_loader.send(outcome.clone());
        Some(outcome)
    });

    let fired = AtomicBool::new(false);
    let progress = |done: u64, total: u64| {
        if done * 2 >= total && done < total && !fired.swap(true, Ordering::SeqCst) {
            // Blocks the loader (a test: the other worker thread runs the killer) until
            // its backend is gone, so the fault lands mid-load every time.
            if let (Ok(tx), Ok(rx)) = (to_killer.lock(), loader_rx.lock()) {
                let _ = tx.send(());
                let _ = rx.recv_timeout(Duration::from_secs(30));
            }
        }
    };
    let started = Instant::now();
    let result = pg
        .load_omop_zip(&synthea_zip(), Some(SYNTHEA_ZIP_SHA256), &progress)
        .await;
    let took = started.elapsed();
    drop(to_killer);
    let killed = killer.await.expect("killer task");
    match killed {
        Some(Ok(pid)) => println!("terminated the loader's backend {pid}"),
        Some(Err(e)) => panic!("the fault was not injected: {e}"),
        None => panic!("the load never reached half its rows"),
    }
    let err = result.expect_err("the load must fail once its backend is terminated");
    println!("load failed after {took:.2?} with: {err}");
    err
}

async fn exercise(url: String, database: String, admin: PgPool) {
    let pg = Records::connect(&url).await.expect("connect");
    pg.init().await.expect("init");
    let raw = PgPool::connect(&url).await.expect("raw pool");

    // 1. A fresh database: the failed load leaves every table empty.
    let empty = snapshot(&pg, &raw).await;
    assert!(empty.counts.iter().all(|(_, n)| *n == 0), "{empty:?}");
    let err = load_and_kill(&pg, &admin, &database).await;
    assert_clear(&err);
    assert_eq!(
        snapshot(&pg, &raw).await,
        empty,
        "a failed load leaves a fresh database empty"
    );

    // The database (and the pool, which lost a connection) still work: a clean load.
    let started = Instant::now();
    let report = pg
        .load_omop_zip(&synthea_zip(), Some(SYNTHEA_ZIP_SHA256), &quiet)
        .await
        .expect("a clean load after the failed one");
    println!("clean load on PostgreSQL took {:.2?}", started.elapsed());
    assert_eq!(report.persons, 28);

    // 2. A database that holds the sample, edited since: the failed load changes nothing.
    for sql in [
        "UPDATE concept SET concept_name = 'edited after the first load' \
         WHERE concept_id = (SELECT min(concept_id) FROM concept)",
        "UPDATE person SET year_of_birth = 1900 WHERE person_id = 1",
        "DELETE FROM visit_occurrence WHERE person_id = 2",
    ] {
        raw.execute(sql).await.expect("edit");
    }
    let before = snapshot(&pg, &raw).await;
    assert_eq!(
        before.first_concept_name.as_deref(),
        Some("edited after the first load")
    );
    assert_eq!(before.person_1_year_of_birth, Some(1900));
    let err = load_and_kill(&pg, &admin, &database).await;
    assert_clear(&err);
    assert_eq!(
        snapshot(&pg, &raw).await,
        before,
        "a failed load leaves the previous rows as they were"
    );
    raw.close().await;
}

/// The error says what happened: the load was rolled back, and why (the connection).
fn assert_clear(err: &RecordsError) {
    let text = err.to_string();
    assert!(
        matches!(err, RecordsError::RolledBack { .. }),
        "expected a rolled-back load, got {err:?}"
    );
    assert!(text.contains("rolled back"), "{text}");
}
