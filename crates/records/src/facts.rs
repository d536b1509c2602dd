//! `Records::patient_facts`: the fixed, parameterised record summary of one patient.
//! Every query binds `person_id = $1`; nothing is read about anyone else.

use std::collections::HashSet;

use chrono::NaiveDate;

use careflow_core::{PatientId, RecordFacts};

use crate::dates::{age_in_months, birth_date, days_before, months_before, parse_today};
use crate::db::{on_backend, Pool, Records};
use crate::error::RecordsError;
use crate::flags::*;

const MAX_CONDITIONS: usize = 15;
const MAX_MEDICATIONS: usize = 15;
const MAX_MEASUREMENTS: usize = 10;
/// Longer names (multi-drug packs) are cut to this many characters.
const MAX_NAME_CHARS: usize = 90;
/// How far back procedures are read (the longest procedure window).
const PROCEDURE_DAYS: i64 = CHEMOTHERAPY_DAYS;

const PERSON_SQL: &str =
    "SELECT p.year_of_birth, p.month_of_birth, p.day_of_birth, p.gender_concept_id, \
     c.concept_name, p.gender_source_value \
     FROM person p LEFT JOIN concept c ON c.concept_id = p.gender_concept_id \
     WHERE p.person_id = $1";

const CONDITIONS_SQL: &str =
    "SELECT c.concept_name, o.condition_source_value, o.condition_concept_id, \
     o.condition_start_date, o.condition_end_date \
     FROM condition_occurrence o LEFT JOIN concept c ON c.concept_id = o.condition_concept_id \
     WHERE o.person_id = $1 AND o.condition_start_date <= $2 \
     ORDER BY o.condition_start_date DESC, o.condition_occurrence_id DESC";

const DRUGS_SQL: &str = "SELECT c.concept_name, d.drug_source_value, d.drug_concept_id, \
     d.drug_exposure_start_date, d.drug_exposure_end_date \
     FROM drug_exposure d LEFT JOIN concept c ON c.concept_id = d.drug_concept_id \
     WHERE d.person_id = $1 AND d.drug_exposure_start_date <= $2 \
     ORDER BY d.drug_exposure_start_date DESC, d.drug_exposure_id DESC";

const PROCEDURES_SQL: &str =
    "SELECT c.concept_name, p.procedure_source_value, p.procedure_concept_id, \
     p.procedure_date, p.procedure_end_date \
     FROM procedure_occurrence p LEFT JOIN concept c ON c.concept_id = p.procedure_concept_id \
     WHERE p.person_id = $1 AND p.procedure_date <= $2 AND p.procedure_date >= $3 \
     ORDER BY p.procedure_date DESC, p.procedure_occurrence_id DESC";

/// The latest value of each measured concept.
const MEASUREMENTS_SQL: &str = "SELECT name, source, value_as_number, value_name, value_source_value, \
     unit_source_value, unit_code, measurement_date FROM ( \
       SELECT c.concept_name AS name, m.measurement_source_value AS source, m.value_as_number, \
         v.concept_name AS value_name, m.value_source_value, m.unit_source_value, u.concept_code AS unit_code, \
         m.measurement_date, m.measurement_id, \
         ROW_NUMBER() OVER (PARTITION BY m.measurement_concept_id \
                            ORDER BY m.measurement_date DESC, m.measurement_id DESC) AS rn \
       FROM measurement m \
         LEFT JOIN concept c ON c.concept_id = m.measurement_concept_id \
         LEFT JOIN concept v ON v.concept_id = m.value_as_concept_id \
         LEFT JOIN concept u ON u.concept_id = m.unit_concept_id \
       WHERE m.person_id = $1 AND m.measurement_date <= $2 \
     ) latest WHERE rn = 1 \
     ORDER BY measurement_date DESC, measurement_id DESC";

type PersonRow = (
    i64,
    Option<i64>,
    Option<i64>,
    i64,
    Option<String>,
    Option<String>,
);
/// concept name, source value, concept id, start, end
type EventRow = (
    Option<String>,
    Option<String>,
    i64,
    NaiveDate,
    Option<NaiveDate>,
);
type MeasurementRow = (
    Option<String>,
    Option<String>,
    Option<f64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    NaiveDate,
);

/// One dated record event, named.
struct Event {
    name: String,
    start: NaiveDate,
    end: Option<NaiveDate>,
}

