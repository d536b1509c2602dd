//! The OMOP tables careflow keeps: their columns, how a CSV field is parsed into a value,
//! and the batched INSERT statements shared by the loader and the generator.

use chrono::NaiveDate;

/// How a column's text is parsed and bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Float,
    Text,
    Date,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Col {
    pub name: &'static str,
    pub kind: Kind,
    /// Must be present in the CSV header and non-empty in every row.
    pub required: bool,
}

const fn req(name: &'static str, kind: Kind) -> Col {
    Col {
        name,
        kind,
        required: true,
    }
}
const fn opt(name: &'static str, kind: Kind) -> Col {
    Col {
        name,
        kind,
        required: false,
    }
}

#[derive(Debug)]
pub(crate) struct TableSpec {
    pub name: &'static str,
    /// The primary key is always the first column.
    pub cols: &'static [Col],
}

impl TableSpec {
    pub fn key(&self) -> &'static str {
        self.cols[0].name
    }
}

use Kind::{Date, Float, Int, Text};

pub(crate) const CONCEPT: TableSpec = TableSpec {
    name: "concept",
    cols: &[
        req("concept_id", Int),
        req("concept_name", Text),
        opt("domain_id", Text),
        opt("vocabulary_id", Text),
        opt("concept_class_id", Text),
        opt("standard_concept", Text),
        opt("concept_code", Text),
        opt("valid_start_date", Date),
        opt("valid_end_date", Date),
        opt("invalid_reason", Text),
    ],
};

pub(crate) const PERSON: TableSpec = TableSpec {
    name: "person",
    cols: &[
        req("person_id", Int),
        req("gender_concept_id", Int),
        req("year_of_birth", Int),
        opt("month_of_birth", Int),
        opt("day_of_birth", Int),
        opt("race_concept_id", Int),
        opt("ethnicity_concept_id", Int),
        opt("person_source_value", Text),
        opt("gender_source_value", Text),
    ],
};

pub(crate) const VISIT: TableSpec = TableSpec {
    name: "visit_occurrence",
    cols: &[
        req("visit_occurrence_id", Int),
        req("person_id", Int),
        req("visit_concept_id", Int),
        req("visit_start_date", Date),
        opt("visit_end_date", Date),
        opt("visit_type_concept_id", Int),
    ],
};

pub(crate) const CONDITION: TableSpec = TableSpec {
    name: "condition_occurrence",
    cols: &[
        req("condition_occurrence_id", Int),
        req("person_id", Int),
        req("condition_concept_id", Int),
        req("condition_start_date", Date),
        opt("condition_end_date", Date),
        opt("condition_type_concept_id", Int),
        opt("visit_occurrence_id", Int),
        opt("condition_source_value", Text),
    ],
};

pub(crate) const DRUG: TableSpec = TableSpec {
    name: "drug_exposure",
    cols: &[
        req("drug_exposure_id", Int),
        req("person_id", Int),
        req("drug_concept_id", Int),
        req("drug_exposure_start_date", Date),
        opt("drug_exposure_end_date", Date),
        opt("drug_type_concept_id", Int),
        opt("quantity", Float),
        opt("days_supply", Int),
        opt("sig", Text),
        opt("route_concept_id", Int),
        opt("visit_occurrence_id", Int),
        opt("drug_source_value", Text),
    ],
};

pub(crate) const MEASUREMENT: TableSpec = TableSpec {
    name: "measurement",
    cols: &[
        req("measurement_id", Int),
        req("person_id", Int),
        req("measurement_concept_id", Int),
        req("measurement_date", Date),
        opt("measurement_type_concept_id", Int),
        opt("value_as_number", Float),
        opt("value_as_concept_id", Int),
        opt("unit_concept_id", Int),
        opt("range_low", Float),
        opt("range_high", Float),
        opt("visit_occurrence_id", Int),
        opt("measurement_source_value", Text),
        opt("unit_source_value", Text),
        opt("value_source_value", Text),
    ],
};

pub(crate) const OBSERVATION: TableSpec = TableSpec {
    name: "observation",
    cols: &[
        req("observation_id", Int),
        req("person_id", Int),
        req("observation_concept_id", Int),
        req("observation_date", Date),
        opt("observation_type_concept_id", Int),
        opt("value_as_number", Float),
        opt("value_as_string", Text),
        opt("value_as_concept_id", Int),
        opt("unit_concept_id", Int),
        opt("visit_occurrence_id", Int),
        opt("observation_source_value", Text),
    ],
};

