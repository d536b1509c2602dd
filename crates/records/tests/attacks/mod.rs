//! The adversarial suite of the SQL guard, shared by the SQLite and PostgreSQL tests:
//! attempts generated as families × variants (tables, other persons, quoting), each with
//! what it may do, and the runner that checks every outcome:
//! - rejected by the guard, with a non-empty reason; or
//! - failed in the database (an error names no rows); or
//! - stopped by the statement timeout; or
//! - ran, and returned no row of another person (every `*person_id` column is the patient,
//!   counts equal the patient's own counts);
//!
//! and every attempt ends within the statement timeout plus a small slack.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use careflow_core::PatientId;
use careflow_records::{GuardPolicy, QueryResult, Records, RecordsError};
use serde_json::Value;

pub const PATIENT_TABLES: [&str; 7] = [
    "person",
    "visit_occurrence",
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
    "measurement",
    "observation",
];

/// What an attempt may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The guard must refuse it (on every backend).
    Reject,
    /// Anything safe: refused, failed, stopped, or rows of the patient only.
    Safe,
    /// If it runs: one row whose first value is the patient's own row count of the table.
    OwnCount(&'static str),
    /// If it runs: no rows at all.
    Zero,
    /// If it runs: one row whose first value is this number.
    Scalar(i64),
    /// A resource bomb: it must end within the bound (stopped, refused or finished).
    Bomb,
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub family: &'static str,
    pub sql: String,
    pub expect: Expect,
}

fn push(out: &mut Vec<Attempt>, family: &'static str, expect: Expect, sql: impl Into<String>) {
    out.push(Attempt {
        family,
        sql: sql.into(),
        expect,
    });
}

/// The key column of a patient table.
fn key(t: &str) -> String {
    match t {
        "person" => "person_id".to_string(),
        _ => format!("{t}_id"),
    }
}

