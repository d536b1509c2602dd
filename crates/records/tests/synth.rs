//! Synthetic persons: deterministic, realistic in their mix, and fast.

mod common;

use std::time::Instant;

use careflow_core::{PatientId, RecordFacts};
use careflow_records::{Records, SYNTHEA_ZIP_SHA256, SYNTH_AS_OF, SYNTH_PERSON_ID_BASE};
use common::*;

async fn all_facts(records: &Records) -> Vec<RecordFacts> {
    let mut out = Vec::new();
    for id in records.patients(i64::MAX).await.expect("patients") {
        out.push(
            records
                .patient_facts(id, SYNTH_AS_OF)
                .await
                .expect("facts")
                .expect("known"),
        );
    }
    out
}

#[tokio::test]
async fn the_same_seed_gives_the_same_people_in_a_realistic_mix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = fresh_db(dir.path(), "a.db").await;
    let b = fresh_db(dir.path(), "b.db").await;
    assert_eq!(a.synth(200, 7, &quiet).await.expect("synth a"), 200);
    assert_eq!(b.synth(200, 7, &quiet).await.expect("synth b"), 200);
    assert_eq!(
        a.counts().await.expect("counts"),
        b.counts().await.expect("counts")
    );
    let facts = all_facts(&a).await;
    assert_eq!(facts.len(), 200);
    assert_eq!(facts, all_facts(&b).await, "same seed, same facts");
    assert_eq!(facts[0].patient_id, Some(SYNTH_PERSON_ID_BASE + 1));

    let c = fresh_db(dir.path(), "c.db").await;
    c.synth(200, 8, &quiet).await.expect("synth c");
    assert_ne!(facts, all_facts(&c).await, "another seed, other people");

    let n = |f: &dyn Fn(&RecordFacts) -> bool| facts.iter().filter(|x| f(x)).count();
    let females = n(&|f| f.sex.as_deref() == Some("female"));
    let pregnant = n(&|f| f.pregnant);
    let stats = [
        ("female", females),
        ("pregnant", pregnant),
        ("anticoagulated", n(&|f| f.anticoagulated)),
        ("immunosuppressed", n(&|f| f.immunosuppressed)),
        ("diabetes", n(&|f| f.diabetes)),
        ("heart disease", n(&|f| f.heart_disease)),
        ("cancer history", n(&|f| f.cancer_history)),
        ("recent surgery", n(&|f| f.recent_surgery)),
        ("children", n(&|f| f.age_years.is_some_and(|y| y < 18))),
        ("65+", n(&|f| f.age_years.is_some_and(|y| y >= 65))),
    ];
    println!("200 synthetic persons: {stats:?}");
    assert!((70..=130).contains(&females));
    assert!(
        pregnant >= 1 && pregnant * 4 < females,
        "pregnant {pregnant} of {females} females"
    );
    assert_eq!(n(&|f| f.pregnant && f.sex.as_deref() != Some("female")), 0);
    assert_eq!(
        n(&|f| f.pregnant && !f.age_years.is_some_and(|y| (15..=50).contains(&y))),
        0
    );
    for (name, count, lo, hi) in [
        ("anticoagulated", stats[2].1, 1, 30),
        ("immunosuppressed", stats[3].1, 1, 30),
        ("diabetes", stats[4].1, 6, 50),
        ("heart disease", stats[5].1, 2, 40),
        ("cancer history", stats[6].1, 1, 30),
        ("children", stats[8].1, 20, 70),
    ] {
        assert!((lo..=hi).contains(&count), "{name}: {count} of 200");
    }
    assert!(facts
        .iter()
        .all(|f| f.age_years.is_some() && f.sex.is_some()));
    assert!(facts.iter().all(|f| f
        .measurements
        .iter()
        .any(|m| m.starts_with("Body temperature "))));
    let hypertensive = n(&|f| f.conditions.iter().any(|c| c == "Essential hypertension"));
    assert!(
        (20..=90).contains(&hypertensive),
        "hypertension: {hypertensive}"
    );
    // The flag follows a medication in the list (which also shows older ones: a
    // rivaroxaban course for a clot two years ago is listed but no longer flags).
    for f in facts.iter().filter(|f| f.anticoagulated) {
        let listed = f.medications.iter().any(|m| {
            ["warfarin", "apixaban", "rivaroxaban", "enoxaparin"]
                .iter()
                .any(|d| m.contains(d))
        });
        assert!(listed, "{f:?}");
    }
}

#[tokio::test]
async fn synthetic_ids_start_above_loaded_ones_and_never_collide() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = fresh_db(dir.path(), "mixed.db").await;
    records.synth(20, 1, &quiet).await.expect("synth first");
    // Loading the sample afterwards must not overwrite synthetic people (ids 1..28).
    records
        .load_omop_zip(&synthea_zip(), Some(SYNTHEA_ZIP_SHA256), &quiet)
        .await
        .expect("load");
    records.synth(20, 2, &quiet).await.expect("synth again");
    let ids = records.patients(i64::MAX).await.expect("patients");
    assert_eq!(ids.len(), 28 + 40);
    assert_eq!(ids[28], PatientId(SYNTH_PERSON_ID_BASE + 1));
    assert_eq!(ids.last(), Some(&PatientId(SYNTH_PERSON_ID_BASE + 40)));
    // The sample's concept names win over nothing: shared ids carry the same names.
    let f = records
        .patient_facts(PatientId(10), "2022-10-15")
        .await
        .expect("facts")
        .expect("known");
    assert!(f.conditions.iter().any(|c| c == "Type 2 diabetes mellitus"));
    assert_eq!(
        count(&records, "concept").await as usize,
        2_294 + 12,
        "12 synthetic concepts are not in the sample"
    );
}

#[tokio::test]
async fn ten_thousand_persons_take_well_under_a_minute() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = fresh_db(dir.path(), "big.db").await;
    let started = Instant::now();
    let last = std::sync::Mutex::new((0, 0));
    records
        .synth(10_000, 42, &|done, total| {
            *last.lock().expect("lock") = (done, total)
        })
        .await
        .expect("synth");
    let took = started.elapsed();
    let counts = records.counts().await.expect("counts");
    println!("synth 10,000 persons in {took:.2?}: {counts:?}");
    assert_eq!(*last.lock().expect("lock"), (10_000, 10_000));
    assert_eq!(count(&records, "person").await, 10_000);
    assert!(took.as_secs() < 20, "took {took:?}");
    let started = Instant::now();
    let facts = records
        .patient_facts(PatientId(SYNTH_PERSON_ID_BASE + 5_000), SYNTH_AS_OF)
        .await
        .expect("facts")
        .expect("known");
    println!("facts in {:.2?}: {}", started.elapsed(), facts.summary());
}
