//! The SQL guard: model-written (or operator) SQL is parsed with `sqlparser` in the dialect
//! of the backend, checked against allow-lists (`check`, `allow`), given an enforced LIMIT
//! and the patient scope (`rewrite`), and rendered back from the AST: the text that runs is
//! the checked tree, never the input (comments and anything the parser skipped are gone).
//!
//! The rendered text is parsed and checked once more and must render to itself, so a
//! quoting difference between the parser and the database cannot smuggle text past it.

mod allow;
mod check;
mod rewrite;

use sqlparser::ast::Statement;
use sqlparser::dialect::{Dialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

use crate::error::RecordsError;
use check::{Checker, Verdict};

/// Longest SQL text the guard reads.
const MAX_SQL_CHARS: usize = 20_000;
/// Parser nesting limit (expressions, subqueries): deep nesting is refused, not recursed.
const MAX_NESTING: usize = 40;

/// The limits the guard applies to every statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardPolicy {
    /// Rows returned at most: a LIMIT is added when missing and lowered to this.
    pub max_limit: u64,
    /// Wall-clock bound of one statement, enforced by the database.
    pub statement_timeout_ms: u64,
}

impl Default for GuardPolicy {
    fn default() -> Self {
        GuardPolicy {
            max_limit: 200,
            statement_timeout_ms: 2_000,
        }
    }
}

/// The SQL dialect (and scope mechanism) of a records database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub(crate) fn parse(sql: &str, backend: Backend) -> Verdict<Vec<Statement>> {
    let dialect: &dyn Dialect = match backend {
        Backend::Sqlite => &SQLiteDialect {},
        Backend::Postgres => &PostgreSqlDialect {},
    };
    Parser::new(dialect)
        .with_recursion_limit(MAX_NESTING)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| format!("does not parse: {e}"))
}

/// Parses, checks and rewrites `sql` without touching a database: the result is the SQL
/// that [`crate::Records::query_scoped`] runs, with the patient as parameter 1 (`?1` on
/// SQLite, `$1` on PostgreSQL). A refusal is [`RecordsError::Rejected`] with the reason.
pub fn guard_sql(
    sql: &str,
    backend: Backend,
    policy: &GuardPolicy,
) -> Result<String, RecordsError> {
    guard(sql, backend, policy).map_err(|reason| RecordsError::Rejected { reason })
}

fn guard(sql: &str, backend: Backend, policy: &GuardPolicy) -> Verdict<String> {
    if sql.chars().count() > MAX_SQL_CHARS {
        return Err(format!(
            "the statement is longer than {MAX_SQL_CHARS} characters"
        ));
    }
    let stmts = parse(sql, backend)?;
    let mut query = Checker::statement(&stmts)?.clone();
    rewrite::enforce_limit(&mut query, policy.max_limit)?;
    let checked = query.to_string();
    let again = parse(&checked, backend)?;
    let reread = Checker::statement(&again)?;
    if reread.to_string() != checked {
        return Err("the statement does not render back to itself".to_string());
    }
    rewrite::add_scope(&mut query, backend)?;
    Ok(query.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(sql: &str) -> String {
        guard(sql, Backend::Sqlite, &GuardPolicy::default()).expect(sql)
    }
    fn no(sql: &str) -> String {
        guard(sql, Backend::Sqlite, &GuardPolicy::default()).expect_err(sql)
    }

    #[test]
    fn a_plain_select_gets_the_scope_and_a_limit() {
        let out = ok("SELECT condition_concept_id FROM condition_occurrence -- hi");
        assert!(out.starts_with("WITH person AS (SELECT * FROM main.person WHERE person_id = ?1)"));
        assert!(out.ends_with("SELECT condition_concept_id FROM condition_occurrence LIMIT 200"));
        assert!(ok("SELECT * FROM person LIMIT 1e9").ends_with("LIMIT 200"));
        assert!(ok("SELECT * FROM person LIMIT 3 OFFSET 1").ends_with("LIMIT 3 OFFSET 1"));
    }

    #[test]
    fn reasons_are_specific() {
        assert_eq!(no("SELECT 1; SELECT 2"), "only one statement");
        assert_eq!(
            no("SELECT * FROM sqlite_master"),
            "table `sqlite_master` is not allowed"
        );
        assert_eq!(
            no("SELECT load_extension('x')"),
            "function `load_extension` is not allowed"
        );
        assert_eq!(
            no("SELECT p.concept_name FROM person p"),
            "column `concept_name` is not allowed on table `person`"
        );
        assert!(no("SELECT * FROM main.person").contains("schema-qualified"));
        assert!(no("WITH person AS (SELECT 1) SELECT * FROM person").contains("reserved"));
        assert!(no("SELECT 1 UNION SELECT 2").contains("set operations"));
        assert!(no("DELETE FROM person").contains("DELETE"));
    }
}