pub(crate) const PROCEDURE: TableSpec = TableSpec {
    name: "procedure_occurrence",
    cols: &[
        req("procedure_occurrence_id", Int),
        req("person_id", Int),
        req("procedure_concept_id", Int),
        req("procedure_date", Date),
        opt("procedure_end_date", Date),
        opt("procedure_type_concept_id", Int),
        opt("visit_occurrence_id", Int),
        opt("procedure_source_value", Text),
    ],
};

/// Every table, in load order (vocabulary first, then persons, then their events).
pub(crate) const TABLES: [&TableSpec; 8] = [
    &CONCEPT,
    &PERSON,
    &VISIT,
    &CONDITION,
    &DRUG,
    &PROCEDURE,
    &MEASUREMENT,
    &OBSERVATION,
];

/// One bound value; `None` is SQL NULL.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Int(Option<i64>),
    Float(Option<f64>),
    Text(Option<String>),
    Date(Option<NaiveDate>),
}

impl Value {
    pub fn int(v: i64) -> Self {
        Value::Int(Some(v))
    }
    pub fn text(v: &str) -> Self {
        Value::Text(Some(v.to_string()))
    }
    pub fn date(v: NaiveDate) -> Self {
        Value::Date(Some(v))
    }
    pub fn null(kind: Kind) -> Self {
        match kind {
            Kind::Int => Value::Int(None),
            Kind::Float => Value::Float(None),
            Kind::Text => Value::Text(None),
            Kind::Date => Value::Date(None),
        }
    }
}

pub(crate) type Row = Vec<Value>;

/// What an INSERT does with a row whose key already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnConflict {
    /// Replace the stored row (loading the same file twice leaves one copy).
    Replace,
    /// Keep the stored row (shared vocabulary rows).
    Keep,
    /// Fail (generated ids must never overwrite existing records).
    Fail,
}

/// Most rows per statement: SQLite allows 32,766 bound parameters, PostgreSQL 65,535.
pub(crate) fn rows_per_statement(spec: &TableSpec) -> usize {
    (16_000 / spec.cols.len()).clamp(1, 1_000)
}

/// How bound parameters are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placeholder {
    /// `$1, $2, …` (PostgreSQL).
    Numbered,
    /// `?` (SQLite: it looks every `$N` name up in a list while parsing, which is
    /// quadratic in the number of parameters and made 10,000 synthetic persons take
    /// minutes instead of seconds).
    Anonymous,
}

/// `INSERT INTO t (…) VALUES ($1,…),(…) [ON CONFLICT …]` for `rows` rows. Both backends
/// accept `ON CONFLICT (key) DO UPDATE SET c = excluded.c`.
pub(crate) fn insert_sql(
    spec: &TableSpec,
    rows: usize,
    on_conflict: OnConflict,
    placeholder: Placeholder,
) -> String {
    let n = spec.cols.len();
    let names: Vec<&str> = spec.cols.iter().map(|c| c.name).collect();
    let mut sql = format!("INSERT INTO {} ({}) VALUES ", spec.name, names.join(", "));
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..n {
            if c > 0 {
                sql.push(',');
            }
            match placeholder {
                Placeholder::Numbered => sql.push_str(&format!("${}", r * n + c + 1)),
                Placeholder::Anonymous => sql.push('?'),
            }
        }
        sql.push(')');
    }
    match on_conflict {
        OnConflict::Fail => {}
        OnConflict::Keep => sql.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", spec.key())),
        OnConflict::Replace => {
            let sets: Vec<String> = names[1..]
                .iter()
                .map(|c| format!("{c} = excluded.{c}"))
                .collect();
            sql.push_str(&format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                spec.key(),
                sets.join(", ")
            ));
        }
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_sql_numbers_parameters_row_major() {
        let sql = insert_sql(&VISIT, 2, OnConflict::Replace, Placeholder::Numbered);
        assert!(sql.starts_with("INSERT INTO visit_occurrence (visit_occurrence_id, person_id,"));
        assert!(sql.contains("($1,$2,$3,$4,$5,$6),($7,$8,$9,$10,$11,$12)"));
        assert!(sql.ends_with("visit_type_concept_id = excluded.visit_type_concept_id"));
        assert!(insert_sql(&VISIT, 1, OnConflict::Fail, Placeholder::Numbered).ends_with("$6)"));
        assert!(
            insert_sql(&VISIT, 2, OnConflict::Keep, Placeholder::Anonymous).contains(
                "VALUES (?,?,?,?,?,?),(?,?,?,?,?,?) ON CONFLICT (visit_occurrence_id) DO NOTHING"
            )
        );
    }

    #[test]
    fn every_table_keys_on_its_first_column_and_fits_the_parameter_limits() {
        for t in TABLES {
            assert!(t.key().ends_with("_id"), "{}", t.name);
            assert!(rows_per_statement(t) * t.cols.len() <= 32_766);
        }
    }
}