/// Every attempt, for a patient whose neighbour (another person with data) is `other`.
pub fn attempts(other: i64) -> Vec<Attempt> {
    use Expect::*;
    let mut a = Vec::new();
    for t in PATIENT_TABLES {
        let k = key(t);
        // Plain reads: the whole table is the patient's part of it.
        push(&mut a, "select_star", Safe, format!("SELECT * FROM {t}"));
        push(
            &mut a,
            "count",
            OwnCount(t),
            format!("SELECT count(*) FROM {t}"),
        );
        // Asking for someone else by WHERE.
        push(
            &mut a,
            "other_person",
            Zero,
            format!("SELECT * FROM {t} WHERE person_id = {other}"),
        );
        push(
            &mut a,
            "or_true",
            Safe,
            format!("SELECT * FROM {t} WHERE person_id = {other} OR 1=1"),
        );
        push(
            &mut a,
            "or_true",
            OwnCount(t),
            format!("SELECT count(*) FROM {t} WHERE 1=1 OR person_id <> {other}"),
        );
        // Set operations into other persons.
        for op in ["UNION", "UNION ALL", "INTERSECT", "EXCEPT"] {
            push(
                &mut a,
                "set_operation",
                Reject,
                format!("SELECT person_id FROM {t} {op} SELECT person_id FROM main.{t}"),
            );
        }
        push(
            &mut a,
            "set_operation",
            Reject,
            format!("SELECT {k} FROM {t} WHERE person_id = 1 UNION SELECT {k} FROM {t}"),
        );
        // Comments hiding clauses (the guard runs the re-rendered tree: comments are gone).
        push(
            &mut a,
            "comment",
            OwnCount(t),
            format!("SELECT count(*) FROM {t} -- WHERE person_id = {other}"),
        );
        push(
            &mut a,
            "comment",
            Safe,
            format!("SELECT * FROM {t} /* ; DROP TABLE {t} */ WHERE 1=1"),
        );
        push(
            &mut a,
            "comment",
            OwnCount(t),
            format!("SELECT count(*) FROM {t} WHERE 1=1 --\n OR 1=1"),
        );
        push(
            &mut a,
            "comment",
            Reject,
            format!("SELECT * FROM /**/main/**/./**/{t}"),
        );
        // Stacked statements.
        push(
            &mut a,
            "stacked",
            Reject,
            format!("SELECT 1; DROP TABLE {t}"),
        );
        push(
            &mut a,
            "stacked",
            Reject,
            format!("SELECT * FROM {t}; DELETE FROM {t}"),
        );
        push(
            &mut a,
            "stacked",
            Reject,
            format!("SELECT * FROM {t} WHERE person_id = 1; SELECT * FROM {t}"),
        );
        // Unscoped-looking subqueries: they read the scoped table too.
        push(
            &mut a,
            "subquery",
            OwnCount(t),
            format!("SELECT (SELECT count(*) FROM {t}) AS n"),
        );
        push(
            &mut a,
            "subquery",
            OwnCount(t),
            format!("SELECT count(*) FROM (SELECT * FROM {t}) AS x"),
        );
        push(
            &mut a,
            "subquery",
            Safe,
            format!("SELECT * FROM person WHERE person_id IN (SELECT person_id FROM {t})"),
        );
        push(&mut a, "subquery", OwnCount(t), format!("SELECT count(*) FROM {t} WHERE person_id IN (SELECT person_id FROM {t} WHERE person_id <> {other})"));
        // Correlated subqueries looking for anyone else.
        push(&mut a, "correlated", Zero, format!("SELECT * FROM {t} AS a WHERE EXISTS (SELECT 1 FROM {t} AS b WHERE b.person_id <> a.person_id)"));
        push(&mut a, "correlated", Scalar(0), format!("SELECT (SELECT count(*) FROM {t} AS x WHERE x.person_id <> p.person_id) AS foreign_rows FROM person AS p"));
        push(&mut a, "correlated", Scalar(0), format!("SELECT count(*) FROM {t} AS a WHERE a.person_id IN (SELECT b.person_id FROM {t} AS b WHERE b.person_id <> a.person_id)"));
        // Data modification and definition.
        push(
            &mut a,
            "dml",
            Reject,
            format!("INSERT INTO {t} ({k}, person_id) VALUES (999999, {other})"),
        );
        push(
            &mut a,
            "dml",
            Reject,
            format!("UPDATE {t} SET person_id = {other}"),
        );
        push(
            &mut a,
            "dml",
            Reject,
            format!("DELETE FROM {t} WHERE person_id = {other}"),
        );
        push(&mut a, "dml", Reject, format!("DROP TABLE {t}"));
        push(
            &mut a,
            "dml",
            Reject,
            format!("CREATE VIEW v AS SELECT * FROM {t}"),
        );
        push(
            &mut a,
            "dml",
            Reject,
            format!("ALTER TABLE {t} ADD COLUMN x TEXT"),
        );
        push(
            &mut a,
            "dml",
            Reject,
            format!("WITH d AS (DELETE FROM {t} RETURNING *) SELECT * FROM d"),
        );
        // Quoting and case: still the scoped table (or an error), never the real one.
        push(
            &mut a,
            "quoting",
            OwnCount(t),
            format!("SELECT count(*) FROM {}", t.to_uppercase()),
        );
        push(
            &mut a,
            "quoting",
            OwnCount(t),
            format!("SELECT count(*) FROM \"{t}\""),
        );
        push(
            &mut a,
            "quoting",
            OwnCount(t),
            format!("SELECT count(*) FROM [{t}]"),
        );
        push(
            &mut a,
            "quoting",
            OwnCount(t),
            format!("SELECT count(*) FROM `{t}`"),
        );
        push(
            &mut a,
            "quoting",
            OwnCount(t),
            format!("SELECT count(*) FROM \"{}\"", t.to_uppercase()),
        );
        push(
            &mut a,
            "schema",
            Reject,
            format!("SELECT count(*) FROM main.{t}"),
        );
        push(
            &mut a,
            "schema",
            Reject,
            format!("SELECT count(*) FROM temp.{t}"),
        );
        push(
            &mut a,
            "schema",
            Reject,
            format!("SELECT count(*) FROM \"main\".\"{t}\""),
        );
        push(
            &mut a,
            "schema",
            Reject,
            format!("SELECT count(*) FROM public.{t}"),
        );
        push(
            &mut a,
            "schema",
            Safe,
            format!("SELECT count(*) FROM \"main.{t}\""),
        );
        // User CTEs named like OMOP tables, or aliases taking their names.
        push(
            &mut a,
            "cte_shadow",
            Reject,
            format!("WITH {t} AS (SELECT * FROM main.{t}) SELECT * FROM {t}"),
        );
        push(
            &mut a,
            "cte_shadow",
            Reject,
            format!("WITH x AS (SELECT 1), {t} AS (SELECT * FROM x) SELECT * FROM {t}"),
        );
        push(
            &mut a,
            "cte_shadow",
            OwnCount(t),
            format!("WITH mine AS (SELECT * FROM {t}) SELECT count(*) FROM mine"),
        );
        push(
            &mut a,
            "alias_shadow",
            Reject,
            format!("SELECT * FROM concept AS {t}"),
        );
    }

    // Unicode look-alikes of table names: refused (SQLite folds ASCII case only).
    for sql in [
        "SELECT count(*) FROM p\u{0435}rson", // Cyrillic е
        "SELECT count(*) FROM \"p\u{0435}rson\"",
        "SELECT count(*) FROM per\u{0455}on", // Cyrillic ѕ
        "SELECT count(*) FROM \u{FF50}erson", // fullwidth p
        "SELECT count(*) FROM measurem\u{0435}nt",
        "SELECT count(*) FROM \"person\u{200B}\"", // zero-width space
        "SELECT count(*) FROM obs\u{0435}rvation",
        "SELECT person_\u{0456}d FROM person", // Cyrillic і
    ] {
        push(&mut a, "homoglyph", Reject, sql);
    }
    // Catalogs and system tables.
    for sql in [
        "SELECT * FROM sqlite_master",
        "SELECT * FROM sqlite_schema",
        "SELECT * FROM sqlite_temp_master",
        "SELECT * FROM main.sqlite_master",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM pg_catalog.pg_tables",
        "SELECT * FROM pg_class",
        "SELECT * FROM pg_authid",
        "SELECT * FROM pg_roles",
        "SELECT * FROM _sqlx_migrations",
        "SELECT * FROM pragma_table_info('person')",
        "SELECT * FROM json_each('[1,2]')",
        "SELECT * FROM generate_series(1, 1000000000)",
        "SELECT * FROM pg_stat_activity",
    ] {
        push(&mut a, "catalog", Reject, sql);
    }
    // Functions outside the allow-list.
    for f in [
        "load_extension('/tmp/evil.so')",
        "readfile('/etc/passwd')",
        "writefile('/tmp/x', 'y')",
        "pg_read_file('/etc/passwd')",
        "pg_read_binary_file('/etc/passwd')",
        "pg_ls_dir('.')",
        "pg_sleep(10)",
        "lo_import('/etc/passwd')",
        "current_setting('careflow.patient_id')",
        "set_config('careflow.patient_id', '1', false)",
        "randomblob(1000000000)",
        "zeroblob(1000000000)",
        "hex(randomblob(500000000))",
        "printf('%.*c', 1000000000, 'x')",
        "replace(replace(replace('xx', 'x', 'xxxxxxxxxx'), 'x', 'xxxxxxxxxx'), 'x', 'xxxxxxxxxx')",
        "sqlite_version()",
        "version()",
        "random()",
        "char(65)",
        "dblink('host=x', 'select 1')",
        "query_to_xml('select * from person', true, true, '')",
        "pg_catalog.lower('x')",
        "main.lower('x')",
        "like('%a%', 'abc')",
        "unicode('a')",
        "pg_terminate_backend(1)",
    ] {
        push(&mut a, "function", Reject, format!("SELECT {f}"));
    }
    push(
        &mut a,
        "function",
        Reject,
        "SELECT group_concat(concept_name) FROM concept",
    );
    push(
        &mut a,
        "function",
        Reject,
        "SELECT string_agg(concept_name, ',') FROM concept",
    );
    push(
        &mut a,
        "function",
        Reject,
        "SELECT count(*) FILTER (WHERE pg_sleep(1) IS NULL) FROM person",
    );
    push(
        &mut a,
        "function",
        Reject,
        "SELECT person_id FROM person WHERE length(randomblob(1000000000)) > 0",
    );
    // Statements that are not a SELECT.
    for sql in [
        "PRAGMA query_only = OFF",
        "PRAGMA table_info(person)",
        "PRAGMA writable_schema = ON",
        "ATTACH DATABASE '/tmp/evil.db' AS evil",
        "ATTACH '/tmp/evil.db' AS evil",
        "DETACH DATABASE main",
        "VACUUM",
        "VACUUM INTO '/tmp/copy.db'",
        "REINDEX",
        "ANALYZE",
        "COPY person TO '/tmp/person.csv'",
        "COPY (SELECT * FROM person) TO PROGRAM 'cat'",
        "SET ROLE postgres",
        "RESET ROLE",
        "SET careflow.patient_id = '1'",
        "SET LOCAL statement_timeout = 0",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "EXPLAIN SELECT * FROM person",
        "CREATE TEMP TABLE t AS SELECT * FROM person",
        "CREATE TEMP VIEW person AS SELECT * FROM main.person",
        "SELECT * INTO TEMP stolen FROM person",
        "REPLACE INTO person (person_id, gender_concept_id, year_of_birth) VALUES (1, 1, 1)",
        "INSERT OR REPLACE INTO person (person_id, gender_concept_id, year_of_birth) VALUES (1, 1, 1)",
        "DROP TABLE IF EXISTS concept",
        "DELETE FROM concept",
        "UPDATE concept SET concept_name = 'x'",
        "GRANT ALL ON person TO PUBLIC",
        "ALTER TABLE person DISABLE ROW LEVEL SECURITY",
        "DO $$ BEGIN PERFORM 1; END $$",
        "CALL something()",
        "LISTEN x",
        "TRUNCATE person",
        "SELECT * FROM person FOR UPDATE",
        "VALUES (1), (2)",
        "TABLE person",
        "",
        "   ;  ",
        "-- only a comment",
    ] {
        push(&mut a, "not_select", Reject, sql);
    }
    // Recursive CTE bombs (with and without the RECURSIVE keyword).
    for sql in [
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
        "WITH r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 1000000000) SELECT max(n) FROM r",
        "WITH RECURSIVE r(p) AS (SELECT person_id FROM person UNION ALL SELECT p FROM r, measurement) SELECT count(*) FROM r",
        "WITH r AS (SELECT * FROM r) SELECT * FROM r",
        "WITH a AS (SELECT * FROM b), b AS (SELECT * FROM a) SELECT * FROM a",
        "SELECT * FROM (WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r) AS x",
    ] {
        push(&mut a, "recursive", Reject, sql);
    }
    // Cartesian bombs: allowed by the guard, stopped by the statement timeout.
    for sql in [
        "SELECT count(*) FROM measurement a, measurement b, measurement c, measurement d",
        "SELECT count(*) FROM observation a CROSS JOIN observation b CROSS JOIN observation c CROSS JOIN observation d",
        "SELECT a.measurement_id FROM measurement a, measurement b, measurement c ORDER BY a.value_as_number + b.value_as_number + c.value_as_number LIMIT 1000000000",
        "SELECT max(a.measurement_id + b.measurement_id + c.measurement_id + d.measurement_id) FROM measurement a JOIN measurement b ON 1=1 JOIN measurement c ON 1=1 JOIN measurement d ON 1=1",
        "SELECT count(DISTINCT a.measurement_id * 1000000 + b.measurement_id + c.observation_id) FROM measurement a, measurement b, observation c, observation d",
        "SELECT count(*) FROM concept a, concept b, concept c",
        "SELECT (SELECT count(*) FROM measurement a, measurement b, measurement c, measurement d) AS n",
        "SELECT count(*) FROM measurement a WHERE EXISTS (SELECT 1 FROM measurement b, measurement c, measurement d WHERE b.value_as_number = -1)",
        "SELECT lower(upper(lower(upper(a.concept_name)))) FROM concept a, concept b, concept c ORDER BY 1 DESC LIMIT 5",
    ] {
        push(&mut a, "cartesian", Bomb, sql);
    }
    // Pattern-matching bombs (backtracking on many wildcards).
    let wild = "%a".repeat(24);
    push(&mut a, "like_bomb", Bomb, format!("SELECT count(*) FROM concept a, concept b WHERE a.concept_name || b.concept_name LIKE '{wild}%b'"));
    push(&mut a, "like_bomb", Bomb, format!("SELECT count(*) FROM measurement WHERE lower(unit_source_value || measurement_source_value) LIKE '{}'", "%_".repeat(200)));
    // LIMIT tricks.
    for (sql, expect) in [
        ("SELECT * FROM measurement LIMIT 1e9", Safe),
        ("SELECT * FROM measurement LIMIT 1000000000", Safe),
        (
            "SELECT * FROM measurement LIMIT 99999999999999999999999",
            Safe,
        ),
        ("SELECT * FROM measurement LIMIT -1", Reject),
        ("SELECT * FROM measurement LIMIT 10 OFFSET -1", Reject),
        ("SELECT * FROM measurement LIMIT (SELECT 1000000)", Reject),
        ("SELECT * FROM measurement LIMIT 1 + 1000000", Reject),
        ("SELECT * FROM measurement LIMIT 0.5", Reject),
        ("SELECT * FROM measurement LIMIT 5, 1000000", Safe),
        ("SELECT * FROM measurement LIMIT ALL", Safe),
        ("SELECT * FROM measurement LIMIT 'x'", Reject),
        (
            "SELECT * FROM measurement FETCH FIRST 1000000 ROWS ONLY",
            Reject,
        ),
        (
            "SELECT * FROM (SELECT * FROM measurement LIMIT -1) AS x",
            Reject,
        ),
    ] {
        push(&mut a, "limit", expect, sql);
    }
    // Subqueries in every clause: each reads the scoped tables.
    for sql in [
        "SELECT (SELECT max(person_id) FROM person) AS person_id",
        "SELECT person_id FROM (SELECT person_id FROM condition_occurrence) AS x",
        "SELECT person_id FROM person WHERE person_id = (SELECT max(person_id) FROM measurement)",
        "SELECT count(*) AS n, (SELECT min(person_id) FROM observation) AS person_id FROM person GROUP BY (SELECT max(person_id) FROM drug_exposure)",
        "SELECT person_id FROM person GROUP BY person_id HAVING count(*) < (SELECT count(*) FROM measurement) + 1",
        "SELECT person_id FROM person ORDER BY (SELECT max(person_id) FROM visit_occurrence)",
        "SELECT p.person_id FROM person AS p JOIN condition_occurrence AS c ON c.person_id = (SELECT max(person_id) FROM procedure_occurrence)",
        "SELECT CASE WHEN (SELECT count(*) FROM person) > 1 THEN 0 ELSE (SELECT max(person_id) FROM person) END AS person_id",
        "SELECT coalesce((SELECT max(person_id) FROM person WHERE person_id <> 0), 0) AS person_id",
        "SELECT person_id FROM person WHERE EXISTS (SELECT 1 FROM measurement WHERE measurement.person_id <> person.person_id)",
        "SELECT x.person_id FROM (SELECT (SELECT max(person_id) FROM observation) AS person_id) AS x",
        "SELECT * FROM person, person",
        "SELECT count(*) OVER () AS n, person_id FROM condition_occurrence",
        "SELECT * FROM condition_occurrence NATURAL JOIN person",
        "SELECT * FROM condition_occurrence JOIN person USING (person_id)",
    ] {
        push(&mut a, "clauses", Safe, sql);
    }
    push(
        &mut a,
        "clauses",
        Scalar(0),
        "SELECT count(*) FROM person AS p1 JOIN person AS p2 ON p1.person_id <> p2.person_id",
    );
    push(&mut a, "clauses", Scalar(1), "SELECT count(*) FROM person");
    push(&mut a, "clauses", Scalar(1), "SELECT count(DISTINCT person_id) FROM measurement AS m WHERE m.person_id IS NOT NULL OR 1=1 OR EXISTS (SELECT 1 FROM observation)");
    // Placeholders: the patient is bound by the guard, never by the statement.
    for sql in [
        "SELECT * FROM person WHERE person_id = ?1",
        "SELECT * FROM person WHERE person_id = $1",
        "SELECT * FROM person WHERE person_id = ?",
        "SELECT * FROM person WHERE person_id = :id",
        "SELECT * FROM person WHERE person_id = @id",
    ] {
        push(&mut a, "placeholder", Reject, sql);
    }
    // Hidden and system columns.
    for sql in [
        "SELECT rowid FROM person",
        "SELECT _rowid_, oid FROM measurement",
        "SELECT ctid, xmin, tableoid FROM person",
        "SELECT person.rowid FROM person",
        "SELECT p.ctid FROM person AS p",
        "SELECT person.concept_name FROM person",
        "SELECT nosuchcolumn FROM person",
        "SELECT main.person.person_id FROM person",
    ] {
        push(&mut a, "column", Reject, sql);
    }
    // Casts and literals that reach the catalog.
    for sql in [
        "SELECT 'pg_authid'::regclass",
        "SELECT CAST('person' AS regclass)",
        "SELECT 1::oid",
        "SELECT E'\\x41'",
        "SELECT x'41'",
        "SELECT person_id FROM person WHERE person_id = ANY (ARRAY[1, 2, 3])",
        "SELECT person_id FROM person WHERE person_id OPERATOR(pg_catalog.=) 1",
        "SELECT person_id FROM person WHERE person_id::text ~ '.*'",
        "SELECT person_id FROM person WHERE person_id GLOB '*'",
        "SELECT person_id & 1 FROM person",
        "SELECT person_id FROM person p, LATERAL (SELECT pg_sleep(5)) AS s",
    ] {
        push(&mut a, "cast_literal", Reject, sql);
    }
    // Nesting bombs: deep expressions and subqueries are refused by the parser limit.
    push(
        &mut a,
        "nesting",
        Reject,
        format!("SELECT {}1{}", "(".repeat(500), ")".repeat(500)),
    );
    push(
        &mut a,
        "nesting",
        Reject,
        format!("SELECT {}1", "- ".repeat(500)),
    );
    push(
        &mut a,
        "nesting",
        Reject,
        format!("SELECT {} 1 {}", "(SELECT".repeat(100), ")".repeat(100)),
    );
    push(
        &mut a,
        "nesting",
        Reject,
        format!("SELECT 1 {}", "x".repeat(30_000)),
    );
    a
}

