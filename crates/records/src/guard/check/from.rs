//! The guard's walk over FROM: tables (allow-listed, or CTEs of the statement), derived
//! tables, joins, and the aliases they bind in the current scope.

use sqlparser::ast::{Join, JoinConstraint, JoinOperator, TableAlias, TableFactor, TableWithJoins};

use super::{ident, reject, shown, single, variant, Binding, Checker, Verdict};
use crate::guard::allow;

impl Checker {
    pub(super) fn table_with_joins(&mut self, t: &TableWithJoins) -> Verdict {
        self.table_factor(&t.relation)?;
        for join in &t.joins {
            let Join {
                relation,
                global,
                join_operator,
            } = join;
            let constraint = match join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::FullOuter(c)
                | JoinOperator::CrossJoin(c)
                    if !global =>
                {
                    c
                }
                other => return reject(format!("join kind {} is not allowed", variant(other))),
            };
            self.table_factor(relation)?;
            match constraint {
                JoinConstraint::On(e) => self.expr(e)?,
                JoinConstraint::Using(names) => {
                    for n in names {
                        let column = single(n, "column")?;
                        self.bare.push(column);
                    }
                }
                JoinConstraint::Natural | JoinConstraint::None => {}
                JoinConstraint::UsingAlias(..) => return reject("USING … AS is not allowed"),
            }
        }
        Ok(())
    }

    fn bind(&mut self, name: String, binding: Binding) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.push((name, binding));
        }
    }

    fn table_factor(&mut self, t: &TableFactor) -> Verdict {
        match t {
            TableFactor::Table {
                name,
                alias,
                args,
                with_hints,
                version,
                with_ordinality,
                partitions,
                json_path,
                sample,
                index_directives,
                inheritance,
            } => {
                if args.is_some() {
                    return reject(format!("table function `{}` is not allowed", shown(t)));
                }
                if !with_hints.is_empty()
                    || version.is_some()
                    || *with_ordinality
                    || !partitions.is_empty()
                    || json_path.is_some()
                    || sample.is_some()
                    || !index_directives.is_empty()
                    || inheritance.is_some()
                {
                    return reject(format!("table modifier not allowed in `{}`", shown(t)));
                }
                let table = single(name, "table")?;
                let binding = if self.ctes.iter().any(|f| f.contains(&table)) {
                    Binding::Derived
                } else if let Some(spec) = allow::table(&table) {
                    Binding::Omop(spec)
                } else {
                    return reject(format!("table `{table}` is not allowed"));
                };
                let bound = match alias {
                    Some(a) => self.table_alias(a, Some(&table))?,
                    None => table,
                };
                self.bind(bound, binding);
                Ok(())
            }
            TableFactor::Derived {
                lateral: _,
                subquery,
                alias,
                sample,
            } => {
                if sample.is_some() {
                    return reject("TABLESAMPLE is not allowed");
                }
                self.query(subquery)?;
                if let Some(a) = alias {
                    let name = self.table_alias(a, None)?;
                    self.bind(name, Binding::Derived);
                }
                Ok(())
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                self.table_with_joins(table_with_joins)?;
                if let Some(a) = alias {
                    let name = self.table_alias(a, None)?;
                    self.bind(name, Binding::Derived);
                }
                Ok(())
            }
            other => reject(format!(
                "{} in FROM is not allowed: `{}`",
                variant(other),
                shown(other)
            )),
        }
    }

    /// A table or CTE alias: it may not take the name of an OMOP table (other than the
    /// table it names), and its column aliases become known names.
    pub(super) fn table_alias(&mut self, a: &TableAlias, table: Option<&str>) -> Verdict<String> {
        let TableAlias {
            explicit: _,
            name,
            columns,
            at,
        } = a;
        if at.is_some() {
            return reject("AT in a table alias is not allowed");
        }
        let n = ident(name)?;
        if allow::table(&n).is_some() && table != Some(n.as_str()) {
            return reject(format!(
                "the name `{n}` is reserved for the OMOP table `{n}`"
            ));
        }
        for c in columns {
            if c.data_type.is_some() {
                return reject("typed alias columns are not allowed");
            }
            let column = ident(&c.name)?;
            self.aliases.insert(column);
        }
        Ok(n)
    }

    pub(super) fn resolve(&self, qualifier: &str) -> Verdict<Binding> {
        self.scopes
            .iter()
            .rev()
            .flat_map(|s| s.iter().rev())
            .find(|(name, _)| name == qualifier)
            .map(|(_, b)| *b)
            .ok_or_else(|| format!("unknown table or alias `{qualifier}`"))
    }
}
