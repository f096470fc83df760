//! Search filters. A filter is a JSON object whose keys are ANDed:
//!
//! ```json
//! {"metadata.group": "sales",                 // equality (matches inside arrays too)
//!  "lang": {"in": ["en", "fr"]},              // set membership (bare keys are metadata keys)
//!  "year": {"gte": 2020, "lt": 2025},         // numeric range
//!  "published": {"gte": "2024-01-01"},        // date range (ISO 8601 strings)
//!  "document_id": {"in": ["0193...", "..."]},  // documents
//!  "or": [{...}, {...}], "and": [...], "not": {...}}
//! ```
//!
//! Fields: `document_id`, `external_id`, `title`, `mime_type`, `created_at`, `updated_at`,
//! `metadata.<key>[.<key>...]` or a bare metadata key. A filter compiles to a SQL condition on
//! the `documents` table (alias `d`), with every value bound as a parameter.

use rusqlite::types::Value as Sql;
use serde_json::Value;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
    Cond { field: Field, op: Op },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Column(&'static str),
    /// A JSON path into `metadata`, e.g. `$."a"."b"`.
    Meta(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Eq(Sql),
    In(Vec<Sql>),
    Range {
        gt: Option<Sql>,
        gte: Option<Sql>,
        lt: Option<Sql>,
        lte: Option<Sql>,
    },
}

const MAX_CLAUSES: usize = 256;
const MAX_DEPTH: usize = 8;

impl Filter {
    pub fn parse(v: &Value) -> Result<Filter> {
        let mut count = 0;
        parse_obj(v, 0, &mut count)
    }

    /// Both filters must hold.
    pub fn and(a: Option<Filter>, b: Option<Filter>) -> Option<Filter> {
        match (a, b) {
            (Some(a), Some(b)) => Some(Filter::All(vec![a, b])),
            (a, None) => a,
            (None, b) => b,
        }
    }

    /// SQL condition on `documents d`, pushing bound values to `params`.
    pub fn to_sql(&self, params: &mut Vec<Sql>) -> String {
        match self {
            Filter::All(fs) if fs.is_empty() => "1".into(),
            Filter::Any(fs) if fs.is_empty() => "0".into(),
            Filter::All(fs) => join(fs, " AND ", params),
            Filter::Any(fs) => join(fs, " OR ", params),
            Filter::Not(f) => format!("NOT ({})", f.to_sql(params)),
            Filter::Cond { field, op } => cond_sql(field, op, params),
        }
    }
}

fn join(fs: &[Filter], sep: &str, params: &mut Vec<Sql>) -> String {
    let parts: Vec<String> = fs
        .iter()
        .map(|f| format!("({})", f.to_sql(params)))
        .collect();
    parts.join(sep)
}

fn cond_sql(field: &Field, op: &Op, params: &mut Vec<Sql>) -> String {
    // Metadata values are matched through json_each, which yields a scalar itself and each
    // element of an array: `{"tags": "x"}` matches `"tags": ["x", "y"]`.
    let (from, value) = match field {
        Field::Column(c) => (None, format!("d.{c}")),
        Field::Meta(path) => {
            params.push(Sql::Text(path.clone()));
            (
                Some(format!("json_each(d.metadata, ?{})", params.len())),
                "value".to_string(),
            )
        }
    };
    let mut bind = |v: &Sql| {
        params.push(v.clone());
        format!("?{}", params.len())
    };
    let test = match op {
        Op::Eq(v) => format!("{value} = {}", bind(v)),
        Op::In(vs) => {
            let list: Vec<String> = vs.iter().map(&mut bind).collect();
            format!("{value} IN ({})", list.join(", "))
        }
        Op::Range { gt, gte, lt, lte } => {
            let mut parts = Vec::new();
            for (op, v) in [(">", gt), (">=", gte), ("<", lt), ("<=", lte)] {
                if let Some(v) = v {
                    // Compare like with like: numbers with numbers, text with text.
                    let ty = if matches!(v, Sql::Text(_)) {
                        "'text'"
                    } else {
                        "'integer', 'real'"
                    };
                    let b = bind(v);
                    parts.push(format!("({value} {op} {b} AND typeof({value}) IN ({ty}))"));
                }
            }
            parts.join(" AND ")
        }
    };
    match from {
        Some(from) => format!("EXISTS (SELECT 1 FROM {from} WHERE {test})"),
        None => test,
    }
}

fn parse_obj(v: &Value, depth: usize, count: &mut usize) -> Result<Filter> {
    if depth > MAX_DEPTH {
        return Err(Error::invalid("filter is nested too deeply"));
    }
    let obj = v
        .as_object()
        .ok_or_else(|| Error::invalid("filter must be a JSON object"))?;
    let mut all = Vec::new();
    for (k, v) in obj {
        *count += 1;
        if *count > MAX_CLAUSES {
            return Err(Error::invalid("filter has too many clauses"));
        }
        match k.as_str() {
            "and" | "or" => {
                let arr = v
                    .as_array()
                    .ok_or_else(|| Error::invalid(format!("filter \"{k}\" takes an array")))?;
                let fs = arr
                    .iter()
                    .map(|x| parse_obj(x, depth + 1, count))
                    .collect::<Result<Vec<_>>>()?;
                all.push(if k == "and" {
                    Filter::All(fs)
                } else {
                    Filter::Any(fs)
                });
            }
            "not" => all.push(Filter::Not(Box::new(parse_obj(v, depth + 1, count)?))),
            _ => {
                let field = parse_field(k)?;
                let op = parse_op(k, v)?;
                all.push(Filter::Cond { field, op });
            }
        }
    }
    Ok(if all.len() == 1 {
        all.remove(0)
    } else {
        Filter::All(all)
    })
}

fn parse_field(k: &str) -> Result<Field> {
    Ok(match k {
        "document_id" | "id" => Field::Column("id"),
        "external_id" => Field::Column("external_id"),
        "title" => Field::Column("title"),
        "mime_type" => Field::Column("mime_type"),
        "created_at" => Field::Column("created_at"),
        "updated_at" => Field::Column("updated_at"),
        _ => {
            let key = k.strip_prefix("metadata.").unwrap_or(k);
            let segs: Vec<&str> = key.split('.').collect();
            if key.is_empty()
                || key.len() > 200
                || segs.iter().any(|s| {
                    s.is_empty()
                        || !s
                            .chars()
                            .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == ' ')
                })
            {
                return Err(Error::invalid(format!(
                    "filter field {k:?} is not a valid metadata key (letters, digits, _ and - separated by dots)"
                )));
            }
            let path: String = segs.iter().map(|s| format!(".\"{s}\"")).collect();
            Field::Meta(format!("${path}"))
        }
    })
}