/// How an attempt ended.
#[derive(Debug)]
pub enum Outcome {
    Rejected(String),
    Failed(String),
    TimedOut,
    Ran(QueryResult),
}

/// Tallies of a suite run.
#[derive(Debug, Default)]
pub struct Tally {
    pub attempts: usize,
    pub rejected: usize,
    pub failed: usize,
    pub timed_out: usize,
    pub ran: usize,
    pub rows_seen: usize,
    pub slowest: Duration,
    pub bombs: Vec<(String, Duration, &'static str)>,
    pub families: BTreeMap<&'static str, usize>,
}

/// Runs every attempt for `patient` (whose own row counts are `own`), panicking on the
/// first unsafe outcome, and returns the tally.
pub async fn run_suite(
    records: &Records,
    patient: PatientId,
    other: PatientId,
    own: &BTreeMap<String, i64>,
    policy: &GuardPolicy,
) -> Tally {
    let bound = Duration::from_millis(policy.statement_timeout_ms) + Duration::from_millis(1_000);
    let mut tally = Tally::default();
    for attempt in attempts(other.0) {
        let started = Instant::now();
        let outcome = match records.query_scoped(patient, &attempt.sql, policy).await {
            Ok(r) => Outcome::Ran(r),
            Err(RecordsError::Rejected { reason }) => Outcome::Rejected(reason),
            Err(RecordsError::Timeout { .. }) => Outcome::TimedOut,
            Err(e) => Outcome::Failed(e.to_string()),
        };
        let took = started.elapsed();
        if std::env::var_os("CAREFLOW_ATTACK_LOG").is_some() {
            println!(
                "{:>9.3?} [{}] {:?} -> {}",
                took,
                attempt.family,
                attempt.sql,
                outcome_brief(&outcome)
            );
        }
        let what = format!(
            "[{}] {:?} for patient {}: {:?}",
            attempt.family,
            attempt.sql,
            patient.0,
            outcome_brief(&outcome)
        );
        assert!(took <= bound, "{what}: took {took:?}, more than {bound:?}");
        tally.attempts += 1;
        *tally.families.entry(attempt.family).or_default() += 1;
        tally.slowest = tally.slowest.max(took);
        if attempt.expect == Expect::Bomb {
            let how = match &outcome {
                Outcome::TimedOut => "stopped by the timeout",
                Outcome::Rejected(_) => "rejected",
                Outcome::Failed(_) => "failed",
                Outcome::Ran(_) => "finished",
            };
            tally.bombs.push((attempt.sql.clone(), took, how));
        }
        match outcome {
            Outcome::Rejected(reason) => {
                assert!(
                    !reason.trim().is_empty(),
                    "{what}: a rejection without a reason"
                );
                tally.rejected += 1;
            }
            Outcome::Failed(_) => {
                assert_ne!(
                    attempt.expect,
                    Expect::Reject,
                    "{what}: must be rejected by the guard"
                );
                tally.failed += 1;
            }
            Outcome::TimedOut => {
                assert_ne!(
                    attempt.expect,
                    Expect::Reject,
                    "{what}: must be rejected by the guard"
                );
                tally.timed_out += 1;
            }
            Outcome::Ran(result) => {
                assert_ne!(
                    attempt.expect,
                    Expect::Reject,
                    "{what}: must be rejected by the guard"
                );
                check_rows(&result, patient, &what);
                match attempt.expect {
                    Expect::OwnCount(t) => {
                        let want = own[t];
                        assert_eq!(result.rows.len(), 1, "{what}");
                        assert_eq!(
                            result.rows[0][0].as_i64(),
                            Some(want),
                            "{what}: not the patient's own count of {t}"
                        );
                    }
                    Expect::Zero => assert!(result.rows.is_empty(), "{what}: rows returned"),
                    Expect::Scalar(n) => {
                        assert_eq!(result.rows.len(), 1, "{what}");
                        assert_eq!(result.rows[0][0].as_i64(), Some(n), "{what}");
                    }
                    _ => {}
                }
                assert!(
                    result.rows.len() as u64 <= policy.max_limit,
                    "{what}: more rows than the limit"
                );
                assert!(
                    !result.sql_run.contains("--") && !result.sql_run.contains("/*"),
                    "{what}: comments survived"
                );
                tally.rows_seen += result.rows.len();
                tally.ran += 1;
            }
        }
    }
    tally
}

fn outcome_brief(o: &Outcome) -> String {
    match o {
        Outcome::Rejected(r) => format!("rejected: {r}"),
        Outcome::Failed(e) => format!("failed: {e}"),
        Outcome::TimedOut => "timed out".to_string(),
        Outcome::Ran(r) => format!("ran: {} rows, columns {:?}", r.rows.len(), r.columns),
    }
}

/// Every column whose name ends in `person_id` holds the patient (or null), in every row.
pub fn check_rows(result: &QueryResult, patient: PatientId, what: &str) {
    for (i, column) in result.columns.iter().enumerate() {
        if !column.to_ascii_lowercase().ends_with("person_id") {
            continue;
        }
        for row in &result.rows {
            match &row[i] {
                Value::Null => {}
                v => assert_eq!(
                    v.as_i64(),
                    Some(patient.0),
                    "{what}: column {column} holds another person"
                ),
            }
        }
    }
}

/// The patient's own row count per table, by plain SQL with an explicit filter (an
/// independent check of the scope). `count_sql` gets the table and returns the count.
pub async fn own_counts<F, Fut>(count_sql: F) -> BTreeMap<String, i64>
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let mut out = BTreeMap::new();
    for t in PATIENT_TABLES {
        out.insert(t.to_string(), count_sql(t).await);
    }
    out
}

