#!/usr/bin/env python3
"""Writes sql_dev.jsonl: the SQL dev set (questions about one patient, a reference SQL,
the expected rows).

The expected rows come from an oracle that does not use careflow's guard: for each
patient, a fresh in-memory SQLite database with careflow's own schema
(migrations/sqlite/0001_omop_subset.sql) that holds only that patient's rows (and the
whole concept table); the reference SQL, which has no patient filter, runs there as is.

Usage (from crates/records):
  CAREFLOW_SQL_DEV_DB_OUT=/tmp/dev.db cargo test --release -p careflow-records --test sql_dev
  python3 tests/data/make_sql_dev.py /tmp/dev.db > ../../data/eval/sql_dev.jsonl

The reference SQL is portable between SQLite and PostgreSQL (no date functions, no
round() of floats); string ties under a LIMIT are broken by ids, not names.
"""

import json
import os
import sqlite3
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "..", "..", "migrations", "sqlite", "0001_omop_subset.sql")
PATIENT_TABLES = [
    "person", "visit_occurrence", "condition_occurrence", "drug_exposure",
    "procedure_occurrence", "measurement", "observation",
]


def latest(name):
    return (
        f"What was my most recent {name.lower()} and when was it taken?",
        "SELECT m.measurement_date, m.value_as_number, m.unit_source_value "
        "FROM measurement AS m JOIN concept AS c ON c.concept_id = m.measurement_concept_id "
        f"WHERE c.concept_name = '{name}' "
        "ORDER BY m.measurement_date DESC, m.measurement_id DESC LIMIT 1",
    )


def ever(word):
    return (
        f"Have I ever been diagnosed with {word}? How many times?",
        "SELECT COUNT(*) AS times FROM condition_occurrence AS co "
        "JOIN concept AS c ON c.concept_id = co.condition_concept_id "
        f"WHERE LOWER(c.concept_name) LIKE '%{word}%'",
    )


def first_drug(word):
    return (
        f"When did I first get {word}?",
        "SELECT MIN(d.drug_exposure_start_date) AS first_start FROM drug_exposure AS d "
        "JOIN concept AS c ON c.concept_id = d.drug_concept_id "
        f"WHERE LOWER(c.concept_name) LIKE '%{word}%'",
    )


def highest(name):
    return (
        f"What is the highest {name.lower()} on record?",
        "SELECT MAX(m.value_as_number) AS highest FROM measurement AS m "
        "JOIN concept AS c ON c.concept_id = m.measurement_concept_id "
        f"WHERE c.concept_name = '{name}'",
    )


def average(name):
    return (
        f"What is my average {name.lower()}?",
        "SELECT AVG(m.value_as_number) AS average FROM measurement AS m "
        "JOIN concept AS c ON c.concept_id = m.measurement_concept_id "
        f"WHERE c.concept_name = '{name}'",
    )


COUNT_CONDITIONS = ("How many diagnoses are in my record?",
                    "SELECT COUNT(*) AS n FROM condition_occurrence")
DISTINCT_CONDITIONS = (
    "Which conditions have I been diagnosed with?",
    "SELECT DISTINCT c.concept_name FROM condition_occurrence AS co "
    "JOIN concept AS c ON c.concept_id = co.condition_concept_id ORDER BY c.concept_name",
)
ACTIVE_CONDITIONS = (
    "Which of my conditions are still active?",
    "SELECT DISTINCT c.concept_name FROM condition_occurrence AS co "
    "JOIN concept AS c ON c.concept_id = co.condition_concept_id "
    "WHERE co.condition_end_date IS NULL ORDER BY c.concept_name",
)
RECENT_CONDITIONS = (
    "What are my three most recent diagnoses, with dates?",
    "SELECT c.concept_name, co.condition_start_date FROM condition_occurrence AS co "
    "JOIN concept AS c ON c.concept_id = co.condition_concept_id "
    "ORDER BY co.condition_start_date DESC, co.condition_occurrence_id DESC LIMIT 3",
)
RECENT_DRUGS = (
    "Which medications were started in the last year (since 2021-10-10)?",
    "SELECT DISTINCT c.concept_name FROM drug_exposure AS d "
    "JOIN concept AS c ON c.concept_id = d.drug_concept_id "
    "WHERE d.drug_exposure_start_date >= '2021-10-10' ORDER BY c.concept_name",
)
DRUGS_SINCE_2018 = (
    "Which medications have I been given since 2018, and how many times each?",
    "SELECT c.concept_name, COUNT(*) AS times FROM drug_exposure AS d "
    "JOIN concept AS c ON c.concept_id = d.drug_concept_id "
    "WHERE d.drug_exposure_start_date >= '2018-01-01' "
    "GROUP BY c.concept_id, c.concept_name ORDER BY times DESC, c.concept_id",
)
DISTINCT_DRUGS = ("How many different medications have I had?",
                  "SELECT COUNT(DISTINCT drug_concept_id) AS n FROM drug_exposure")
ER_VISITS = ("How many emergency room visits have I had?",
             "SELECT COUNT(*) AS n FROM visit_occurrence WHERE visit_concept_id = 9203")
INPATIENT = ("How many times was I admitted to hospital?",
             "SELECT COUNT(*) AS n FROM visit_occurrence WHERE visit_concept_id = 9201")
