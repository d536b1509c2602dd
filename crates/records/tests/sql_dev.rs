//! The SQL dev set on SQLite: every reference SQL, run through the guard and the patient
//! scope on the bundled sample, gives the rows the per-patient oracle computed.

mod common;
mod sqldev;

use std::collections::BTreeSet;

use careflow_records::{guard_sql, Backend, GuardPolicy, SYNTHEA_ZIP_SHA256};
use common::*;

#[test]
fn the_dev_set_is_well_formed() {
    let items = sqldev::items();
    assert!(items.len() >= 50, "{} items", items.len());
    let ids: BTreeSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids.len(), items.len(), "ids are unique");
    let patients: BTreeSet<i64> = items.iter().map(|i| i.patient_id).collect();
    assert!(patients.len() >= 5, "{patients:?}");
    for item in &items {
        assert!(!item.question.trim().is_empty(), "{}", item.id);
        assert!(
            item.expected_rows.is_some() || item.expected_count.is_some(),
            "{}",
            item.id
        );
        for backend in [Backend::Sqlite, Backend::Postgres] {
            guard_sql(&item.sql, backend, &GuardPolicy::default())
                .unwrap_or_else(|e| panic!("{} on {backend:?}: {e}", item.id));
        }
    }
}

#[tokio::test]
async fn the_dev_set_answers_through_the_guard_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = fresh_db(dir.path(), "dev.db").await;
    records
        .load_omop_zip(&synthea_zip(), Some(SYNTHEA_ZIP_SHA256), &quiet)
        .await
        .expect("load");
    // `make_sql_dev.py` reads this database: keep a copy when asked.
    if let Ok(out) = std::env::var("CAREFLOW_SQL_DEV_DB_OUT") {
        let raw = sqlx::SqlitePool::connect(&sqlite_url(dir.path(), "dev.db"))
            .await
            .expect("raw connection");
        sqlx::query("VACUUM INTO ?")
            .bind(out)
            .execute(&raw)
            .await
            .expect("copy the database");
    }
    let failures = sqldev::run(&records, true).await;
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
