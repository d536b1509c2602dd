//! The allow-lists of the SQL guard: tables and their columns (from the crate's own table
//! specs), functions, operators and cast types. Everything not listed here is refused.

use sqlparser::ast::{BinaryOperator, DataType, UnaryOperator};

use crate::table::{TableSpec, TABLES};

/// Tables that hold one patient's data: every reference is scoped to the patient. `concept`
/// (the vocabulary) is shared and stays unscoped.
pub(crate) const PATIENT_TABLES: [&str; 7] = [
    "person",
    "visit_occurrence",
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
    "measurement",
    "observation",
];

/// The allow-listed table of that (ASCII-lowercased) name.
pub(crate) fn table(name: &str) -> Option<&'static TableSpec> {
    TABLES.iter().copied().find(|t| t.name == name)
}

/// Whether some allow-listed table has a column of that (ASCII-lowercased) name.
pub(crate) fn is_column(name: &str) -> bool {
    TABLES.iter().any(|t| t.cols.iter().any(|c| c.name == name))
}

pub(crate) fn has_column(t: &TableSpec, name: &str) -> bool {
    t.cols.iter().any(|c| c.name == name)
}

/// Scalar and aggregate functions the generated SQL may call (ASCII-lowercased names).
/// None of them can read files, sleep, allocate without bound or return sets: no
/// `replace`/`printf`/`randomblob`/`zeroblob`/`group_concat` (output size bombs), no
/// `load_extension`, `readfile`, `pg_read_file`, `pg_sleep`, `generate_series`.
const FUNCTIONS: &[&str] = &[
    // aggregates
    "count",
    "min",
    "max",
    "avg",
    "sum",
    "total",
    // text
    "lower",
    "upper",
    "length",
    "substr",
    "substring",
    "trim",
    // null handling
    "coalesce",
    "nullif",
    "ifnull",
    // numbers
    "abs",
    "round",
    // dates (SQLite)
    "date",
    "datetime",
    "julianday",
    "strftime",
    // dates (PostgreSQL)
    "date_trunc",
    "date_part",
    "age",
    "to_char",
    "current_date",
    "current_timestamp",
];

pub(crate) fn function_allowed(name: &str) -> bool {
    FUNCTIONS.contains(&name)
}

/// Functions that may be written without parentheses (`CURRENT_DATE`).
pub(crate) fn niladic_allowed(name: &str) -> bool {
    matches!(name, "current_date" | "current_timestamp")
}

pub(crate) fn binary_op_allowed(op: &BinaryOperator) -> bool {
    use BinaryOperator as B;
    matches!(
        op,
        B::Plus
            | B::Minus
            | B::Multiply
            | B::Divide
            | B::Modulo
            | B::StringConcat
            | B::Gt
            | B::Lt
            | B::GtEq
            | B::LtEq
            | B::Eq
            | B::NotEq
            | B::And
            | B::Or
    )
}

pub(crate) fn unary_op_allowed(op: &UnaryOperator) -> bool {
    matches!(
        op,
        UnaryOperator::Plus | UnaryOperator::Minus | UnaryOperator::Not
    )
}

/// Types a `CAST` or a typed literal (`DATE '2024-01-31'`) may name: plain numbers, text,
/// dates and booleans; no `regclass`/`regproc` (catalog look-ups) or custom types.
pub(crate) fn data_type_allowed(dt: &DataType) -> bool {
    use DataType as D;
    matches!(
        dt,
        D::Int(_)
            | D::Int4(_)
            | D::Int8(_)
            | D::Integer(_)
            | D::BigInt(_)
            | D::Real
            | D::Float8
            | D::Float(_)
            | D::Double(_)
            | D::DoublePrecision
            | D::Numeric(_)
            | D::Decimal(_)
            | D::Text
            | D::Varchar(_)
            | D::Char(_)
            | D::Date
            | D::Timestamp(_, _)
            | D::Bool
            | D::Boolean
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_tables_are_allow_listed_and_carry_person_id() {
        for t in PATIENT_TABLES {
            let spec = table(t).expect("listed");
            assert!(has_column(spec, "person_id"), "{t}");
        }
        assert!(table("concept").is_some());
        assert!(table("sqlite_master").is_none());
        assert!(!function_allowed("load_extension"));
    }
}
