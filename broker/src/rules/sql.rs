//! Rule SQL: `SELECT <fields> FROM "<filter>"[, ...] [WHERE <condition>]` parsed with sqlparser
//! and compiled to a `Query`; invalid SQL is an error naming the position and the problem.

use sqlparser::ast::{Expr, SelectItem, SetExpr, Statement, TableFactor};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use crate::topic::FilterSpec;

/// A compiled rule query.
#[derive(Debug, Clone)]
pub struct Query {
    /// `(output name, expression)`; `None` expression is `*`.
    pub fields: Vec<(String, Option<Expr>)>,
    /// Topic filters of the FROM clause.
    pub from: Vec<String>,
    pub condition: Option<Expr>,
}

/// The output name of an unaliased field: the last part of a path, else the expression's text.
fn field_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => i.value.clone(),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()).unwrap_or_default(),
        other => other.to_string(),
    }
}

/// Parses and checks rule SQL.
pub fn compile(sql: &str, max_topic_levels: usize) -> Result<Query, String> {
    let mut statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| format!("rawsql: {e}"))?;
    if statements.len() != 1 {
        return Err(format!("rawsql: expected one SELECT statement, found {}", statements.len()));
    }
    let Statement::Query(query) = statements.remove(0) else {
        return Err("rawsql: only SELECT ... FROM \"topic\" [WHERE ...] is supported".into());
    };
    let SetExpr::Select(select) = *query.body else {
        return Err("rawsql: only a plain SELECT is supported (no UNION, VALUES, ...)".into());
    };
    let mut fields = Vec::new();
    for item in &select.projection {
        match item {
            SelectItem::Wildcard(_) => fields.push(("*".to_string(), None)),
            SelectItem::UnnamedExpr(e) => fields.push((field_name(e), Some(e.clone()))),
            SelectItem::ExprWithAlias { expr, alias } => fields.push((alias.value.clone(), Some(expr.clone()))),
            other => return Err(format!("rawsql: unsupported field {other}")),
        }
    }
    if fields.is_empty() {
        return Err("rawsql: SELECT needs at least one field".into());
    }
    let mut from = Vec::new();
    for t in &select.from {
        if !t.joins.is_empty() {
            return Err("rawsql: JOIN is not supported".into());
        }
        let TableFactor::Table { name, .. } = &t.relation else {
            return Err(format!("rawsql: FROM takes quoted topic filters, got {}", t.relation));
        };
        let filter = name
            .0
            .iter()
            .map(|p| p.as_ident().map(|i| i.value.clone()).unwrap_or_else(|| p.to_string()))
            .collect::<Vec<_>>()
            .join(".");
        FilterSpec::parse(&filter, max_topic_levels).map_err(|e| format!("rawsql: FROM {filter:?}: {e}"))?;
        from.push(filter);
    }
    if from.is_empty() {
        return Err("rawsql: FROM \"<topic filter>\" is required".into());
    }
    if !select.group_by_is_empty() || select.having.is_some() {
        return Err("rawsql: GROUP BY and HAVING are not supported".into());
    }
    Ok(Query { fields, from, condition: select.selection.clone() })
}

trait GroupByEmpty {
    fn group_by_is_empty(&self) -> bool;
}

impl GroupByEmpty for sqlparser::ast::Select {
    fn group_by_is_empty(&self) -> bool {
        match &self.group_by {
            sqlparser::ast::GroupByExpr::Expressions(e, _) => e.is_empty(),
            sqlparser::ast::GroupByExpr::All(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_fields_filters_and_conditions() {
        let q = compile(
            r#"SELECT payload.temp AS t, clientid, * FROM "sensors/#", "meters/+" WHERE payload.temp > 30"#,
            64,
        )
        .unwrap();
        let names: Vec<&str> = q.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["t", "clientid", "*"]);
        assert_eq!(q.from, ["sensors/#", "meters/+"]);
        assert!(q.condition.is_some());
    }

    #[test]
    fn bad_sql_names_the_position_and_problem() {
        let e = compile(r#"SELECT FROM WHERE"#, 64).unwrap_err();
        assert!(e.starts_with("rawsql:") && e.contains("Column"), "{e}");
        assert!(compile(r#"SELECT * FROM "a/#/b""#, 64).unwrap_err().contains("a/#/b"));
        assert!(compile(r#"DELETE FROM "t""#, 64).unwrap_err().contains("SELECT"));
    }
}
