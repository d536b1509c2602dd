//! The guard's walk over one parsed statement. It is default-deny: every AST node it does
//! not explicitly accept is refused with a reason, and structs are destructured field by
//! field, so a new field in a future `sqlparser` fails to compile instead of slipping through.
//!
//! Names are resolved with scopes: each SELECT's FROM binds table names and aliases to an
//! allow-listed table (whose columns are then checked) or to a derived relation (a CTE or a
//! subquery, whose columns must be OMOP columns or aliases the statement itself defines).
//! FROM clauses are in `from`, expressions and function calls in `expr`.

mod expr;
mod from;

use std::collections::HashSet;

use sqlparser::ast::{
    Cte, Distinct, Expr, GroupByExpr, Ident, LimitClause, ObjectName, ObjectNamePart, OrderBy,
    OrderByExpr, OrderByKind, Query, Select, SelectFlavor, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, Statement, Value, ValueWithSpan,
    WildcardAdditionalOptions, With,
};

use super::allow;
use crate::table::TableSpec;

pub(crate) type Verdict<T = ()> = Result<T, String>;

fn reject<T>(reason: impl Into<String>) -> Verdict<T> {
    Err(reason.into())
}

/// The enum variant of an AST node, from its `Debug` text ("BinaryOp", "Function", …).
fn variant<T: std::fmt::Debug>(node: &T) -> String {
    let text = format!("{node:?}");
    text.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The SQL text of a node, cut to a readable length for a rejection reason.
fn shown<T: std::fmt::Display>(node: &T) -> String {
    let text = node.to_string();
    match text.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// An identifier, ASCII-lowercased (SQLite folds ASCII case only, so a non-ASCII look-alike
/// such as a Cyrillic `е` or the Kelvin sign can never match an allow-listed name).
pub(crate) fn ident(id: &Ident) -> Verdict<String> {
    let ok = !id.value.is_empty()
        && id
            .value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ' ');
    if !ok {
        return reject(format!(
            "identifier `{}` is not allowed (use ASCII letters, digits and _)",
            id.value.escape_debug()
        ));
    }
    Ok(id.value.to_ascii_lowercase())
}

/// A one-part object name (no `main.person`, `pg_catalog.lower`).
fn single(name: &ObjectName, what: &str) -> Verdict<String> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(id)] => ident(id),
        _ => reject(format!(
            "{what} `{}` is not allowed (schema-qualified names are refused)",
            shown(name)
        )),
    }
}

/// A LIMIT or OFFSET: a non-negative whole number literal (SQLite reads a negative LIMIT
/// as "no limit"; an expression could hide a subquery).
pub(crate) fn count_literal(e: &Expr) -> Verdict<u64> {
    let bad = || {
        reject(format!(
            "LIMIT and OFFSET must be non-negative whole numbers, not `{}`",
            shown(e)
        ))
    };
    let Expr::Value(ValueWithSpan {
        value: Value::Number(text, _),
        ..
    }) = e
    else {
        return bad();
    };
    if let Ok(n) = text.parse::<u64>() {
        return Ok(n);
    }
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 && x.fract() == 0.0 => Ok(if x >= u64::MAX as f64 {
            u64::MAX
        } else {
            x as u64
        }),
        _ => bad(),
    }
}

#[derive(Clone, Copy)]
enum Binding {
    Omop(&'static TableSpec),
    Derived,
}

#[derive(Default)]
pub(crate) struct Checker {
    /// FROM scopes, innermost last: (name or alias, what it is).
    scopes: Vec<Vec<(String, Binding)>>,
    /// CTE names visible, one frame per WITH.
    ctes: Vec<Vec<String>>,
    /// Every column or table-column alias the statement defines.
    aliases: HashSet<String>,
    /// Unqualified column names, checked once the whole statement has been read.
    bare: Vec<String>,
}

impl Checker {
    /// Checks a parsed script: exactly one statement, a query, and everything in it.
    pub(crate) fn statement(stmts: &[Statement]) -> Verdict<&Query> {
        let query = match stmts {
            [] => return reject("no statement"),
            [Statement::Query(q)] => q,
            [other] => {
                let word = other.to_string();
                let word = word.split_whitespace().next().unwrap_or_default();
                return reject(format!(
                    "only a SELECT is allowed, not `{}`",
                    word.to_ascii_uppercase()
                ));
            }
            _ => return reject("only one statement"),
        };
        let mut checker = Checker::default();
        checker.query(query)?;
        for name in &checker.bare {
            if !allow::is_column(name) && !checker.aliases.contains(name) {
                return reject(format!("column `{name}` is not allowed"));
            }
        }
        Ok(query)
    }

    fn query(&mut self, q: &Query) -> Verdict {
        let Query {
            with,
            body,
            order_by,
            limit_clause,
            fetch,
            locks,
            for_clause,
            settings,
            format_clause,
            pipe_operators,
        } = q;
        if fetch.is_some() {
            return reject("FETCH is not allowed (use LIMIT)");
        }
        if !locks.is_empty() {
            return reject("FOR UPDATE / FOR SHARE is not allowed");
        }
        if for_clause.is_some()
            || settings.is_some()
            || format_clause.is_some()
            || !pipe_operators.is_empty()
        {
            return reject(format!("query clause not allowed in `{}`", shown(q)));
        }
        self.ctes.push(Vec::new());
        if let Some(w) = with {
            self.with(w)?;
        }
        let scopes_before = self.scopes.len();
        self.set_expr(body)?;
        if let Some(o) = order_by {
            self.order_by(o)?;
        }
        self.scopes.truncate(scopes_before);
        if let Some(l) = limit_clause {
            match l {
                LimitClause::LimitOffset {
                    limit,
                    offset,
                    limit_by,
                } => {
                    if !limit_by.is_empty() {
                        return reject("LIMIT BY is not allowed");
                    }
                    if let Some(e) = limit {
                        count_literal(e)?;
                    }
                    if let Some(o) = offset {
                        count_literal(&o.value)?;
                    }
                }
                LimitClause::OffsetCommaLimit { offset, limit } => {
                    count_literal(offset)?;
                    count_literal(limit)?;
                }
            }
        }
        self.ctes.pop();
        Ok(())
    }