fn scalar(k: &str, v: &Value) -> Result<Sql> {
    Ok(match v {
        Value::String(s) => Sql::Text(s.clone()),
        Value::Bool(b) => Sql::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Sql::Integer(i),
            None => Sql::Real(n.as_f64().unwrap_or(0.0)),
        },
        _ => {
            return Err(Error::invalid(format!(
                "filter value of {k:?} must be a string, number or boolean"
            )))
        }
    })
}

fn parse_op(k: &str, v: &Value) -> Result<Op> {
    match v {
        Value::Object(o) => {
            if let Some(list) = o.get("in") {
                if o.len() != 1 {
                    return Err(Error::invalid(format!(
                        "filter {k:?}: \"in\" cannot be combined with other operators"
                    )));
                }
                let arr = list.as_array().ok_or_else(|| {
                    Error::invalid(format!("filter {k:?}: \"in\" takes an array"))
                })?;
                if arr.len() > 10_000 {
                    return Err(Error::invalid(format!(
                        "filter {k:?}: \"in\" list is too long"
                    )));
                }
                return Ok(Op::In(
                    arr.iter().map(|x| scalar(k, x)).collect::<Result<_>>()?,
                ));
            }
            if let Some(x) = o.get("eq") {
                if o.len() != 1 {
                    return Err(Error::invalid(format!(
                        "filter {k:?}: \"eq\" cannot be combined with other operators"
                    )));
                }
                return Ok(Op::Eq(scalar(k, x)?));
            }
            let mut range = (None, None, None, None);
            for (op, x) in o {
                let s = Some(scalar(k, x)?);
                match op.as_str() {
                    "gt" => range.0 = s,
                    "gte" => range.1 = s,
                    "lt" => range.2 = s,
                    "lte" => range.3 = s,
                    other => {
                        return Err(Error::invalid(format!(
                        "filter {k:?}: unknown operator {other:?} (use in, eq, gt, gte, lt, lte)"
                    )))
                    }
                }
            }
            if o.is_empty() {
                return Err(Error::invalid(format!("filter {k:?}: empty condition")));
            }
            Ok(Op::Range {
                gt: range.0,
                gte: range.1,
                lt: range.2,
                lte: range.3,
            })
        }
        Value::Array(_) => Err(Error::invalid(format!(
            "filter {k:?}: use {{\"in\": [...]}} for a set of values"
        ))),
        other => Ok(Op::Eq(scalar(k, other)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(super) fn db() -> rusqlite::Connection {
        let c = rusqlite::Connection::open_in_memory().expect("db");
        c.execute_batch(
            "CREATE TABLE documents (id TEXT, external_id TEXT, title TEXT, mime_type TEXT,
             created_at TEXT, updated_at TEXT, metadata TEXT);
             INSERT INTO documents VALUES
              ('a', 'ea', 'A', 'text/plain', '2024-01-01', '', '{\"group\":\"sales\",\"year\":2020,\"tags\":[\"x\",\"y\"],\"pub\":\"2024-03-05\",\"n\":{\"k\":true}}'),
              ('b', 'eb', 'B', 'text/plain', '2024-01-02', '', '{\"group\":\"eng\",\"year\":2023,\"tags\":[\"z\"],\"pub\":\"2025-01-01\",\"score\":1.5}'),
              ('c', NULL, 'C', 'text/html', '2024-01-03', '', '{\"year\":\"2021\"}');",
        )
        .expect("seed");
        c
    }

    fn ids(f: serde_json::Value) -> Vec<String> {
        let c = db();
        let filter = Filter::parse(&f).expect("parse");
        let mut params = Vec::new();
        let sql = format!(
            "SELECT id FROM documents d WHERE {} ORDER BY id",
            filter.to_sql(&mut params)
        );
        let mut stmt = c.prepare(&sql).expect(&sql);
        stmt.query_map(rusqlite::params_from_iter(params), |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<Vec<String>>>()
            .expect("rows")
    }

    #[test]
    fn equality_membership_and_arrays() {
        assert_eq!(ids(json!({"metadata.group": "sales"})), vec!["a"]);
        assert_eq!(
            ids(json!({"group": {"in": ["sales", "eng"]}})),
            vec!["a", "b"]
        );
        assert_eq!(ids(json!({"tags": "y"})), vec!["a"]);
        assert_eq!(ids(json!({"tags": {"in": ["z", "q"]}})), vec!["b"]);
        assert_eq!(ids(json!({"n.k": true})), vec!["a"]);
        assert_eq!(ids(json!({"external_id": "eb"})), vec!["b"]);
        assert_eq!(
            ids(json!({"document_id": {"in": ["a", "c"]}})),
            vec!["a", "c"]
        );
    }

    #[test]
    fn ranges_compare_like_with_like() {
        assert_eq!(
            ids(json!({"year": {"gte": 2021}})),
            vec!["b"],
            "text '2021' is not a number"
        );
        assert_eq!(ids(json!({"year": {"gt": 2019, "lt": 2023}})), vec!["a"]);
        assert_eq!(ids(json!({"score": {"lte": 1.5}})), vec!["b"]);
        assert_eq!(
            ids(json!({"pub": {"gte": "2024-01-01", "lt": "2025-01-01"}})),
            vec!["a"]
        );
        assert_eq!(
            ids(json!({"created_at": {"gt": "2024-01-01"}})),
            vec!["b", "c"]
        );
    }

    #[test]
    fn logic_combines() {
        assert_eq!(
            ids(json!({"or": [{"group": "eng"}, {"title": "C"}]})),
            vec!["b", "c"]
        );
        assert_eq!(
            ids(json!({"not": {"group": "sales"}, "mime_type": "text/plain"})),
            vec!["b"]
        );
        let both = Filter::and(
            Some(Filter::parse(&json!({"group": {"in": ["sales", "eng"]}})).expect("a")),
            Some(Filter::parse(&json!({"year": 2023})).expect("b")),
        )
        .expect("and");
        let mut p = Vec::new();
        assert!(both.to_sql(&mut p).contains("AND"));
    }

    #[test]
    fn bad_filters_are_invalid_requests() {
        for bad in [
            json!([1]),
            json!({"a": [1, 2]}),
            json!({"a": {"like": "x"}}),
            json!({"a": {}}),
            json!({"a'); DROP TABLE documents; --": 1}),
            json!({"a": null}),
            json!({"and": {"a": 1}}),
            json!({"a": {"in": [1], "gt": 0}}),
        ] {
            assert!(
                matches!(Filter::parse(&bad), Err(Error::Invalid(_))),
                "{bad}"
            );
        }
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    const KEYS: &[&str] = &[
        "and",
        "or",
        "not",
        "in",
        "eq",
        "gt",
        "gte",
        "lt",
        "lte",
        "k",
        "metadata.k",
        "a.b",
        "title",
        "document_id",
        "created_at",
        "x'y",
        "",
        "$",
        "a[0]",
        "metadata.",
        "a..b",
    ];

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            (-1e6f64..1e6).prop_map(|f| json!(f)),
            "[a-z' ]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(KEYS), inner), 0..5).prop_map(|kv| {
                    Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                }),
            ]
        })
    }

    /// A scalar as both the filter's JSON and the comparable value.
    #[derive(Debug, Clone, PartialEq)]
    enum S {
        I(i64),
        T(String),
    }

    impl S {
        fn json(&self) -> Value {
            match self {
                S::I(i) => json!(i),
                S::T(t) => json!(t),
            }
        }
    }

    fn scalar_s() -> impl Strategy<Value = S> {
        prop_oneof![(0i64..5).prop_map(S::I), "[abc]".prop_map(S::T)]
    }

    #[derive(Debug, Clone)]
    enum F {
        Eq(S),
        In(Vec<S>),
        Range(i64, i64),
        Not(Box<F>),
        And(Box<F>, Box<F>),
        Or(Box<F>, Box<F>),
    }

    fn filter_f() -> impl Strategy<Value = F> {
        let leaf = prop_oneof![
            scalar_s().prop_map(F::Eq),
            prop::collection::vec(scalar_s(), 0..4).prop_map(F::In),
            (0i64..5, 0i64..6).prop_map(|(a, b)| F::Range(a, b)),
        ];
        leaf.prop_recursive(3, 12, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|f| F::Not(Box::new(f))),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| F::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner).prop_map(|(a, b)| F::Or(Box::new(a), Box::new(b))),
            ]
        })
    }

    impl F {
        fn json(&self) -> Value {
            match self {
                F::Eq(s) => json!({ "k": s.json() }),
                F::In(v) => json!({ "k": { "in": v.iter().map(S::json).collect::<Vec<_>>() } }),
                F::Range(a, b) => json!({ "k": { "gte": a, "lt": b } }),
                F::Not(f) => json!({ "not": f.json() }),
                F::And(a, b) => json!({ "and": [a.json(), b.json()] }),
                F::Or(a, b) => json!({ "or": [a.json(), b.json()] }),
            }
        }

        /// The documented semantics: `k` is a scalar or an array of scalars (matched by any
        /// element); equality and ranges compare like with like (numbers with numbers).
        fn matches(&self, vals: &[S]) -> bool {
            match self {
                F::Eq(s) => vals.contains(s),
                F::In(v) => vals.iter().any(|x| v.contains(x)),
                F::Range(a, b) => vals.iter().any(|x| matches!(x, S::I(i) if a <= i && i < b)),
                F::Not(f) => !f.matches(vals),
                F::And(a, b) => a.matches(vals) && b.matches(vals),
                F::Or(a, b) => a.matches(vals) || b.matches(vals),
            }
        }
    }

    /// A document's `k`: missing, one scalar, or an array of scalars.
    fn doc_k() -> impl Strategy<Value = Option<(bool, Vec<S>)>> {
        prop::option::of((any::<bool>(), prop::collection::vec(scalar_s(), 0..3)))
    }

    fn run(conn: &rusqlite::Connection, f: &Filter) -> rusqlite::Result<Vec<i64>> {
        let mut params = Vec::new();
        let sql = format!(
            "SELECT rowid FROM documents d WHERE {} ORDER BY rowid",
            f.to_sql(&mut params)
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| r.get(0))?;
        rows.collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any JSON is either refused as an invalid request or becomes SQL that runs.
        #[test]
        fn any_json_is_invalid_or_runs(v in any_json()) {
            match Filter::parse(&v) {
                Ok(f) => {
                    let conn = super::tests::db();
                    prop_assert!(run(&conn, &f).is_ok(), "{} did not run", v);
                }
                Err(e) => prop_assert!(matches!(e, Error::Invalid(_)), "{}: {:?}", v, e),
            }
        }

        /// The SQL of a filter selects exactly the documents the documented semantics do.
        #[test]
        fn filters_select_what_the_semantics_say(
            docs in prop::collection::vec(doc_k(), 1..12),
            f in filter_f(),
        ) {
            let conn = super::tests::db();
            conn.execute("DELETE FROM documents", []).expect("clear");
            let mut want = Vec::new();
            for (i, k) in docs.iter().enumerate() {
                let (meta, vals) = match k {
                    None => (json!({"other": 1}), vec![]),
                    Some((true, v)) if !v.is_empty() => (json!({"k": v[0].json()}), vec![v[0].clone()]),
                    Some((_, v)) => (json!({"k": v.iter().map(S::json).collect::<Vec<_>>()}), v.clone()),
                };
                conn.execute(
                    "INSERT INTO documents (rowid, id, metadata) VALUES (?1, ?1, ?2)",
                    rusqlite::params![i as i64 + 1, meta.to_string()],
                )
                .expect("insert");
                if f.matches(&vals) {
                    want.push(i as i64 + 1);
                }
            }
            let parsed = Filter::parse(&f.json()).expect("a generated filter parses");
            prop_assert_eq!(run(&conn, &parsed).expect("runs"), want, "{}", f.json());
        }
    }
}
