//! The guard's walk over expressions, function calls and literals (default-deny, like
//! the rest of `check`).

use sqlparser::ast::{
    CastKind, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList,
    FunctionArguments, InTarget, TypedString, Value, ValueWithSpan, WindowSpec, WindowType,
};

use super::{ident, reject, shown, single, variant, Binding, Checker, Verdict};
use crate::guard::allow;

impl Checker {
    pub(super) fn exprs(&mut self, exprs: &[Expr]) -> Verdict {
        exprs.iter().try_for_each(|e| self.expr(e))
    }

    pub(super) fn expr(&mut self, e: &Expr) -> Verdict {
        match e {
            Expr::Identifier(id) => {
                let name = ident(id)?;
                self.bare.push(name);
                Ok(())
            }
            Expr::CompoundIdentifier(parts) => {
                let [q, c] = parts.as_slice() else {
                    return reject(format!(
                        "`{}` is not allowed (write table.column, no schema)",
                        shown(e)
                    ));
                };
                let (q, c) = (ident(q)?, ident(c)?);
                match self.resolve(&q)? {
                    Binding::Omop(spec) if !allow::has_column(spec, &c) => reject(format!(
                        "column `{c}` is not allowed on table `{}`",
                        spec.name
                    )),
                    Binding::Omop(_) => Ok(()),
                    Binding::Derived => {
                        self.bare.push(c);
                        Ok(())
                    }
                }
            }
            Expr::IsFalse(x)
            | Expr::IsNotFalse(x)
            | Expr::IsTrue(x)
            | Expr::IsNotTrue(x)
            | Expr::IsNull(x)
            | Expr::IsNotNull(x)
            | Expr::IsUnknown(x)
            | Expr::IsNotUnknown(x)
            | Expr::Nested(x) => self.expr(x),
            Expr::IsDistinctFrom(a, b) | Expr::IsNotDistinctFrom(a, b) => {
                self.expr(a)?;
                self.expr(b)
            }
            Expr::In {
                expr,
                target,
                negated: _,
                global: false,
            } => {
                self.expr(expr)?;
                match target {
                    InTarget::List(items) => self.exprs(items),
                    InTarget::Subquery(q) => self.query(q),
                    other => reject(format!("IN {} is not allowed", variant(other))),
                }
            }
            Expr::Between {
                expr,
                negated: _,
                low,
                high,
            } => {
                self.expr(expr)?;
                self.expr(low)?;
                self.expr(high)
            }
            Expr::BinaryOp { left, op, right } => {
                if !allow::binary_op_allowed(op) {
                    return reject(format!("operator `{op}` is not allowed"));
                }
                self.expr(left)?;
                self.expr(right)
            }
            Expr::Like {
                negated: _,
                any: false,
                expr,
                pattern,
                escape_char,
            }
            | Expr::ILike {
                negated: _,
                any: false,
                expr,
                pattern,
                escape_char,
            } => {
                self.expr(expr)?;
                self.expr(pattern)?;
                if let Some(x) = escape_char {
                    self.expr(x)?;
                }
                Ok(())
            }
            Expr::UnaryOp { op, expr } => {
                if !allow::unary_op_allowed(op) {
                    return reject(format!("operator `{op}` is not allowed"));
                }
                self.expr(expr)
            }
            Expr::Cast {
                kind: CastKind::Cast | CastKind::DoubleColon,
                expr,
                data_type,
                format: None,
            } => {
                if !allow::data_type_allowed(data_type) {
                    return reject(format!("cast to `{data_type}` is not allowed"));
                }
                self.expr(expr)
            }
            Expr::Extract {
                field: _,
                syntax: _,
                expr,
            } => self.expr(expr),
            Expr::Substring {
                expr,
                substring_from,
                substring_for,
                special: _,
                shorthand: _,
            } => {
                self.expr(expr)?;
                for x in [substring_from, substring_for].into_iter().flatten() {
                    self.expr(x)?;
                }
                Ok(())
            }
            Expr::Trim {
                trim_where: _,
                trim_what,
                expr,
                trim_characters,
            } => {
                self.expr(expr)?;
                if let Some(x) = trim_what {
                    self.expr(x)?;
                }
                if let Some(xs) = trim_characters {
                    self.exprs(xs)?;
                }
                Ok(())
            }
            Expr::Value(v) => value(v),
            Expr::TypedString(TypedString {
                data_type,
                value: v,
                uses_odbc_syntax: false,
            }) => {
                if !allow::data_type_allowed(data_type) {
                    return reject(format!("literal of type `{data_type}` is not allowed"));
                }
                match &v.value {
                    Value::SingleQuotedString(_) => Ok(()),
                    _ => reject(format!("literal `{}` is not allowed", shown(e))),
                }
            }
            Expr::Function(f) => self.function(f),
            Expr::Case {
                case_token: _,
                end_token: _,
                operand,
                conditions,
                else_result,
            } => {
                if let Some(x) = operand {
                    self.expr(x)?;
                }
                for w in conditions {
                    self.expr(&w.condition)?;
                    self.expr(&w.result)?;
                }
                if let Some(x) = else_result {
                    self.expr(x)?;
                }
                Ok(())
            }
            Expr::Exists {
                subquery,
                negated: _,
            } => self.query(subquery),
            Expr::Subquery(q) => self.query(q),
            Expr::Interval(i) => self.expr(&i.value),
            other => reject(format!(
                "{} is not allowed: `{}`",
                variant(other),
                shown(other)
            )),
        }
    }

    fn function(&mut self, f: &Function) -> Verdict {
        let Function {
            name,
            uses_odbc_syntax,
            parameters,
            args,
            within_group,
            filter,
            null_treatment,
            over,
        } = f;
        let n = single(name, "function")?;
        if !allow::function_allowed(&n) {
            return reject(format!("function `{n}` is not allowed"));
        }
        if *uses_odbc_syntax
            || !matches!(parameters, FunctionArguments::None)
            || !within_group.is_empty()
            || null_treatment.is_some()
        {
            return reject(format!("function call form not allowed: `{}`", shown(f)));
        }
        match args {
            FunctionArguments::None if allow::niladic_allowed(&n) => {}
            FunctionArguments::List(FunctionArgumentList {
                duplicate_treatment: _,
                args,
                clauses,
            }) if clauses.is_empty() => {
                for a in args {
                    match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => self.expr(e)?,
                        FunctionArg::Unnamed(FunctionArgExpr::Wildcard) if n == "count" => {}
                        other => {
                            return reject(format!(
                                "argument `{}` of `{n}` is not allowed",
                                shown(other)
                            ))
                        }
                    }
                }
            }
            _ => return reject(format!("function call form not allowed: `{}`", shown(f))),
        }
        if let Some(x) = filter {
            self.expr(x)?;
        }
        match over {
            None => Ok(()),
            Some(WindowType::WindowSpec(WindowSpec {
                window_name: None,
                partition_by,
                order_by,
                window_frame: None,
            })) => {
                self.exprs(partition_by)?;
                self.order_by_exprs(order_by)
            }
            Some(other) => reject(format!("window `{}` is not allowed", shown(other))),
        }
    }
}

fn value(v: &ValueWithSpan) -> Verdict {
    match &v.value {
        Value::Number(..) | Value::SingleQuotedString(_) | Value::Boolean(_) | Value::Null => {
            Ok(())
        }
        Value::Placeholder(p) => reject(format!(
            "placeholder `{p}` is not allowed (the guard binds the patient itself)"
        )),
        other => reject(format!("literal `{}` is not allowed", shown(other))),
    }
}
