//! Evaluating rule expressions over a message: fields and JSON paths, comparisons, AND/OR/NOT,
//! IN, LIKE, IS NULL, BETWEEN, arithmetic, and a small function library (string, math, JSON, time).

use serde_json::{Number, Value, json};
use sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, InTarget, UnaryOperator, Value as SqlValue,
};

/// An evaluation error (counted as a failed rule run).
pub type EvalResult = Result<Value, String>;

/// Looks a path up in the message context: `payload.a.b`, `topic`, `user_properties.k`, ...
pub fn lookup<'a>(ctx: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut v = ctx;
    for p in path {
        v = match v {
            Value::Object(m) => m.get(*p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

fn number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        json!(f as i64)
    } else {
        Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)
    }
}

pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Null => false,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => num(a)?.partial_cmp(&num(b)?),
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

/// SQL LIKE with `%` and `_`.
fn like(s: &str, pattern: &str) -> bool {
    fn go(s: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('%', rest)) => (0..=s.len()).any(|i| go(&s[i..], rest)),
            Some(('_', rest)) => !s.is_empty() && go(&s[1..], rest),
            Some((c, rest)) => s.first() == Some(c) && go(&s[1..], rest),
        }
    }
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    go(&s, &p)
}

fn literal(v: &SqlValue) -> EvalResult {
    Ok(match v {
        SqlValue::Number(n, _) => n.parse::<f64>().map(number).map_err(|e| format!("number {n}: {e}"))?,
        SqlValue::SingleQuotedString(s) | SqlValue::DoubleQuotedString(s) => Value::String(s.clone()),
        SqlValue::Boolean(b) => Value::Bool(*b),
        SqlValue::Null => Value::Null,
        other => return Err(format!("unsupported literal {other}")),
    })
}

/// Evaluates an expression in a message context.
pub fn eval(e: &Expr, ctx: &Value) -> EvalResult {
    match e {
        Expr::Identifier(i) => Ok(lookup(ctx, &[i.value.as_str()]).cloned().unwrap_or(Value::Null)),
        Expr::CompoundIdentifier(parts) => {
            let path: Vec<&str> = parts.iter().map(|i| i.value.as_str()).collect();
            Ok(lookup(ctx, &path).cloned().unwrap_or(Value::Null))
        }
        Expr::Value(v) => literal(&v.value),
        Expr::Nested(inner) => eval(inner, ctx),
        Expr::IsNull(inner) => Ok(Value::Bool(eval(inner, ctx)?.is_null())),
        Expr::IsNotNull(inner) => Ok(Value::Bool(!eval(inner, ctx)?.is_null())),
        Expr::UnaryOp { op, expr } => {
            let v = eval(expr, ctx)?;
            match op {
                UnaryOperator::Not => Ok(Value::Bool(!truthy(&v))),
                UnaryOperator::Minus => num(&v).map(|f| number(-f)).ok_or_else(|| format!("-{expr}: not a number")),
                UnaryOperator::Plus => Ok(v),
                other => Err(format!("unsupported operator {other}")),
            }
        }
        Expr::BinaryOp { left, op, right } => binary(left, op, right, ctx),
        Expr::In { expr, target, negated, .. } => {
            let InTarget::List(list) = target else {
                return Err(format!("{e}: only IN (value, ...) is supported"));
            };
            let v = eval(expr, ctx)?;
            let mut found = false;
            for item in list {
                if equal(&v, &eval(item, ctx)?) {
                    found = true;
                    break;
                }
            }
            Ok(Value::Bool(found != *negated))
        }
        Expr::Between { expr, negated, low, high } => {
            let v = eval(expr, ctx)?;
            let inside = compare(&v, &eval(low, ctx)?).is_some_and(|o| o.is_ge())
                && compare(&v, &eval(high, ctx)?).is_some_and(|o| o.is_le());
            Ok(Value::Bool(inside != *negated))
        }
        Expr::Like { negated, expr, pattern, .. } => {
            let v = eval(expr, ctx)?;
            let p = eval(pattern, ctx)?;
            Ok(Value::Bool(!v.is_null() && like(&text(&v), &text(&p)) != *negated))
        }
        Expr::Function(f) => {
            let name = f.name.to_string().to_ascii_lowercase();
            let args: Vec<Value> = match &f.args {
                FunctionArguments::None => Vec::new(),
                FunctionArguments::List(list) => list
                    .args
                    .iter()
                    .map(|a| match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => eval(e, ctx),
                        other => Err(format!("{name}: unsupported argument {other}")),
                    })
                    .collect::<Result<_, _>>()?,
                FunctionArguments::Subquery(_) => return Err(format!("{name}: subqueries are not supported")),
            };
            call(&name, &args)
        }
        other => Err(format!("unsupported expression {other}")),
    }
}

