//! The description of the tables that the SQL-writing step sees (part of the shared prefix).

const CARD: &str = "\
Patient records: OMOP CDM v5.4 subset. Write one SELECT; the database already limits every table to the \
current patient (no person_id filter or placeholder needed). \
Dates are DATE 'YYYY-MM-DD' (compare with literals like '2024-01-31'). \
*_concept_id columns join concept.concept_id; read names from concept.concept_name.
person: person_id (patient id), gender_concept_id (8532 female, 8507 male), year_of_birth, month_of_birth, \
day_of_birth, race_concept_id, ethnicity_concept_id
visit_occurrence: visit_occurrence_id, person_id, visit_concept_id (9202 outpatient, 9203 emergency room, \
9201 inpatient), visit_start_date, visit_end_date
condition_occurrence: condition_occurrence_id, person_id, condition_concept_id (diagnosis), \
condition_start_date, condition_end_date (NULL while active), visit_occurrence_id, condition_source_value \
(SNOMED code)
drug_exposure: drug_exposure_id, person_id, drug_concept_id (RxNorm drug, name includes strength and form), \
drug_exposure_start_date, drug_exposure_end_date, quantity, days_supply, sig (instructions), \
visit_occurrence_id, drug_source_value
procedure_occurrence: procedure_occurrence_id, person_id, procedure_concept_id, procedure_date, \
procedure_end_date, visit_occurrence_id, procedure_source_value
measurement: measurement_id, person_id, measurement_concept_id (vital sign or lab test, LOINC), \
measurement_date, value_as_number, value_as_concept_id (coded result), unit_concept_id, unit_source_value \
(UCUM unit text, e.g. Cel, mm[Hg], /min, kg), range_low, range_high, visit_occurrence_id
observation: observation_id, person_id, observation_concept_id (history, social and survey items), \
observation_date, value_as_number, value_as_string, value_as_concept_id, unit_concept_id
concept: concept_id, concept_name, domain_id (Condition, Drug, Measurement, Procedure, Observation, Unit, \
Visit), vocabulary_id (SNOMED, RxNorm, LOINC, UCUM…), concept_class_id, standard_concept ('S' if standard), \
concept_code (code in its vocabulary)
Common measurement names: Body temperature (Cel), Heart rate (/min), Systolic blood pressure and Diastolic \
blood pressure (mm[Hg]), Respiratory rate, Body weight (kg), Body height (cm), \
Hemoglobin A1c/Hemoglobin.total in Blood (%), Glucose [Mass/volume] in Blood.
Match names case-insensitively: LOWER(concept.concept_name) LIKE '%warfarin%'.
";

/// A compact description of the tables and columns the SQL step may use: one
/// `table: column (meaning)…` line per table, about 2,000 characters, rendered once.
pub fn schema_card() -> &'static str {
    CARD
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::TABLES;

    #[test]
    fn the_card_names_every_table_and_key_and_stays_compact() {
        let card = schema_card();
        for t in TABLES {
            assert!(
                card.contains(&format!("{}: {}", t.name, t.key())),
                "{}",
                t.name
            );
            for c in t.cols.iter().filter(|c| c.required) {
                assert!(card.contains(c.name), "{}.{}", t.name, c.name);
            }
        }
        assert!(
            (1_500..=2_500).contains(&card.len()),
            "{} characters",
            card.len()
        );
    }
}