/// Legitimate questions that must run and answer for the patient.
pub const LEGIT: &[&str] = &[
    "SELECT c.concept_name, co.condition_start_date, co.condition_end_date FROM condition_occurrence AS co JOIN concept AS c ON c.concept_id = co.condition_concept_id ORDER BY co.condition_start_date DESC",
    "SELECT c.concept_name, m.value_as_number, m.unit_source_value, m.measurement_date FROM measurement AS m JOIN concept AS c ON c.concept_id = m.measurement_concept_id ORDER BY m.measurement_date DESC, m.measurement_id DESC LIMIT 10",
    "SELECT DISTINCT c.concept_name FROM drug_exposure AS d JOIN concept AS c ON c.concept_id = d.drug_concept_id WHERE d.drug_exposure_start_date >= '2021-10-10' ORDER BY c.concept_name",
    "SELECT year_of_birth, gender_concept_id FROM person",
    "SELECT count(*) AS visits, max(visit_start_date) AS last_visit FROM visit_occurrence",
    "WITH recent AS (SELECT * FROM measurement WHERE measurement_date >= '2020-01-01') SELECT count(*) FROM recent",
    "SELECT c.concept_name, count(*) AS times FROM procedure_occurrence AS p JOIN concept AS c ON c.concept_id = p.procedure_concept_id GROUP BY c.concept_name ORDER BY times DESC, c.concept_name LIMIT 5",
    "SELECT lower(c.concept_name) AS name FROM condition_occurrence AS co JOIN concept AS c ON c.concept_id = co.condition_concept_id WHERE co.condition_end_date IS NULL",
];