impl Event {
    fn from_row((concept, source, concept_id, start, end): EventRow) -> Self {
        let name = concept
            .filter(|n| !n.trim().is_empty() && concept_id != 0)
            .or(source.filter(|s| !s.trim().is_empty()))
            .unwrap_or_else(|| format!("concept {concept_id}"));
        Event { name, start, end }
    }
    /// Whether the event's span overlaps `[from, to]` (a missing end means a single day).
    fn overlaps(&self, from: NaiveDate, to: NaiveDate) -> bool {
        self.start <= to && self.end.unwrap_or(self.start) >= from
    }
}

impl Records {
    /// The record summary of one patient as of `today` (`YYYY-MM-DD`): age, sex, recent
    /// conditions, medications and measurements, and the risk flags (keyword lists in `flags.rs`).
    /// Events dated after `today` are ignored. `Ok(None)` when the patient is unknown.
    pub async fn patient_facts(
        &self,
        patient: PatientId,
        today: &str,
    ) -> Result<Option<RecordFacts>, RecordsError> {
        let today = parse_today(today)?;
        let id = patient.0;
        let procedures_from = days_before(today, PROCEDURE_DAYS);
        let (person, conditions, drugs, procedures, measurements) = on_backend!(&self.pool, Pool, p => {
            let person: Option<PersonRow> = sqlx::query_as(PERSON_SQL).bind(id).fetch_optional(p).await?;
            if person.is_none() {
                return Ok(None);
            }
            let conditions: Vec<EventRow> =
                sqlx::query_as(CONDITIONS_SQL).bind(id).bind(today).fetch_all(p).await?;
            let drugs: Vec<EventRow> = sqlx::query_as(DRUGS_SQL).bind(id).bind(today).fetch_all(p).await?;
            let procedures: Vec<EventRow> = sqlx::query_as(PROCEDURES_SQL)
                .bind(id)
                .bind(today)
                .bind(procedures_from)
                .fetch_all(p)
                .await?;
            let measurements: Vec<MeasurementRow> =
                sqlx::query_as(MEASUREMENTS_SQL).bind(id).bind(today).fetch_all(p).await?;
            (person, conditions, drugs, procedures, measurements)
        });
        let Some(person) = person else {
            return Ok(None);
        };
        let conditions: Vec<Event> = conditions.into_iter().map(Event::from_row).collect();
        let drugs: Vec<Event> = drugs.into_iter().map(Event::from_row).collect();
        let procedures: Vec<Event> = procedures.into_iter().map(Event::from_row).collect();

        let mut facts = person_facts(id, &person, today);
        let cond = |k: &Keywords| conditions.iter().any(|c| k.matches(&c.name));
        facts.pregnant = conditions.iter().any(|c| {
            PREGNANCY.matches(&c.name)
                && c.start >= months_before(today, PREGNANCY_MONTHS)
                && c.end.is_none_or(|e| e >= today)
        });
        facts.immunosuppressed = drugs.iter().any(|d| {
            IMMUNOSUPPRESSANT_DRUGS.matches(&d.name)
                && d.overlaps(days_before(today, IMMUNOSUPPRESSANT_DRUG_DAYS), today)
        }) || conditions.iter().any(|c| {
            IMMUNE_CONDITIONS.matches(&c.name)
                && c.end
                    .is_none_or(|e| e >= days_before(today, IMMUNE_CONDITION_DAYS))
        }) || procedures.iter().any(|p| {
            CHEMOTHERAPY_PROCEDURES.matches(&p.name)
                && p.start >= days_before(today, CHEMOTHERAPY_DAYS)
        });
        facts.anticoagulated = drugs.iter().any(|d| {
            ANTICOAGULANTS.matches(&d.name)
                && d.overlaps(days_before(today, ANTICOAGULANT_DAYS), today)
        });
        facts.cancer_history = cond(&CANCER);
        facts.recent_surgery = procedures
            .iter()
            .any(|p| SURGERY.matches(&p.name) && p.start >= days_before(today, SURGERY_DAYS));
        facts.diabetes = cond(&DIABETES);
        facts.heart_disease = cond(&HEART_DISEASE);
        facts.conditions = distinct_names(&conditions, MAX_CONDITIONS);
        facts.medications = distinct_names(&drugs, MAX_MEDICATIONS);
        facts.measurements = measurements
            .into_iter()
            .filter_map(measurement_line)
            .take(MAX_MEASUREMENTS)
            .collect();
        Ok(Some(facts))
    }
}

