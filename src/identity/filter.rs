//! The metadata filter format shared by tenant tokens and search requests.
//!
//! ```text
//! filter    := { field: condition, ... }        every field's condition must hold (AND); 1..=32 fields
//! field     := [A-Za-z0-9_-] words joined by '.', at most 128 characters;
//!              a dotted field walks into nested metadata objects ("a.b" is metadata.a.b)
//! condition := scalar                           equality (string, number or boolean)
//!            | {"in": [scalar, ...]}            one of (1..=256 values)
//!            | {"gt"|"gte"|"lt"|"lte": number or string, ...}   a range; several bounds AND
//! ```
//!
//! A metadata value that is an array matches an equality or `in` condition when any of its
//! elements does. A field missing from the metadata matches nothing.
//!
//! Tenant tokens carry one such filter; a request may bring another. Both must hold:
//! [`crate::identity::WorkspaceAccess::filters`] (through `http::auth::WorkspaceContext`) returns the list that every search and chat
//! ANDs together, so a request can narrow the token's filter but never widen it.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

pub const MAX_FIELDS: usize = 32;
pub const MAX_IN: usize = 256;
const MAX_FIELD_LEN: usize = 128;
const MAX_STRING: usize = 1024;
const RANGE_OPS: [&str; 4] = ["gt", "gte", "lt", "lte"];

fn bad(msg: impl Into<String>) -> Error {
    Error::invalid(format!("filter: {}", msg.into()))
}

fn valid_field(f: &str) -> bool {
    !f.is_empty()
        && f.len() <= MAX_FIELD_LEN
        && f.split('.').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

fn check_scalar(v: &Value, field: &str) -> Result<()> {
    match v {
        Value::String(s) if s.len() <= MAX_STRING => Ok(()),
        Value::Number(_) | Value::Bool(_) => Ok(()),
        _ => Err(bad(format!(
            "{field}: values must be strings (at most {MAX_STRING} bytes), numbers or booleans"
        ))),
    }
}

fn check_condition(field: &str, cond: &Value) -> Result<()> {
    let Value::Object(ops) = cond else {
        return check_scalar(cond, field);
    };
    if ops.is_empty() {
        return Err(bad(format!("{field}: empty condition")));
    }
    if let Some(list) = ops.get("in") {
        if ops.len() != 1 {
            return Err(bad(format!(
                "{field}: \"in\" cannot be combined with other operators"
            )));
        }
        let Value::Array(items) = list else {
            return Err(bad(format!("{field}: \"in\" takes an array")));
        };
        if items.is_empty() || items.len() > MAX_IN {
            return Err(bad(format!("{field}: \"in\" takes 1 to {MAX_IN} values")));
        }
        return items.iter().try_for_each(|v| check_scalar(v, field));
    }
    for (op, bound) in ops {
        if !RANGE_OPS.contains(&op.as_str()) {
            return Err(bad(format!(
                "{field}: unknown operator {op:?} (in, gt, gte, lt, lte)"
            )));
        }
        match bound {
            Value::Number(_) => {}
            Value::String(s) if s.len() <= MAX_STRING => {}
            _ => return Err(bad(format!("{field}: {op} takes a number or a string"))),
        }
    }
    Ok(())
}

/// Checks that `filter` follows the format above.
pub fn validate(filter: &Value) -> Result<()> {
    let Value::Object(fields) = filter else {
        return Err(bad("must be a JSON object of field conditions"));
    };
    if fields.is_empty() || fields.len() > MAX_FIELDS {
        return Err(bad(format!("must have 1 to {MAX_FIELDS} fields")));
    }
    for (field, cond) in fields {
        if !valid_field(field) {
            return Err(bad(format!("invalid field name {field:?}")));
        }
        check_condition(field, cond)?;
    }
    Ok(())
}

fn lookup<'a>(metadata: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    let mut parts = field.split('.');
    let mut cur = metadata.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn cmp(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn any_element(v: &Value, pred: impl Fn(&Value) -> bool) -> bool {
    match v {
        Value::Array(items) => items.iter().any(pred),
        other => pred(other),
    }
}

fn condition_holds(value: &Value, cond: &Value) -> bool {
    let Value::Object(ops) = cond else {
        return any_element(value, |v| scalar_eq(v, cond));
    };
    if let Some(Value::Array(list)) = ops.get("in") {
        return any_element(value, |v| list.iter().any(|x| scalar_eq(v, x)));
    }
    ops.iter().all(|(op, bound)| {
        let ord = cmp(value, bound);
        match op.as_str() {
            "gt" => ord.is_some_and(|o| o.is_gt()),
            "gte" => ord.is_some_and(|o| o.is_ge()),
            "lt" => ord.is_some_and(|o| o.is_lt()),
            "lte" => ord.is_some_and(|o| o.is_le()),
            _ => false,
        }
    })
}

/// Whether a document's `metadata` satisfies a (validated) `filter`. The reference semantics
/// for the search engine's own implementation.
pub fn matches(filter: &Value, metadata: &Value) -> bool {
    let (Some(fields), Some(meta)) = (filter.as_object(), metadata.as_object()) else {
        return false;
    };
    fields
        .iter()
        .all(|(field, cond)| lookup(meta, field).is_some_and(|v| condition_holds(v, cond)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validation() {
        for ok in [
            json!({"group": "sales"}),
            json!({"group": {"in": ["sales", "ops"]}, "year": {"gte": 2020, "lte": 2024}}),
            json!({"a.b": true, "n": 3.5}),
        ] {
            assert!(validate(&ok).is_ok(), "{ok}");
        }
        for bad in [
            json!([]),
            json!({}),
            json!("sales"),
            json!({"group": null}),
            json!({"group": {"in": []}}),
            json!({"group": {"in": "sales"}}),
            json!({"group": {"eq": "x"}}),
            json!({"group": {"in": ["a"], "gt": 1}}),
            json!({"group": {}}),
            json!({"group": {"a": 1}}),
            json!({"": 1}),
            json!({"a..b": 1}),
            json!({"a b": 1}),
            json!({"x": [1, 2]}),
            json!({"x": {"gt": true}}),
        ] {
            assert!(validate(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching() {
        let meta = json!({"group": "sales", "year": 2022, "tags": ["a", "b"], "nested": {"k": 1}});
        assert!(matches(&json!({"group": "sales"}), &meta));
        assert!(!matches(&json!({"group": "ops"}), &meta));
        assert!(matches(&json!({"group": {"in": ["ops", "sales"]}}), &meta));
        assert!(matches(&json!({"year": {"gte": 2020, "lte": 2022}}), &meta));
        assert!(!matches(&json!({"year": {"gt": 2022}}), &meta));
        assert!(matches(&json!({"tags": "b"}), &meta));
        assert!(matches(&json!({"nested.k": 1.0}), &meta));
        assert!(!matches(&json!({"missing": 1}), &meta));
        assert!(!matches(&json!({"group": "sales"}), &json!(null)));
    }
}