    fn with(&mut self, w: &With) -> Verdict {
        if w.recursive {
            return reject("recursive CTEs (WITH RECURSIVE) are not allowed");
        }
        for cte in &w.cte_tables {
            let Cte {
                alias,
                query,
                from,
                materialized: _,
                closing_paren_token: _,
            } = cte;
            if from.is_some() {
                return reject("CTE … FROM is not allowed");
            }
            let name = self.table_alias(alias, None)?;
            // The body is checked before its own name is visible: a CTE that names itself
            // (recursion without the RECURSIVE keyword, as SQLite allows) is refused.
            self.query(query)?;
            if let Some(frame) = self.ctes.last_mut() {
                frame.push(name);
            }
        }
        Ok(())
    }

    fn set_expr(&mut self, body: &SetExpr) -> Verdict {
        match body {
            SetExpr::Select(s) => self.select(s),
            SetExpr::Query(q) => self.query(q),
            SetExpr::SetOperation { op, .. } => reject(format!(
                "set operations ({op}) are not allowed: ask one question per SELECT"
            )),
            other => reject(format!("only a SELECT is allowed, not {}", variant(other))),
        }
    }

    /// Checks a SELECT and leaves its FROM scope pushed (the caller's ORDER BY reads it).
    fn select(&mut self, s: &Select) -> Verdict {
        let Select {
            select_token: _,
            optimizer_hints,
            distinct,
            select_modifiers,
            top,
            top_before_distinct: _,
            projection,
            exclude,
            into,
            from,
            lateral_views,
            prewhere,
            selection,
            connect_by,
            group_by,
            cluster_by,
            distribute_by,
            sort_by,
            having,
            named_window,
            qualify,
            window_before_qualify: _,
            value_table_mode,
            flavor,
        } = s;
        if into.is_some() {
            return reject("SELECT INTO is not allowed");
        }
        if !optimizer_hints.is_empty()
            || select_modifiers.is_some()
            || top.is_some()
            || exclude.is_some()
            || !lateral_views.is_empty()
            || prewhere.is_some()
            || !connect_by.is_empty()
            || !cluster_by.is_empty()
            || !distribute_by.is_empty()
            || !sort_by.is_empty()
            || !named_window.is_empty()
            || qualify.is_some()
            || value_table_mode.is_some()
            || !matches!(flavor, SelectFlavor::Standard)
        {
            return reject(format!("SELECT clause not allowed in `{}`", shown(s)));
        }
        self.scopes.push(Vec::new());
        for t in from {
            self.table_with_joins(t)?;
        }
        for item in projection {
            self.select_item(item)?;
        }
        match distinct {
            None | Some(Distinct::Distinct) | Some(Distinct::All) => {}
            Some(Distinct::On(exprs)) => self.exprs(exprs)?,
        }
        if let Some(e) = selection {
            self.expr(e)?;
        }
        match group_by {
            GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => {
                self.exprs(exprs)?
            }
            other => return reject(format!("GROUP BY `{}` is not allowed", shown(other))),
        }
        if let Some(e) = having {
            self.expr(e)?;
        }
        Ok(())
    }

    fn select_item(&mut self, item: &SelectItem) -> Verdict {
        match item {
            SelectItem::UnnamedExpr(e) => self.expr(e),
            SelectItem::ExprWithAlias { expr, alias } => {
                self.expr(expr)?;
                let a = ident(alias)?;
                self.aliases.insert(a);
                Ok(())
            }
            SelectItem::Wildcard(opts) => wildcard_options(opts),
            SelectItem::QualifiedWildcard(kind, opts) => {
                wildcard_options(opts)?;
                match kind {
                    SelectItemQualifiedWildcardKind::ObjectName(n) => {
                        let q = single(n, "table")?;
                        self.resolve(&q).map(|_| ())
                    }
                    SelectItemQualifiedWildcardKind::Expr(e) => {
                        reject(format!("`{}.*` is not allowed", shown(e)))
                    }
                }
            }
            SelectItem::ExprWithAliases { .. } => reject("multiple aliases are not allowed"),
        }
    }

    fn order_by(&mut self, o: &OrderBy) -> Verdict {
        if o.interpolate.is_some() {
            return reject("INTERPOLATE is not allowed");
        }
        match &o.kind {
            OrderByKind::Expressions(items) => self.order_by_exprs(items),
            OrderByKind::All(_) => reject("ORDER BY ALL is not allowed"),
        }
    }

    fn order_by_exprs(&mut self, items: &[OrderByExpr]) -> Verdict {
        for item in items {
            if item.with_fill.is_some() {
                return reject("WITH FILL is not allowed");
            }
            self.expr(&item.expr)?;
        }
        Ok(())
    }
}

fn wildcard_options(o: &WildcardAdditionalOptions) -> Verdict {
    let WildcardAdditionalOptions {
        wildcard_token: _,
        opt_ilike,
        opt_exclude,
        opt_except,
        opt_replace,
        opt_rename,
        opt_alias,
    } = o;
    if opt_ilike.is_some()
        || opt_exclude.is_some()
        || opt_except.is_some()
        || opt_replace.is_some()
        || opt_rename.is_some()
        || opt_alias.is_some()
    {
        return reject("wildcard options (EXCLUDE, EXCEPT, REPLACE, …) are not allowed");
    }
    Ok(())
}