fn person_facts(id: i64, person: &PersonRow, today: NaiveDate) -> RecordFacts {
    let (year, month, day, gender_concept, gender_name, gender_source) = person;
    let months = birth_date(*year, *month, *day).and_then(|b| age_in_months(b, today));
    RecordFacts {
        patient_id: Some(id),
        age_years: months.map(|m| m / 12),
        age_months: months,
        sex: sex(
            *gender_concept,
            gender_name.as_deref(),
            gender_source.as_deref(),
        ),
        ..RecordFacts::default()
    }
}

/// OMOP gender concepts 8532 (FEMALE) and 8507 (MALE), else the concept's name, else the
/// source value (`F`, `M`, `female`, `male`).
fn sex(concept_id: i64, concept_name: Option<&str>, source: Option<&str>) -> Option<String> {
    let from_word = |w: &str| match w.trim().to_ascii_lowercase().as_str() {
        "female" | "f" => Some("female".to_string()),
        "male" | "m" => Some("male".to_string()),
        _ => None,
    };
    match concept_id {
        8532 => Some("female".into()),
        8507 => Some("male".into()),
        _ => concept_name
            .and_then(from_word)
            .or_else(|| source.and_then(from_word)),
    }
}

/// Distinct names in the events' order (most recent first), cut to a readable length.
fn distinct_names(events: &[Event], max: usize) -> Vec<String> {
    let mut seen = HashSet::new();
    events
        .iter()
        .filter(|e| seen.insert(e.name.as_str()))
        .take(max)
        .map(|e| shorten(&e.name))
        .collect()
}

fn shorten(name: &str) -> String {
    let name = name.trim();
    if name.chars().count() <= MAX_NAME_CHARS {
        return name.to_string();
    }
    let cut: String = name.chars().take(MAX_NAME_CHARS - 1).collect();
    format!("{}…", cut.trim_end())
}

/// "Body temperature 38.4 Cel (2024-03-02)"; `None` when the row carries no value.
fn measurement_line(row: MeasurementRow) -> Option<String> {
    let (name, source, number, value_name, value_source, unit_source, unit_code, date) = row;
    let name = name.or(source).filter(|n| !n.trim().is_empty())?;
    let value = match number {
        Some(v) => format_number(v),
        None => value_name
            .or(value_source)
            .filter(|v| !v.trim().is_empty())?,
    };
    let unit = unit_source
        .filter(|u| !u.trim().is_empty())
        .or(unit_code.filter(|u| !u.trim().is_empty()))
        .filter(|u| !u.starts_with('{'));
    Some(match (number, unit) {
        (Some(_), Some(u)) => format!("{} {value} {u} ({date})", shorten(&name)),
        _ => format!("{} {value} ({date})", shorten(&name)),
    })
}

/// At most two decimals, no trailing zeros: 38.4, 120, 0.25.
fn format_number(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurement_lines_read_like_a_chart() {
        let date = NaiveDate::from_ymd_opt(2024, 3, 2).expect("date");
        let row = |n: Option<f64>, unit: Option<&str>| -> MeasurementRow {
            (
                Some("Body temperature".into()),
                None,
                n,
                None,
                None,
                unit.map(Into::into),
                None,
                date,
            )
        };
        assert_eq!(
            measurement_line(row(Some(38.4), Some("Cel"))).as_deref(),
            Some("Body temperature 38.4 Cel (2024-03-02)")
        );
        assert_eq!(
            measurement_line(row(Some(120.0), Some("{score}"))).as_deref(),
            Some("Body temperature 120 (2024-03-02)")
        );
        assert_eq!(measurement_line(row(None, Some("Cel"))), None);
        assert_eq!(format_number(98.60000000000001), "98.6");
        assert_eq!(format_number(-0.001), "0");
    }

    #[test]
    fn sex_comes_from_the_concept_then_the_name_then_the_source() {
        assert_eq!(sex(8532, None, Some("M")).as_deref(), Some("female"));
        assert_eq!(sex(8507, None, None).as_deref(), Some("male"));
        assert_eq!(sex(0, Some("FEMALE"), None).as_deref(), Some("female"));
        assert_eq!(sex(0, None, Some("M")).as_deref(), Some("male"));
        assert_eq!(sex(0, None, Some("U")), None);
    }
}
