//! Loading the real Synthea OMOP sample and reading patient facts from it.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use careflow_core::PatientId;
use careflow_records::{Records, RecordsError, SYNTHEA_ZIP_SHA256};
use common::*;

const EXPECTED: [(&str, i64); 8] = [
    ("concept", 2_294),
    ("person", 28),
    ("visit_occurrence", 1_791),
    ("condition_occurrence", 470),
    ("drug_exposure", 883),
    ("procedure_occurrence", 1_649),
    ("measurement", 10_040),
    ("observation", 8_099),
];

fn expected_counts() -> Vec<(String, i64)> {
    EXPECTED.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

#[tokio::test]
async fn loads_the_sample_with_the_documented_row_counts_and_loading_twice_keeps_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = fresh_db(dir.path(), "records.db").await;
    let calls = Mutex::new(Vec::new());
    let started = Instant::now();
    let report = records
        .load_omop_zip(&synthea_zip(), Some(SYNTHEA_ZIP_SHA256), &|done, total| {
            calls.lock().expect("lock").push((done, total))
        })
        .await
        .expect("load");
    println!(
        "loaded the Synthea zip in {:.2?}: {report:?}",
        started.elapsed()
    );
    assert_eq!(report.persons, 28);
    let reported: Vec<(String, i64)> = report
        .rows_per_table
        .iter()
        .map(|(t, n)| (t.clone(), *n as i64))
        .collect();
    assert_eq!(reported, expected_counts());
    assert_eq!(records.counts().await.expect("counts"), expected_counts());

    let calls = calls.into_inner().expect("lock");
    let total: u64 = EXPECTED.iter().map(|(_, n)| *n as u64).sum();
    assert_eq!(calls.first(), Some(&(0, total)));
    assert_eq!(calls.last(), Some(&(total, total)));
    assert!(
        calls.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress never goes back"
    );
    assert!(calls.len() > 8, "progress is reported as rows are written");

    // Again, without the checksum: same counts, nothing duplicated.
    records
        .load_omop_zip(&synthea_zip(), None, &quiet)
        .await
        .expect("second load");
    assert_eq!(records.counts().await.expect("counts"), expected_counts());

    // A second connection to the same file sees the same data (it is on disk).
    let again = Records::connect(&sqlite_url(dir.path(), "records.db"))
        .await
        .expect("reconnect");
    assert_eq!(again.patients(100).await.expect("patients").len(), 28);
    assert_eq!(
        again.patients(3).await.expect("patients"),
        vec![PatientId(1), PatientId(2), PatientId(3)]
    );
}

#[tokio::test]
async fn a_wrong_checksum_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = fresh_db(dir.path(), "records.db").await;
    let wrong = "0".repeat(64);
    let err = records
        .load_omop_zip(&synthea_zip(), Some(&wrong), &quiet)
        .await
        .expect_err("must refuse");
    match &err {
        RecordsError::Sha256Mismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual, SYNTHEA_ZIP_SHA256);
        }
        other => panic!("expected a sha256 mismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    assert!(records
        .counts()
        .await
        .expect("counts")
        .iter()
        .all(|(_, n)| *n == 0));

    let missing = dir.path().join("nope.zip");
    let err = records
        .load_omop_zip(&missing, None, &quiet)
        .await
        .expect_err("no file");
    assert!(matches!(err, RecordsError::FileNotFound { .. }), "{err:?}");
}

/// person_id → condition names, read straight from the zip's CSVs.
fn conditions_in_zip() -> HashMap<i64, HashSet<String>> {
    let file = std::fs::File::open(synthea_zip()).expect("zip");
    let mut zip = zip::ZipArchive::new(file).expect("archive");
    let mut read = |name: &str| {
        let mut text = String::new();
        zip.by_name(name)
            .expect(name)
            .read_to_string(&mut text)
            .expect("read");
        text
    };
    let concepts: HashMap<String, String> =
        csv::Reader::from_reader(read("CONCEPT.csv").as_bytes())
            .records()
            .map(|r| {
                let r = r.expect("concept row");
                (r[0].to_string(), r[1].to_string())
            })
            .collect();
    let mut out: HashMap<i64, HashSet<String>> = HashMap::new();
    for r in csv::Reader::from_reader(read("CONDITION_OCCURRENCE.csv").as_bytes()).records() {
        let r = r.expect("condition row");
        out.entry(r[1].parse().expect("person id"))
            .or_default()
            .insert(concepts[&r[2]].clone());
    }
    out
}

