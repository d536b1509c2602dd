//! The SQL guard and row-level security on PostgreSQL: runs when
//! `CAREFLOW_TEST_POSTGRES_URL` names a database (scripts/test.sh starts a throwaway server
//! and sets it); otherwise says it skipped. Like tests/postgres.rs it works in a schema of
//! its own (search_path) and drops it at the end.
//!
//! Checked: the adversarial suite through `query_scoped`; row-level security alone (raw
//! SQL as `careflow_reader`, no guard); FORCE for a non-superuser table owner; the SQL dev
//! set answering as on SQLite.

mod attacks;
mod common;
mod sqldev;

use std::collections::BTreeMap;

use attacks::*;
use careflow_core::PatientId;
use careflow_records::{GuardPolicy, Records, RecordsError, SYNTHEA_ZIP_SHA256};
use common::*;
use sqlx::{Executor, PgPool};

const POLICY: GuardPolicy = GuardPolicy {
    max_limit: 200,
    statement_timeout_ms: 1_000,
};

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// The URL with `user` in place of its user (and no password: the throwaway server trusts).
fn with_user(url: &str, user: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{user}@{host}{}", &rest[end..])
}

fn with_search_path(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options[search_path]={schema}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_guard_rls_and_dev_set() {
    let Ok(url) = std::env::var("CAREFLOW_TEST_POSTGRES_URL") else {
        println!("skipped: set CAREFLOW_TEST_POSTGRES_URL=postgres://… to run the PostgreSQL guard tests");
        return;
    };
    let admin = PgPool::connect(&url).await.expect("connect to PostgreSQL");
    let schema = unique("careflow_guard_test");
    admin
        .execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .expect("create schema");
    let outcome = tokio::spawn(exercise(with_search_path(&url, &schema))).await;
    let owner_outcome = tokio::spawn(forced_for_a_plain_owner(url.clone(), admin.clone())).await;
    admin
        .execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
        .await
        .expect("drop schema");
    for o in [outcome, owner_outcome] {
        if let Err(e) = o {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

async fn own(raw: &PgPool, patient: i64) -> BTreeMap<String, i64> {
    own_counts(|t| {
        let raw = raw.clone();
        async move {
            sqlx::query_scalar(&format!("SELECT count(*) FROM {t} WHERE person_id = $1"))
                .bind(patient)
                .fetch_one(&raw)
                .await
                .expect("own count")
        }
    })
    .await
}

async fn exercise(url: String) {
    let pg = Records::connect(&url).await.expect("connect");
    pg.init().await.expect("init");
    pg.init().await.expect("init is idempotent");
    pg.load_omop_zip(&synthea_zip(), Some(SYNTHEA_ZIP_SHA256), &quiet)
        .await
        .expect("load");
    let raw = PgPool::connect(&url).await.expect("raw pool");
    let before = pg.counts().await.expect("counts");

    for (patient, other) in [(11, 7), (15, 10)] {
        let own = own(&raw, patient).await;
        let tally = run_suite(&pg, PatientId(patient), PatientId(other), &own, &POLICY).await;
        println!(
            "postgres patient {patient}: {} attempts: {} rejected, {} ran ({} rows, none foreign), \
             {} failed in the database, {} stopped by the timeout; slowest {:?}",
            tally.attempts, tally.rejected, tally.ran, tally.rows_seen, tally.failed,
            tally.timed_out, tally.slowest
        );
        for (sql, took, how) in &tally.bombs {
            println!("  bomb {took:>10.3?} {how}: {sql}");
        }
        assert!(tally.attempts >= 200);
        for sql in LEGIT {
            let r = pg
                .query_scoped(PatientId(patient), sql, &GuardPolicy::default())
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            check_rows(&r, PatientId(patient), sql);
        }
    }
    assert_eq!(
        pg.counts().await.expect("counts"),
        before,
        "nothing was written"
    );

    // An unknown patient is a clear, typed error (not zero rows).
    for id in [999_999, 0, -1] {
        let err = pg
            .query_scoped(PatientId(id), "SELECT count(*) FROM measurement", &POLICY)
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
    let r = pg
        .query_scoped(PatientId(15), "SELECT count(*) FROM drug_exposure", &POLICY)
        .await
        .expect("a known patient with no drugs");
    assert_eq!(r.rows[0][0].as_i64(), Some(0));

    // Row-level security alone: raw SQL, no guard, as careflow_reader.
    let own11 = own(&raw, 11).await;
    let mut tx = raw.begin().await.expect("begin");
    (&mut *tx).execute(sqlx::raw_sql(
        "SET TRANSACTION READ ONLY; SET LOCAL careflow.patient_id = '11'; SET LOCAL ROLE careflow_reader",
    ))
    .await
    .expect("become the reader");
    for t in PATIENT_TABLES {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t}"))
            .fetch_one(&mut *tx)
            .await
            .expect("count");
        assert_eq!(n, own11[t], "RLS on {t}");
    }
    let concepts: i64 = sqlx::query_scalar("SELECT count(*) FROM concept")
        .fetch_one(&mut *tx)
        .await
        .expect("concepts");
    assert!(concepts > 1_000, "concept is not patient data: {concepts}");
    tx.rollback().await.expect("rollback");

    // The reader with no patient set sees no rows; it cannot write or read the catalog's secrets.
    let mut tx = raw.begin().await.expect("begin");
    (&mut *tx)
        .execute("SET LOCAL ROLE careflow_reader")
        .await
        .expect("role");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM measurement")
        .fetch_one(&mut *tx)
        .await
        .expect("count");
    assert_eq!(n, 0, "no patient set: no rows");
    let write = (&mut *tx).execute("DELETE FROM concept").await;
    assert!(write.is_err(), "the reader cannot write");
    tx.rollback().await.expect("rollback");
    let mut tx = raw.begin().await.expect("begin");
    (&mut *tx)
        .execute("SET LOCAL ROLE careflow_reader")
        .await
        .expect("role");
    assert!((&mut *tx).execute("SELECT * FROM pg_authid").await.is_err());
    tx.rollback().await.expect("rollback");

    // The SQL dev set answers on PostgreSQL as on SQLite (rows compared as multisets:
    // string collation may order ties differently).
    let failures = sqldev::run(&pg, false).await;
    assert!(
        failures.is_empty(),
        "dev set on PostgreSQL:\n{}",
        failures.join("\n")
    );
}

/// A plain (non-superuser) role owns the tables and loads them; FORCE ROW LEVEL SECURITY
/// holds it to the patient too once `careflow.patient_id` is set, and `query_scoped` works
/// for it (it is a member of careflow_reader, granted by the administrator).
async fn forced_for_a_plain_owner(url: String, admin: PgPool) {
    let role = unique("careflow_owner");
    let schema = format!("{role}_s");
    for sql in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("CREATE SCHEMA {schema} AUTHORIZATION {role}"),
    ] {
        admin.execute(sql.as_str()).await.expect("setup");
    }
    // careflow_reader exists by now (the other migration made it); the owner joins it.
    admin
        .execute(format!("GRANT careflow_reader TO {role}").as_str())
        .await
        .expect("grant the reader role");
    let as_owner = with_search_path(&with_user(&url, &role), &schema);
    let result = async move {
        let Ok(pg) = Records::connect(&as_owner).await else {
            println!("skipped the plain-owner check: cannot log in as a new role (password authentication?)");
            return;
        };
        pg.init().await.expect("init as the owner");
        pg.load_omop_zip(&synthea_zip(), None, &quiet)
            .await
            .expect("load as the owner");
        let raw = PgPool::connect(&as_owner).await.expect("raw");
        let all: i64 = sqlx::query_scalar("SELECT count(*) FROM person")
            .fetch_one(&raw)
            .await
            .expect("count");
        assert_eq!(all, 28, "the owner sees everything while no patient is set");
        let mut tx = raw.begin().await.expect("begin");
        (&mut *tx)
            .execute("SET LOCAL careflow.patient_id = '11'")
            .await
            .expect("set");
        let scoped: i64 = sqlx::query_scalar("SELECT count(*) FROM person")
            .fetch_one(&mut *tx)
            .await
            .expect("count");
        assert_eq!(
            scoped, 1,
            "FORCE: the owner is scoped once a patient is set"
        );
        tx.rollback().await.expect("rollback");
        let r = pg
            .query_scoped(PatientId(11), "SELECT count(*) FROM measurement", &POLICY)
            .await
            .expect("query_scoped as the owner");
        assert_eq!(
            r.rows[0][0].as_i64(),
            Some(own(&raw, 11).await["measurement"])
        );
        let after: i64 = sqlx::query_scalar("SELECT count(*) FROM person")
            .fetch_one(&raw)
            .await
            .expect("count");
        assert_eq!(after, 28, "the setting ended with the transaction");
        raw.close().await;
        drop(pg);
    };
    let outcome = tokio::spawn(result).await;
    for sql in [
        format!("DROP SCHEMA {schema} CASCADE"),
        format!("DROP OWNED BY {role}"),
        format!("DROP ROLE {role}"),
    ] {
        let _ = admin.execute(sql.as_str()).await;
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