LAST_VISIT = ("When was my last visit?",
              "SELECT MAX(visit_start_date) AS last_visit FROM visit_occurrence")
DEMOGRAPHICS = ("What year was I born and what is my recorded sex?",
                "SELECT year_of_birth, gender_concept_id FROM person")
PROCEDURES_2022 = ("How many procedures did I have in 2022?",
                   "SELECT COUNT(*) AS n FROM procedure_occurrence "
                   "WHERE procedure_date >= '2022-01-01' AND procedure_date < '2023-01-01'")
TOP_MEASUREMENTS = (
    "Which five tests or vital signs were measured most often?",
    "SELECT c.concept_name, COUNT(*) AS times FROM measurement AS m "
    "JOIN concept AS c ON c.concept_id = m.measurement_concept_id "
    "GROUP BY c.concept_id, c.concept_name ORDER BY times DESC, c.concept_id LIMIT 5",
)
LAST_SMOKING = (
    "When was my smoking status last recorded?",
    "SELECT MAX(o.observation_date) AS last_recorded FROM observation AS o "
    "JOIN concept AS c ON c.concept_id = o.observation_concept_id "
    "WHERE c.concept_name = 'Tobacco smoking status'",
)
VISITS_BY_KIND = (
    "How many visits of each kind have I had?",
    "SELECT visit_concept_id, COUNT(*) AS n FROM visit_occurrence "
    "GROUP BY visit_concept_id ORDER BY visit_concept_id",
)
RECENT_PROCEDURES = (
    "What were my last two procedures?",
    "SELECT c.concept_name, p.procedure_date FROM procedure_occurrence AS p "
    "JOIN concept AS c ON c.concept_id = p.procedure_concept_id "
    "ORDER BY p.procedure_date DESC, p.procedure_occurrence_id DESC LIMIT 2",
)
BP_2020 = (
    "How many blood pressure readings do I have since 2020?",
    "SELECT COUNT(*) AS n FROM measurement AS m "
    "JOIN concept AS c ON c.concept_id = m.measurement_concept_id "
    "WHERE c.concept_name = 'Systolic blood pressure' AND m.measurement_date >= '2020-01-01'",
)

PLAN = {
    7: [COUNT_CONDITIONS, ACTIVE_CONDITIONS, latest("Systolic blood pressure"),
        DRUGS_SINCE_2018, ER_VISITS, first_drug("simvastatin"), DEMOGRAPHICS],
    8: [DISTINCT_CONDITIONS, latest("Body weight"), DISTINCT_DRUGS, LAST_VISIT,
        ever("sinusitis"), TOP_MEASUREMENTS],
    10: [ACTIVE_CONDITIONS, latest("Hemoglobin A1c/Hemoglobin.total in Blood"),
         highest("Heart rate"), RECENT_DRUGS, INPATIENT, ever("diabetes"), RECENT_CONDITIONS],
    11: [COUNT_CONDITIONS, average("Body mass index (BMI) [Ratio]"), PROCEDURES_2022,
         LAST_SMOKING, VISITS_BY_KIND, latest("Diastolic blood pressure"), first_drug("furosemide")],
    16: [RECENT_CONDITIONS, first_drug("lisinopril"), BP_2020, DEMOGRAPHICS,
         highest("Body weight"), ever("stress")],
    20: [DISTINCT_CONDITIONS, RECENT_DRUGS, ER_VISITS, latest("Heart rate"),
         RECENT_PROCEDURES, DISTINCT_DRUGS],
    26: [ACTIVE_CONDITIONS, average("Systolic blood pressure"), first_drug("simvastatin"),
         LAST_VISIT, ever("cerebrovascular"), TOP_MEASUREMENTS, RECENT_DRUGS],
    2: [COUNT_CONDITIONS, latest("Body height"), ever("otitis"), DEMOGRAPHICS, VISITS_BY_KIND],
    15: [COUNT_CONDITIONS, DISTINCT_DRUGS, latest("Body weight"), LAST_VISIT],
    18: [RECENT_CONDITIONS, ever("pregnancy"), RECENT_DRUGS, PROCEDURES_2022,
         highest("Respiratory rate")],
}


def oracle(source, patient):
    db = sqlite3.connect(":memory:")
    with open(SCHEMA) as f:
        db.executescript(f.read())
    db.execute("ATTACH DATABASE ? AS src", (source,))
    db.execute("INSERT INTO main.concept SELECT * FROM src.concept")
    for t in PATIENT_TABLES:
        db.execute(f"INSERT INTO main.{t} SELECT * FROM src.{t} WHERE person_id = ?", (patient,))
    db.commit()
    db.execute("DETACH DATABASE src")
    return db


def main():
    source = sys.argv[1]
    n = 0
    for patient, questions in PLAN.items():
        db = oracle(source, patient)
        for k, (question, sql) in enumerate(questions, 1):
            rows = [list(r) for r in db.execute(sql).fetchall()]
            n += 1
            print(json.dumps({
                "id": f"p{patient}-q{k}",
                "patient_id": patient,
                "question": question,
                "sql": sql,
                "expected_rows": rows,
            }))
        db.close()
    print(f"{n} items", file=sys.stderr)


if __name__ == "__main__":
    main()
