//! PostgreSQL: row-level security does the scoping. Inside one transaction:
//! `SET TRANSACTION READ ONLY`, a `statement_timeout`, the patient id in the
//! `careflow.patient_id` setting, and `SET LOCAL ROLE careflow_reader` (a NOLOGIN role that
//! owns nothing, has SELECT on the OMOP tables and no BYPASSRLS, so the policies of
//! migration 0002 apply to it); then the guarded SQL (whose scope CTEs are a second,
//! redundant filter); then ROLLBACK, which also undoes every `SET LOCAL`. Before the guarded
//! SQL, a parameterised check that the patient is in `person` (else
//! [`RecordsError::UnknownPatient`]).

use serde_json::Value as Json;
use sqlx::postgres::{PgRow, PgValueFormat};
use sqlx::{Column, Executor, PgPool, Row, Statement, TypeInfo, ValueRef};

use super::Table;
use crate::error::RecordsError;

/// Whether the patient is in `person`: parameterised, run in the same read-only
/// transaction right after the setup, as `careflow_reader` (row-level security shows it
/// the patient's own person row, and nothing else, so it answers exactly that question).
const KNOWN_PATIENT: &str = "SELECT EXISTS (SELECT 1 FROM person WHERE person_id = $1)";

/// SQLSTATE of a statement cancelled by `statement_timeout`.
const QUERY_CANCELED: &str = "57014";

pub(super) async fn run(
    pool: &PgPool,
    patient: i64,
    sql: &str,
    ms: u64,
) -> Result<Table, RecordsError> {
    let mut tx = pool.begin().await?;
    // Every value is an integer formatted here, never text from the statement.
    let setup = format!(
        "SET TRANSACTION READ ONLY; \
         SET LOCAL statement_timeout = {ms}; \
         SET LOCAL careflow.patient_id = '{patient}'; \
         SET LOCAL ROLE careflow_reader"
    );
    let outcome = async {
        (&mut *tx).execute(sqlx::raw_sql(&setup)).await?;
        let known: bool = sqlx::query_scalar(KNOWN_PATIENT)
            .bind(patient)
            .fetch_one(&mut *tx)
            .await?;
        if !known {
            return Ok(None);
        }
        let columns: Vec<String> = (&mut *tx)
            .prepare(sql)
            .await?
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let rows = sqlx::query(sql).bind(patient).fetch_all(&mut *tx).await?;
        Ok::<_, sqlx::Error>(Some((columns, rows)))
    }
    .await;
    tx.rollback().await?;
    let (columns, rows) = outcome
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.code().as_deref() == Some(QUERY_CANCELED) => {
                RecordsError::Timeout { ms }
            }
            _ => RecordsError::Database(e),
        })?
        .ok_or(RecordsError::UnknownPatient(patient))?;
    let rows = rows.iter().map(decode).collect::<Result<_, _>>()?;
    Ok((columns, rows))
}

fn decode(row: &PgRow) -> Result<Vec<Json>, RecordsError> {
    let mut out = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        if raw.is_null() {
            out.push(Json::Null);
            continue;
        }
        let kind = column.type_info().name().to_string();
        let value = match kind.as_str() {
            "INT2" => Json::from(row.try_get::<i16, _>(i)?),
            "INT4" => Json::from(row.try_get::<i32, _>(i)?),
            "INT8" => Json::from(row.try_get::<i64, _>(i)?),
            "FLOAT4" => float(f64::from(row.try_get::<f32, _>(i)?)),
            "FLOAT8" => float(row.try_get::<f64, _>(i)?),
            "BOOL" => Json::Bool(row.try_get::<bool, _>(i)?),
            "DATE" => Json::String(row.try_get::<chrono::NaiveDate, _>(i)?.to_string()),
            "TIMESTAMP" => Json::String(row.try_get::<chrono::NaiveDateTime, _>(i)?.to_string()),
            "NUMERIC" => {
                let bytes: &[u8] = match raw.format() {
                    PgValueFormat::Binary => raw.as_bytes().map_err(sqlx::Error::Decode)?,
                    PgValueFormat::Text => &[],
                };
                numeric(bytes).ok_or_else(|| bad_type(column.name(), &kind))?
            }
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "UNKNOWN" => {
                Json::String(row.try_get::<String, _>(i)?)
            }
            _ => return Err(bad_type(column.name(), &kind)),
        };
        out.push(value);
    }
    Ok(out)
}

fn bad_type(column: &str, kind: &str) -> RecordsError {
    RecordsError::Database(sqlx::Error::Decode(
        format!("result column `{column}` has type {kind}, which careflow does not read (cast it)")
            .into(),
    ))
}

fn float(x: f64) -> Json {
    serde_json::Number::from_f64(x).map_or(Json::Null, Json::Number)
}

/// PostgreSQL's binary NUMERIC (base-10000 digits, a weight and a sign) as a JSON number:
/// an integer when it has no fraction and fits, otherwise the nearest f64.
fn numeric(bytes: &[u8]) -> Option<Json> {
    let word = |i: usize| -> Option<i64> {
        let b = bytes.get(2 * i..2 * i + 2)?;
        Some(i64::from(i16::from_be_bytes([b[0], b[1]])))
    };
    let ndigits = usize::try_from(word(0)?).ok()?;
    let weight = word(1)?;
    let sign = u16::from_be_bytes([*bytes.get(4)?, *bytes.get(5)?]);
    let negative = match sign {
        0x0000 => false,
        0x4000 => true,
        _ => return Some(Json::Null), // NaN or ±infinity
    };
    let mut value = 0f64;
    let mut exact: Option<i64> = Some(0);
    for k in 0..ndigits {
        let digit = word(4 + k)?;
        let power = i32::try_from(weight - k as i64).ok()?;
        value += digit as f64 * 10_000f64.powi(power);
        exact = match (exact, power) {
            (Some(acc), p) if p >= 0 => 10_000i64
                .checked_pow(u32::try_from(p).ok()?)
                .and_then(|m| digit.checked_mul(m))
                .and_then(|d| acc.checked_add(d)),
            (Some(acc), _) if digit == 0 => Some(acc),
            _ => None,
        };
    }
    Some(match exact {
        Some(n) => Json::from(if negative { -n } else { n }),
        None => float(if negative { -value } else { value }),
    })
}

#[cfg(test)]
mod tests {
    use super::numeric;

    fn words(ws: &[i16]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    #[test]
    fn numeric_binary_decodes() {
        // 12345 = [1, 2345], weight 1
        assert_eq!(numeric(&words(&[2, 1, 0, 0, 1, 2345])), Some(12345.into()));
        // -0.5 = [5000], weight -1, negative
        let half = numeric(&words(&[1, -1, 0x4000, 1, 5000])).expect("decodes");
        assert_eq!(half.as_f64(), Some(-0.5));
        // zero: no digits
        assert_eq!(numeric(&words(&[0, 0, 0, 0])), Some(0.into()));
    }
}
