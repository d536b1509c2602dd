//! The SQL guard and the patient scope on SQLite: the adversarial suite (for two persons
//! with different data), legitimate questions, the timeout of resource bombs, and the
//! connection handed back writable afterwards.

mod attacks;
mod common;

use std::time::{Duration, Instant};

use attacks::*;
use careflow_core::PatientId;
use careflow_records::{
    guard_sql, Backend, GuardPolicy, Records, RecordsError, SYNTHEA_ZIP_SHA256,
};
use common::*;

const POLICY: GuardPolicy = GuardPolicy {
    max_limit: 200,
    statement_timeout_ms: 1_000,
};

async fn loaded(dir: &std::path::Path) -> (Records, sqlx::SqlitePool) {
    let records = fresh_db(dir, "guard.db").await;
    records
        .load_omop_zip(&synthea_zip(), Some(SYNTHEA_ZIP_SHA256), &quiet)
        .await
        .expect("load the sample");
    let raw = sqlx::SqlitePool::connect(&sqlite_url(dir, "guard.db"))
        .await
        .expect("raw connection");
    (records, raw)
}

async fn own(raw: &sqlx::SqlitePool, patient: i64) -> std::collections::BTreeMap<String, i64> {
    own_counts(|t| {
        let raw = raw.clone();
        async move {
            sqlx::query_scalar(&format!("SELECT count(*) FROM {t} WHERE person_id = ?"))
                .bind(patient)
                .fetch_one(&raw)
                .await
                .expect("own count")
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_adversarial_suite_returns_no_foreign_rows_and_stays_in_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (records, raw) = loaded(dir.path()).await;
    let before = records.counts().await.expect("counts");
    // Person 11 has the most data (1,326 measurements); person 15 has no conditions or
    // drugs at all: two persons with different data, each attacked towards another.
    for (patient, other) in [(11, 7), (15, 10)] {
        let own = own(&raw, patient).await;
        let tally = run_suite(
            &records,
            PatientId(patient),
            PatientId(other),
            &own,
            &POLICY,
        )
        .await;
        println!(
            "sqlite patient {patient}: {} attempts: {} rejected, {} ran ({} rows, none foreign), \
             {} failed in the database, {} stopped by the timeout; slowest {:?}",
            tally.attempts,
            tally.rejected,
            tally.ran,
            tally.rows_seen,
            tally.failed,
            tally.timed_out,
            tally.slowest
        );
        println!("  families: {:?}", tally.families);
        for (sql, took, how) in &tally.bombs {
            println!("  bomb {took:>10.3?} {how}: {sql}");
        }
        assert!(tally.attempts >= 200, "{} attempts", tally.attempts);
        assert!(tally.rejected > 100 && tally.ran > 50, "{tally:?}");
    }
    // Nothing was written, and the pooled connections are writable again (query_only and
    // the progress handler were reset): loading again works and changes nothing.
    assert_eq!(records.counts().await.expect("counts"), before);
    records
        .load_omop_zip(&synthea_zip(), None, &quiet)
        .await
        .expect("still writable after the suite");
    assert_eq!(records.counts().await.expect("counts"), before);
}

#[tokio::test]
async fn legitimate_questions_answer_for_the_patient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (records, raw) = loaded(dir.path()).await;
    for patient in [11, 15, 10] {
        let own = own(&raw, patient).await;
        for sql in LEGIT {
            let r = records
                .query_scoped(PatientId(patient), sql, &GuardPolicy::default())
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            check_rows(&r, PatientId(patient), sql);
            assert!(!r.columns.is_empty(), "{sql}");
        }
        let conditions = records
            .query_scoped(PatientId(patient), LEGIT[0], &GuardPolicy::default())
            .await
            .expect("conditions");
        assert_eq!(conditions.rows.len() as i64, own["condition_occurrence"]);
        assert_eq!(
            conditions.columns,
            ["concept_name", "condition_start_date", "condition_end_date"]
        );
        let person = records
            .query_scoped(
                PatientId(patient),
                "SELECT * FROM person",
                &GuardPolicy::default(),
            )
            .await
            .expect("person");
        assert_eq!(person.rows.len(), 1);
        assert_eq!(person.rows[0][0].as_i64(), Some(patient));
    }
    // Patient 10: named conditions joined with concept, newest first.
    let r = records
        .query_scoped(PatientId(10), LEGIT[0], &GuardPolicy::default())
        .await
        .expect("conditions of 10");
    assert!(r.rows.iter().all(|row| row[0].is_string()), "{r:?}");
    // The limit is applied: 1,326 measurements of person 11, at most 200 rows back.
    let r = records
        .query_scoped(
            PatientId(11),
            "SELECT * FROM measurement",
            &GuardPolicy::default(),
        )
        .await
        .expect("measurements");
    assert_eq!(r.rows.len(), 200);
    assert!(
        r.sql_run.ends_with("SELECT * FROM measurement LIMIT 200"),
        "{}",
        r.sql_run
    );
    // An unknown patient is a clear, typed error (not zero rows); SQL the guard refuses is
    // refused first, whoever the patient; a patient with no rows in a table still gets
    // zero rows from it.
    for id in [999_999, 0, -1, i64::MAX] {
        let err = records
            .query_scoped(
                PatientId(id),
                "SELECT count(*) FROM measurement",
                &GuardPolicy::default(),
            )
            .await
            .expect_err("unknown patient");
        assert!(
            matches!(err, RecordsError::UnknownPatient(p) if p == id),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("patient {id} is not in the records database")
        );
    }
    let err = records
        .query_scoped(
            PatientId(999_999),
            "DELETE FROM person",
            &GuardPolicy::default(),
        )
        .await
        .expect_err("refused");
    assert!(matches!(err, RecordsError::Rejected { .. }), "{err:?}");
    let r = records
        .query_scoped(
            PatientId(15),
            "SELECT count(*) FROM drug_exposure",
            &GuardPolicy::default(),
        )
        .await
        .expect("a known patient with no drugs");
    assert_eq!(r.rows, vec![vec![serde_json::json!(0)]]);
}

#[tokio::test]
async fn a_cartesian_bomb_is_stopped_at_the_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (records, _raw) = loaded(dir.path()).await;
    let sql = "SELECT count(*) FROM measurement a, measurement b, measurement c, measurement d";
    for ms in [200, 1_000] {
        let policy = GuardPolicy {
            statement_timeout_ms: ms,
            ..GuardPolicy::default()
        };
        let started = Instant::now();
        let err = records
            .query_scoped(PatientId(11), sql, &policy)
            .await
            .expect_err("a bomb");
        let took = started.elapsed();
        println!("bomb with a {ms} ms timeout: stopped after {took:?}");
        assert!(
            matches!(err, RecordsError::Timeout { ms: m } if m == ms),
            "{err}"
        );
        assert!(
            took >= Duration::from_millis(ms) && took < Duration::from_millis(ms + 500),
            "{took:?}"
        );
    }
    // The same connection answers at once afterwards.
    let r = records
        .query_scoped(PatientId(11), "SELECT count(*) FROM person", &POLICY)
        .await
        .expect("after the bomb");
    assert_eq!(r.rows, vec![vec![serde_json::json!(1)]]);
}

#[tokio::test]
async fn an_in_memory_database_is_scoped_and_stays_writable() {
    let records = Records::connect("sqlite::memory:").await.expect("memory");
    records.init().await.expect("init");
    records.synth(3, 5, &quiet).await.expect("synth");
    let ids = records.patients(10).await.expect("patients");
    for id in &ids {
        let r = records
            .query_scoped(*id, "SELECT person_id FROM person", &POLICY)
            .await
            .expect("scoped");
        assert_eq!(r.rows, vec![vec![serde_json::json!(id.0)]]);
        let err = records
            .query_scoped(*id, "DELETE FROM person", &POLICY)
            .await
            .expect_err("refused");
        assert!(matches!(err, RecordsError::Rejected { .. }), "{err}");
    }
    // The one connection of the in-memory pool was handed back writable.
    records.synth(2, 6, &quiet).await.expect("synth again");
    assert_eq!(records.patients(10).await.expect("patients").len(), 5);
}

/// Without any database: every attempt that must be refused is refused by the guard in
/// both dialects, with a reason; whatever passes carries all seven scope CTEs first.
#[test]
fn every_refusal_holds_in_both_dialects_without_a_database() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (mut refused, mut passed) = (0, 0);
        for attempt in attempts(7) {
            match guard_sql(&attempt.sql, backend, &POLICY) {
                Err(RecordsError::Rejected { reason }) => {
                    assert!(!reason.is_empty());
                    refused += 1;
                }
                Err(e) => panic!("{backend:?} {:?}: {e}", attempt.sql),
                Ok(sql) => {
                    assert_ne!(
                        attempt.expect,
                        Expect::Reject,
                        "{backend:?} let through {:?} as {sql}",
                        attempt.sql
                    );
                    for t in PATIENT_TABLES {
                        let scope = match backend {
                            Backend::Sqlite => {
                                format!("{t} AS (SELECT * FROM main.{t} WHERE person_id = ?1)")
                            }
                            Backend::Postgres => {
                                format!("{t} AS (SELECT * FROM {t} WHERE person_id = $1)")
                            }
                        };
                        assert!(sql.contains(&scope), "{sql}");
                    }
                    assert!(sql.starts_with("WITH person AS ("), "{sql}");
                    passed += 1;
                }
            }
        }
        println!("{backend:?}: {refused} refused by the guard, {passed} passed it");
    }
}