fn binary(left: &Expr, op: &BinaryOperator, right: &Expr, ctx: &Value) -> EvalResult {
    match op {
        BinaryOperator::And => {
            return Ok(Value::Bool(truthy(&eval(left, ctx)?) && truthy(&eval(right, ctx)?)));
        }
        BinaryOperator::Or => {
            return Ok(Value::Bool(truthy(&eval(left, ctx)?) || truthy(&eval(right, ctx)?)));
        }
        _ => {}
    }
    let (a, b) = (eval(left, ctx)?, eval(right, ctx)?);
    let arith = |f: fn(f64, f64) -> f64| -> EvalResult {
        match (num(&a), num(&b)) {
            (Some(x), Some(y)) => Ok(number(f(x, y))),
            _ if a.is_null() || b.is_null() => Ok(Value::Null),
            _ => Err(format!("{left} {op} {right}: not numbers")),
        }
    };
    match op {
        BinaryOperator::Eq => Ok(Value::Bool(equal(&a, &b))),
        BinaryOperator::NotEq => Ok(Value::Bool(!equal(&a, &b))),
        BinaryOperator::Lt => Ok(Value::Bool(compare(&a, &b).is_some_and(|o| o.is_lt()))),
        BinaryOperator::LtEq => Ok(Value::Bool(compare(&a, &b).is_some_and(|o| o.is_le()))),
        BinaryOperator::Gt => Ok(Value::Bool(compare(&a, &b).is_some_and(|o| o.is_gt()))),
        BinaryOperator::GtEq => Ok(Value::Bool(compare(&a, &b).is_some_and(|o| o.is_ge()))),
        BinaryOperator::Plus => arith(|x, y| x + y),
        BinaryOperator::Minus => arith(|x, y| x - y),
        BinaryOperator::Multiply => arith(|x, y| x * y),
        BinaryOperator::Divide => {
            if num(&b) == Some(0.0) {
                return Err(format!("{left} / {right}: division by zero"));
            }
            arith(|x, y| x / y)
        }
        BinaryOperator::Modulo => arith(|x, y| x % y),
        BinaryOperator::StringConcat => Ok(Value::String(text(&a) + &text(&b))),
        other => Err(format!("unsupported operator {other}")),
    }
}

/// The function library.
fn call(name: &str, args: &[Value]) -> EvalResult {
    let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::Null);
    let math = |f: fn(f64) -> f64| num(&arg(0)).map(|x| number(f(x))).ok_or_else(|| format!("{name}: not a number"));
    match name {
        "lower" => Ok(Value::String(text(&arg(0)).to_lowercase())),
        "upper" => Ok(Value::String(text(&arg(0)).to_uppercase())),
        "trim" => Ok(Value::String(text(&arg(0)).trim().to_string())),
        "length" => Ok(json!(text(&arg(0)).chars().count())),
        "concat" => Ok(Value::String(args.iter().map(text).collect())),
        "substr" | "substring" => {
            let s: Vec<char> = text(&arg(0)).chars().collect();
            let start = num(&arg(1)).unwrap_or(0.0).max(0.0) as usize;
            let len = args.get(2).and_then(num).map(|l| l.max(0.0) as usize).unwrap_or(s.len());
            Ok(Value::String(s.iter().skip(start).take(len).collect()))
        }
        "abs" => math(f64::abs),
        "round" => math(f64::round),
        "floor" => math(f64::floor),
        "ceil" => math(f64::ceil),
        "sqrt" => math(f64::sqrt),
        "coalesce" => Ok(args.iter().find(|v| !v.is_null()).cloned().unwrap_or(Value::Null)),
        "json_encode" => Ok(Value::String(arg(0).to_string())),
        "json_decode" => serde_json::from_str(&text(&arg(0))).map_err(|e| format!("json_decode: {e}")),
        "now_timestamp" => Ok(json!(crate::message::now_ms() / 1000)),
        "now_timestamp_ms" => Ok(json!(crate::message::now_ms())),
        other => Err(format!("unknown function {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::GenericDialect;
    use sqlparser::parser::Parser;

    fn ev(expr: &str, ctx: &Value) -> Value {
        let e = Parser::new(&GenericDialect {}).try_with_sql(expr).unwrap().parse_expr().unwrap();
        eval(&e, ctx).unwrap()
    }

    #[test]
    fn conditions_over_json_payload_fields() {
        let ctx = json!({"payload": {"temp": 31.5, "room": {"name": "Lab-1"}}, "topic": "s/1", "qos": 1});
        assert_eq!(ev("payload.temp > 30 AND qos = 1", &ctx), json!(true));
        assert_eq!(ev("payload.room.name LIKE 'Lab%'", &ctx), json!(true));
        assert_eq!(ev("topic IN ('s/1', 's/2')", &ctx), json!(true));
        assert_eq!(ev("payload.missing IS NULL", &ctx), json!(true));
        assert_eq!(ev("NOT (payload.temp BETWEEN 0 AND 30)", &ctx), json!(true));
        assert_eq!(ev("payload.temp * 2 + 1", &ctx), json!(64));
        assert_eq!(ev("upper(concat(payload.room.name, '-x'))", &ctx), json!("LAB-1-X"));
        assert_eq!(ev("round(payload.temp)", &ctx), json!(32));
    }
}
