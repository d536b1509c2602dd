//! The guard's rewrites of a checked query: the enforced LIMIT, and the patient scope: a
//! CTE per patient table, named like the table and prepended to the query's WITH, so that
//! every unqualified reference to a patient table anywhere in the statement (subqueries,
//! joins, the user's own CTEs) reads only the patient's rows.

use sqlparser::ast::{Expr, LimitClause, Query, SetExpr, Statement, Value, With};

use super::allow::PATIENT_TABLES;
use super::check::{count_literal, Verdict};
use super::Backend;

/// Adds `LIMIT max` when the query has none and lowers a larger one to `max`; an OFFSET
/// is kept (`LIMIT o, n` becomes `LIMIT n OFFSET o`).
pub(crate) fn enforce_limit(q: &mut Query, max: u64) -> Verdict {
    let (limit, offset) = match q.limit_clause.take() {
        None => (None, None),
        Some(LimitClause::LimitOffset { limit, offset, .. }) => {
            (limit.as_ref().map(count_literal).transpose()?, offset)
        }
        Some(LimitClause::OffsetCommaLimit { offset, limit }) => (
            Some(count_literal(&limit)?),
            Some(sqlparser::ast::Offset {
                value: offset,
                rows: sqlparser::ast::OffsetRows::None,
            }),
        ),
    };
    let n = limit.map_or(max, |n| n.min(max));
    q.limit_clause = Some(LimitClause::LimitOffset {
        limit: Some(Expr::Value(
            Value::Number(n.to_string(), false).with_empty_span(),
        )),
        offset,
        limit_by: Vec::new(),
    });
    Ok(())
}

/// The scope CTEs' text for a backend. SQLite: `main.t` names the real table (a CTE only
/// shadows unqualified names, and SQLite treats a CTE that names itself as recursive).
/// PostgreSQL: a non-recursive CTE does not see its own name, so `t` is the real table
/// (found through the search path); row-level security scopes it again underneath.
fn scope_sql(backend: Backend) -> String {
    let (schema, param) = match backend {
        Backend::Sqlite => ("main.", "?1"),
        Backend::Postgres => ("", "$1"),
    };
    let ctes: Vec<String> = PATIENT_TABLES
        .iter()
        .map(|t| format!("{t} AS (SELECT * FROM {schema}{t} WHERE person_id = {param})"))
        .collect();
    format!("WITH {} SELECT 1", ctes.join(", "))
}

/// Prepends the scope CTEs (all seven, whether referenced or not: a reference the guard
/// did not see still lands on a scoped CTE) to the query's WITH.
pub(crate) fn add_scope(q: &mut Query, backend: Backend) -> Verdict {
    let sql = scope_sql(backend);
    let stmts = super::parse(&sql, backend)?;
    let scope = match stmts.into_iter().next() {
        Some(Statement::Query(s)) => s.with,
        _ => None,
    };
    let Some(mut scope) = scope else {
        return Err("internal: the scope CTEs did not parse".to_string());
    };
    match &mut q.with {
        Some(With {
            recursive: false,
            cte_tables,
            ..
        }) => {
            scope.cte_tables.append(cte_tables);
            *cte_tables = std::mem::take(&mut scope.cte_tables);
        }
        Some(_) => return Err("recursive CTEs (WITH RECURSIVE) are not allowed".to_string()),
        None => q.with = Some(scope),
    }
    if matches!(*q.body, SetExpr::Select(_) | SetExpr::Query(_)) {
        Ok(())
    } else {
        Err("only a SELECT is allowed".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_text_names_every_patient_table_once() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let sql = scope_sql(backend);
            for t in PATIENT_TABLES {
                assert_eq!(sql.matches(&format!("{t} AS (")).count(), 1, "{sql}");
            }
        }
        assert!(scope_sql(Backend::Sqlite).contains("FROM main.person WHERE person_id = ?1"));
    }
}