#[tokio::test]
async fn patient_facts_describe_one_patient_and_only_that_patient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = fresh_db(dir.path(), "records.db").await;
    records
        .load_omop_zip(&synthea_zip(), Some(SYNTHEA_ZIP_SHA256), &quiet)
        .await
        .expect("load");
    let today = "2022-10-15";

    // Person 10: a man born in 1971 with type 2 diabetes and coronary disease.
    let f = records
        .patient_facts(PatientId(10), today)
        .await
        .expect("facts")
        .expect("known");
    println!("{}", f.summary());
    assert_eq!(f.patient_id, Some(10));
    assert_eq!(f.sex.as_deref(), Some("male"));
    assert_eq!(f.age_years, Some(51));
    assert!(f.diabetes && f.heart_disease, "{f:?}");
    assert!(!f.pregnant);
    assert!(!f.conditions.is_empty() && f.conditions.len() <= 15);
    assert!(!f.medications.is_empty() && f.medications.len() <= 15);
    assert!((1..=10).contains(&f.measurements.len()));
    assert!(
        f.measurements
            .iter()
            .all(|m| m.ends_with(')') && m.contains(" (20")),
        "{:?}",
        f.measurements
    );
    assert!(
        f.summary()
            .contains("Risk factors: diabetes, heart disease"),
        "{}",
        f.summary()
    );

    // Person 27 was born in 2022: an infant, counted in months.
    let baby = records
        .patient_facts(PatientId(27), today)
        .await
        .expect("facts")
        .expect("known");
    assert_eq!(baby.age_years, Some(0));
    assert!(baby.age_months.is_some_and(|m| m < 12), "{baby:?}");

    // Pregnancy is a flag of its time: person 16 was pregnant from 2019-06 to 2020-01.
    let during = records
        .patient_facts(PatientId(16), "2019-10-01")
        .await
        .expect("facts")
        .expect("known");
    assert!(during.pregnant && during.sex.as_deref() == Some("female"));
    let after = records
        .patient_facts(PatientId(16), "2020-03-01")
        .await
        .expect("facts")
        .expect("known");
    assert!(!after.pregnant);

    assert_eq!(
        records
            .patient_facts(PatientId(999_999), today)
            .await
            .expect("facts"),
        None
    );
    assert!(matches!(
        records.patient_facts(PatientId(10), "15/10/2022").await,
        Err(RecordsError::BadDate(_))
    ));

    // Every person's facts hold only their own conditions (checked against the CSV).
    let truth = conditions_in_zip();
    let none = HashSet::new();
    for id in records.patients(100).await.expect("patients") {
        let facts = records
            .patient_facts(id, today)
            .await
            .expect("facts")
            .expect("known");
        let own = truth.get(&id.0).unwrap_or(&none);
        for c in &facts.conditions {
            assert!(
                own.contains(c),
                "patient {id}: `{c}` is not in their record"
            );
        }
        assert_eq!(facts.conditions.is_empty(), own.is_empty(), "patient {id}");
    }
    // Two people with different histories: the child (2) and the diabetic man (10).
    let child = records
        .patient_facts(PatientId(2), today)
        .await
        .expect("facts")
        .expect("known");
    assert_eq!(child.sex.as_deref(), Some("female"));
    let only_10: Vec<&String> = f
        .conditions
        .iter()
        .filter(|c| !truth[&2].contains(*c))
        .collect();
    assert!(only_10.iter().any(|c| c.contains("diabetes")));
    assert!(
        child.conditions.iter().all(|c| !only_10.contains(&c)),
        "{:?}",
        child.conditions
    );
    assert!(!child.diabetes && !child.heart_disease);
}

#[tokio::test]
async fn the_records_futures_can_move_between_threads() {
    fn assert_send<T: Send>(_: &T) {}
    let records = Records::connect("sqlite::memory:").await.expect("connect");
    records.init().await.expect("init");
    let seen = AtomicU64::new(0);
    let progress = |done: u64, _total: u64| seen.store(done, Ordering::Relaxed);
    let path = synthea_zip();
    let load = records.load_omop_zip(&path, None, &progress);
    assert_send(&load);
    let synth = records.synth(1, 1, &progress);
    assert_send(&synth);
    let facts = records.patient_facts(PatientId(1), "2022-01-01");
    assert_send(&facts);
    drop((load, synth, facts));
    // In-memory databases keep their one connection: tables survive between calls.
    records
        .synth(3, 1, &progress)
        .await
        .expect("synth in memory");
    assert_eq!(count(&records, "person").await, 3);
    assert_eq!(seen.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn urls_name_their_problem() {
    for bad in [
        "mysql://x",
        "sqlite://",
        "sqlite:///tmp/x.db?cache=shared",
        "postgres://user@host:notaport/db",
    ] {
        match Records::connect(bad).await {
            Err(RecordsError::BadUrl { url, .. }) => assert_eq!(url, bad),
            other => panic!("{bad}: expected BadUrl, got {other:?}"),
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let nested = dir.path().join("a/b/records.db");
    let records = Records::connect(&format!("sqlite://{}", nested.display()))
        .await
        .expect("connect");
    records.init().await.expect("init");
    records.init().await.expect("init is idempotent");
    assert!(nested.exists());
}
