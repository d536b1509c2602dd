//! A malformed CSV is refused with its file and line, and writes nothing.

mod common;

use std::io::Write;
use std::path::Path;

use careflow_records::RecordsError;
use common::*;

const GOOD: [(&str, &str); 8] = [
    ("CONCEPT.csv", "concept_id,concept_name,domain_id,vocabulary_id,concept_class_id,standard_concept,concept_code,valid_start_date,valid_end_date,invalid_reason\n320128,Essential hypertension,Condition,SNOMED,Clinical Finding,S,59621000,2002-01-31,2099-12-31,\n"),
    ("PERSON.csv", "PERSON_ID,GENDER_CONCEPT_ID,YEAR_OF_BIRTH,MONTH_OF_BIRTH,DAY_OF_BIRTH\n1,8532,1980,5,2\n2,8507,1975,1,9\n"),
    ("VISIT_OCCURRENCE.csv", "visit_occurrence_id,person_id,visit_concept_id,visit_start_date,visit_end_date\n1,1,9202,2024-01-02,2024-01-02\n"),
    ("CONDITION_OCCURRENCE.csv", "condition_occurrence_id,person_id,condition_concept_id,condition_start_date,condition_end_date\n1,1,320128,2020-03-01,\n2,2,320128,2021-04-05,\n"),
    ("DRUG_EXPOSURE.csv", "drug_exposure_id,person_id,drug_concept_id,drug_exposure_start_date,drug_exposure_end_date\n"),
    ("PROCEDURE_OCCURRENCE.csv", "procedure_occurrence_id,person_id,procedure_concept_id,procedure_date\n"),
    ("MEASUREMENT.csv", "measurement_id,person_id,measurement_concept_id,measurement_date,value_as_number,unit_source_value\n1,1,3020891,2024-01-02,38.4,Cel\n"),
    ("OBSERVATION.csv", "observation_id,person_id,observation_concept_id,observation_date\n"),
];

/// Writes a zip of the good tables with `replace` swapped in.
fn write_zip(path: &Path, replace: Option<(&str, &str)>) {
    let file = std::fs::File::create(path).expect("create zip");
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, body) in GOOD {
        let body = match replace {
            Some((n, b)) if n == name => b,
            _ => body,
        };
        zip.start_file(name, options).expect("entry");
        zip.write_all(body.as_bytes()).expect("write");
    }
    zip.finish().expect("finish");
}

#[tokio::test]
async fn a_small_valid_zip_loads_with_upper_case_headers_and_missing_optional_columns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zip = dir.path().join("ok.zip");
    write_zip(&zip, None);
    let records = fresh_db(dir.path(), "ok.db").await;
    let report = records
        .load_omop_zip(&zip, None, &quiet)
        .await
        .expect("load");
    assert_eq!(report.persons, 2);
    let facts = records
        .patient_facts(careflow_core::PatientId(1), "2024-02-01")
        .await
        .expect("facts")
        .expect("known");
    assert_eq!(facts.conditions, vec!["Essential hypertension".to_string()]);
    assert_eq!(facts.age_years, Some(43));
    // No concept row for the measurement: the line falls back to nothing, so it is dropped;
    // the value itself is kept in the table.
    assert_eq!(count(&records, "measurement").await, 1);
}

#[tokio::test]
async fn a_bad_date_names_the_file_line_and_field_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zip = dir.path().join("bad-date.zip");
    let bad = "condition_occurrence_id,person_id,condition_concept_id,condition_start_date,condition_end_date\n\
               1,1,320128,2020-03-01,\n2,2,320128,2021-13-45,\n";
    write_zip(&zip, Some(("CONDITION_OCCURRENCE.csv", bad)));
    let records = fresh_db(dir.path(), "bad.db").await;
    let err = records
        .load_omop_zip(&zip, None, &quiet)
        .await
        .expect_err("must fail");
    match &err {
        RecordsError::Csv {
            file,
            line,
            field,
            message,
        } => {
            assert_eq!(file, "CONDITION_OCCURRENCE.csv");
            assert_eq!(*line, 3);
            assert_eq!(field.as_deref(), Some("condition_start_date"));
            assert!(message.contains("2021-13-45"), "{message}");
        }
        other => panic!("expected a CSV error, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("CONDITION_OCCURRENCE.csv line 3"), "{text}");
    // Validation runs before any write: not even the tables before it were touched.
    assert!(records
        .counts()
        .await
        .expect("counts")
        .iter()
        .all(|(_, n)| *n == 0));
}

#[tokio::test]
async fn a_non_numeric_id_fails_and_leaves_an_earlier_load_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = fresh_db(dir.path(), "keep.db").await;
    let good = dir.path().join("good.zip");
    write_zip(&good, None);
    records
        .load_omop_zip(&good, None, &quiet)
        .await
        .expect("good load");
    let before = records.counts().await.expect("counts");

    let zip = dir.path().join("bad-id.zip");
    let bad =
        "person_id,gender_concept_id,year_of_birth\n1,8532,1980\n2,8507,1975\nP-3,8507,1990\n";
    write_zip(&zip, Some(("PERSON.csv", bad)));
    let err = records
        .load_omop_zip(&zip, None, &quiet)
        .await
        .expect_err("must fail");
    let text = err.to_string();
    assert!(
        text.contains("PERSON.csv line 4, field `person_id`"),
        "{text}"
    );
    assert!(text.contains("`P-3` is not an integer"), "{text}");
    assert_eq!(records.counts().await.expect("counts"), before);

    // A missing required column and a missing table are named too.
    write_zip(
        &zip,
        Some(("PERSON.csv", "person_id,year_of_birth\n1,1980\n")),
    );
    let err = records
        .load_omop_zip(&zip, None, &quiet)
        .await
        .expect_err("must fail");
    assert!(
        matches!(&err, RecordsError::MissingColumn { file, column } if file == "PERSON.csv" && column == "gender_concept_id"),
        "{err:?}"
    );
    let ragged = "person_id,gender_concept_id,year_of_birth\n1,8532\n";
    write_zip(&zip, Some(("PERSON.csv", ragged)));
    let err = records
        .load_omop_zip(&zip, None, &quiet)
        .await
        .expect_err("must fail");
    assert!(matches!(&err, RecordsError::Csv { line: 2, .. }), "{err:?}");
    assert_eq!(records.counts().await.expect("counts"), before);
}
