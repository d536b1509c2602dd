//! PostgreSQL: runs when `CAREFLOW_TEST_POSTGRES_URL` names a database (e.g.
//! `postgres://careflow:careflow@localhost:5432/careflow_test`); otherwise says it skipped.
//! The same seed must give the same facts on PostgreSQL as on SQLite. The test works in a
//! schema of its own (search_path), dropped at the end, so it neither sees nor leaves data.

mod common;

use careflow_records::{Records, SYNTHEA_ZIP_SHA256, SYNTH_AS_OF};
use common::*;

#[tokio::test]
async fn postgres_init_synth_and_facts_match_sqlite() {
    let Ok(url) = std::env::var("CAREFLOW_TEST_POSTGRES_URL") else {
        println!("skipped: set CAREFLOW_TEST_POSTGRES_URL=postgres://… to run the PostgreSQL test");
        return;
    };
    let admin = sqlx::PgPool::connect(&url)
        .await
        .expect("connect to PostgreSQL");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let schema = format!("careflow_records_test_{}_{nanos}", std::process::id());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .expect("create schema");
    let separator = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{separator}options[search_path]={schema}");
    let outcome = tokio::spawn(exercise(scoped)).await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .expect("drop schema");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn exercise(url: String) {
    let pg = Records::connect(&url).await.expect("connect to PostgreSQL");
    pg.init().await.expect("init");
    pg.init().await.expect("init is idempotent");
    assert!(
        pg.counts()
            .await
            .expect("counts")
            .iter()
            .all(|(_, n)| *n == 0),
        "a fresh schema"
    );
    assert_eq!(pg.synth(50, 11, &quiet).await.expect("synth"), 50);
    let ids = pg.patients(i64::MAX).await.expect("patients");
    assert_eq!(ids.len(), 50);

    let dir = tempfile::tempdir().expect("tempdir");
    let lite = fresh_db(dir.path(), "same.db").await;
    lite.synth(50, 11, &quiet).await.expect("synth sqlite");
    let lite_ids = lite.patients(i64::MAX).await.expect("patients");
    assert_eq!(ids, lite_ids, "fresh databases number persons alike");
    for id in ids {
        let on_pg = pg
            .patient_facts(id, SYNTH_AS_OF)
            .await
            .expect("pg facts")
            .expect("known");
        let on_lite = lite
            .patient_facts(id, SYNTH_AS_OF)
            .await
            .expect("sqlite facts")
            .expect("known");
        assert_eq!(on_pg, on_lite);
        assert!(on_pg.age_years.is_some() && on_pg.sex.is_some());
    }

    // The sample loads on PostgreSQL too (twice: no duplicates).
    pg.load_omop_zip(&synthea_zip(), Some(SYNTHEA_ZIP_SHA256), &quiet)
        .await
        .expect("load");
    let counts = pg.counts().await.expect("counts");
    assert_eq!(counts[1], ("person".to_string(), 28 + 50));
    let synthetic_measurements = count(&lite, "measurement").await;
    assert_eq!(
        counts[6],
        ("measurement".to_string(), 10_040 + synthetic_measurements)
    );
    pg.load_omop_zip(&synthea_zip(), None, &quiet)
        .await
        .expect("load again");
    assert_eq!(pg.counts().await.expect("counts"), counts);
    let f = pg
        .patient_facts(careflow_core::PatientId(10), "2022-10-15")
        .await
        .expect("facts")
        .expect("person 10");
    assert!(f.diabetes && f.heart_disease && f.age_years == Some(51));
    let unknown = pg
        .patient_facts(careflow_core::PatientId(999), "2022-10-15")
        .await
        .expect("facts");
    assert_eq!(unknown, None);
}
