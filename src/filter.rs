//! The one metadata filter language: tenant tokens, search requests, chat requests, tool and
//! MCP arguments all use it, with one meaning. A filter is parsed once into a [`Filter`] and
//! evaluated either in SQL ([`Filter::to_sql`], for search and chat retrieval) or in Rust
//! ([`Filter::matches`], for one document: `get_document`); a property test keeps the two equal.
//!
//! ```json
//! {"metadata.group": "sales",                 // equality (matches an element of an array too)
//!  "lang": {"in": ["en", "fr"]},              // set membership (bare keys are metadata keys)
//!  "year": {"gte": 2020, "lt": 2025},         // range: numbers with numbers, strings with strings
//!  "published": {"gte": "2024-01-01"},        // ISO dates compare as strings
//!  "document_id": {"in": ["0193...", "..."]},  // a document column (strings only)
//!  "or": [{...}, {...}], "and": [...], "not": {...}}
//! ```
//!
//! Semantics (the same in SQL and in Rust):
//! - The keys of an object are ANDed; `{}` holds for every document. `and` / `or` take arrays
//!   of filters (an empty `or` holds for none), `not` a filter.
//! - `document_id` (or `id`), `external_id`, `title`, `mime_type`, `created_at`, `updated_at`
//!   are the document's columns and take string values only. Every other key is a metadata key:
//!   `a.b` (or `metadata.a.b`) walks into nested objects. A metadata key that collides with a
//!   reserved name or an operator is written with the `metadata.` prefix (`metadata.title`,
//!   `metadata.not`).
//! - A condition looks at the value at the key: a scalar, or each scalar element of an array
//!   (nested arrays and objects are never equal to anything). A missing key, `null`, an object
//!   or a missing `external_id` matches no condition (so `not` of it holds).
//! - Equality and `in` compare like with like: a string equals only a string, a number only a
//!   number (`1` equals `1.0`), a boolean only a boolean (`true` never equals `1`).
//! - A range's bounds (`gt`, `gte`, `lt`, `lte`, numbers or strings) must all hold for one same
//!   element; numbers compare with numbers, strings with strings (byte order), never across.
//!
//! Limits (`400 invalid_request` beyond): nesting depth [`MAX_DEPTH`], [`MAX_CLAUSES`] objects
//! and keys, [`MAX_VALUES`] values in all `in` lists together, keys of [`MAX_KEY_LEN`] bytes.
//! `in` lists are bound as one JSON array parameter each, so a filter binds at most a few
//! parameters per clause whatever its lists hold.

use std::cmp::Ordering;

use rusqlite::types::Value as Sql;
use serde_json::Value;

use crate::error::{Error, Result};

/// Deepest nesting of `and` / `or` / `not`.
pub const MAX_DEPTH: usize = 8;
/// Objects and keys in one filter.
pub const MAX_CLAUSES: usize = 256;
/// Values of all `in` lists of one filter together.
pub const MAX_VALUES: usize = 10_000;
/// Longest key (`metadata.a.b` included).
pub const MAX_KEY_LEN: usize = 200;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
    Cond { field: Field, op: Op },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// A column of `documents` (all TEXT).
    Column(Column),
    /// A metadata key: its segments (`a.b` is `["a", "b"]`).
    Meta(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Id,
    ExternalId,
    Title,
    MimeType,
    CreatedAt,
    UpdatedAt,
}

impl Column {
    fn sql(self) -> &'static str {
        match self {
            Column::Id => "d.id",
            Column::ExternalId => "d.external_id",
            Column::Title => "d.title",
            Column::MimeType => "d.mime_type",
            Column::CreatedAt => "d.created_at",
            Column::UpdatedAt => "d.updated_at",
        }
    }
}

/// A value of a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Text(String),
    Int(i64),
    Real(f64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Eq(Scalar),
    In(Vec<Scalar>),
    /// Bounds (`gt`, `gte`, `lt`, `lte`), each a number or a string; all must hold.
    Range(Vec<(Bound, Scalar)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Bound {
    fn sql(self) -> &'static str {
        match self {
            Bound::Gt => ">",
            Bound::Gte => ">=",
            Bound::Lt => "<",
            Bound::Lte => "<=",
        }
    }

    fn holds(self, o: Ordering) -> bool {
        match self {
            Bound::Gt => o.is_gt(),
            Bound::Gte => o.is_ge(),
            Bound::Lt => o.is_lt(),
            Bound::Lte => o.is_le(),
        }
    }
}

/// A filter with the JSON it was written as (a tenant token's, shown back by `/v1/me`).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub json: Value,
    pub filter: Filter,
}

impl Parsed {
    pub fn parse(json: Value) -> Result<Parsed> {
        let filter = Filter::parse(&json)?;
        Ok(Parsed { json, filter })
    }
}

/// The fields of one document a filter looks at (for [`Filter::matches`]).
#[derive(Debug, Clone, Copy)]
pub struct Doc<'a> {
    pub id: &'a str,
    pub external_id: Option<&'a str>,
    pub title: &'a str,
    pub mime_type: &'a str,
    pub created_at: &'a str,
    pub updated_at: &'a str,
    pub metadata: &'a Value,
}

impl Doc<'_> {
    fn column(&self, c: Column) -> Option<&str> {
        match c {
            Column::Id => Some(self.id),
            Column::ExternalId => self.external_id,
            Column::Title => Some(self.title),
            Column::MimeType => Some(self.mime_type),
            Column::CreatedAt => Some(self.created_at),
            Column::UpdatedAt => Some(self.updated_at),
        }
    }
}

struct Budget {
    clauses: usize,
    values: usize,
}

impl Filter {
    /// Parses a filter's JSON; anything outside the language or its limits is `Invalid`.
    pub fn parse(v: &Value) -> Result<Filter> {
        let mut budget = Budget {
            clauses: 0,
            values: 0,
        };
        parse_obj(v, 0, &mut budget)
    }

    /// Both filters must hold.
    pub fn and(a: Option<Filter>, b: Option<Filter>) -> Option<Filter> {
        match (a, b) {
            (Some(a), Some(b)) => Some(Filter::All(vec![a, b])),
            (a, None) => a,
            (None, b) => b,
        }
    }

    /// SQL condition on `documents d`, pushing bound values to `params`. The condition is
    /// two-valued (never NULL), so `NOT` means what [`Filter::matches`] says.
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

    /// Whether one document passes: the same answer as [`Filter::to_sql`] gives in SQLite.
    pub fn matches(&self, doc: &Doc) -> bool {
        match self {
            Filter::All(fs) => fs.iter().all(|f| f.matches(doc)),
            Filter::Any(fs) => fs.iter().any(|f| f.matches(doc)),
            Filter::Not(f) => !f.matches(doc),
            Filter::Cond {
                field: Field::Column(c),
                op,
            } => doc
                .column(*c)
                .is_some_and(|v| op_holds(op, &Value::String(v.to_string()))),
            Filter::Cond {
                field: Field::Meta(path),
                op,
            } => match lookup(doc.metadata, path) {
                None | Some(Value::Object(_)) => false,
                Some(Value::Array(items)) => items.iter().any(|x| op_holds(op, x)),
                Some(v) => op_holds(op, v),
            },
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

fn bind(params: &mut Vec<Sql>, v: Sql) -> String {
    params.push(v);
    format!("?{}", params.len())
}

fn scalar_sql(s: &Scalar) -> Sql {
    match s {
        Scalar::Text(t) => Sql::Text(t.clone()),
        Scalar::Int(i) => Sql::Integer(*i),
        Scalar::Real(f) => Sql::Real(*f),
        Scalar::Bool(b) => Sql::Integer(i64::from(*b)),
    }
}

fn scalar_json(s: &Scalar) -> Value {
    match s {
        Scalar::Text(t) => Value::String(t.clone()),
        Scalar::Int(i) => Value::from(*i),
        Scalar::Real(f) => Value::from(*f),
        Scalar::Bool(b) => Value::Bool(*b),
    }
}

/// A list bound as one JSON array parameter.
fn list_sql(params: &mut Vec<Sql>, items: &[&Scalar]) -> String {
    let json = Value::Array(items.iter().map(|s| scalar_json(s)).collect());
    let p = bind(params, Sql::Text(json.to_string()));
    format!("(SELECT value FROM json_each({p}))")
}

const NUMERIC: &str = "m.type IN ('integer', 'real')";

fn cond_sql(field: &Field, op: &Op, params: &mut Vec<Sql>) -> String {
    match field {
        Field::Column(c) => {
            // Column conditions take strings only (parse checks it).
            let col = c.sql();
            let test = match op {
                Op::Eq(v) => format!("{col} = {}", bind(params, scalar_sql(v))),
                Op::In(vs) if vs.is_empty() => "0".into(),
                Op::In(vs) => {
                    let items: Vec<&Scalar> = vs.iter().collect();
                    format!("{col} IN {}", list_sql(params, &items))
                }
                Op::Range(bounds) => bounds
                    .iter()
                    .map(|(b, v)| format!("{col} {} {}", b.sql(), bind(params, scalar_sql(v))))
                    .collect::<Vec<_>>()
                    .join(" AND "),
            };
            format!("({col} IS NOT NULL AND {test})")
        }
        Field::Meta(segs) => {
            let path: String = segs.iter().map(|s| format!(".\"{s}\"")).collect();
            let p = bind(params, Sql::Text(format!("${path}")));
            let test = match op {
                Op::Eq(v) => elem_eq(v, params),
                Op::In(vs) => {
                    let texts: Vec<&Scalar> =
                        vs.iter().filter(|s| matches!(s, Scalar::Text(_))).collect();
                    let nums: Vec<&Scalar> = vs
                        .iter()
                        .filter(|s| matches!(s, Scalar::Int(_) | Scalar::Real(_)))
                        .collect();
                    let mut parts = Vec::new();
                    if !texts.is_empty() {
                        parts.push(format!(
                            "(m.type = 'text' AND m.value IN {})",
                            list_sql(params, &texts)
                        ));
                    }
                    if !nums.is_empty() {
                        parts.push(format!(
                            "({NUMERIC} AND m.value IN {})",
                            list_sql(params, &nums)
                        ));
                    }
                    for b in [true, false] {
                        if vs.contains(&Scalar::Bool(b)) {
                            parts.push(format!("m.type = '{b}'"));
                        }
                    }
                    if parts.is_empty() {
                        "0".into()
                    } else {
                        parts.join(" OR ")
                    }
                }
                Op::Range(bounds) => bounds
                    .iter()
                    .map(|(b, v)| {
                        let class = if matches!(v, Scalar::Text(_)) {
                            "m.type = 'text'"
                        } else {
                            NUMERIC
                        };
                        format!(
                            "({class} AND m.value {} {})",
                            b.sql(),
                            bind(params, scalar_sql(v))
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" AND "),
            };
            // json_each yields a scalar itself, each element of an array, and each member of an
            // object: an object at the key matches nothing, as in `matches`.
            format!(
                "(coalesce(json_type(d.metadata, {p}), 'null') <> 'object' AND \
                 EXISTS (SELECT 1 FROM json_each(d.metadata, {p}) m WHERE {test}))"
            )
        }
    }
}

fn elem_eq(v: &Scalar, params: &mut Vec<Sql>) -> String {
    match v {
        Scalar::Text(_) => format!(
            "(m.type = 'text' AND m.value = {})",
            bind(params, scalar_sql(v))
        ),
        Scalar::Int(_) | Scalar::Real(_) => {
            format!("({NUMERIC} AND m.value = {})", bind(params, scalar_sql(v)))
        }
        Scalar::Bool(b) => format!("m.type = '{b}'"),
    }
}

fn lookup<'a>(metadata: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = metadata;
    for seg in path {
        cur = cur.as_object()?.get(seg)?;
    }
    Some(cur)
}

/// A JSON number as SQLite holds it: an integer when it fits in i64, else a double.
#[derive(Debug, Clone, Copy)]
enum Num {
    I(i64),
    F(f64),
}

fn num_of_json(n: &serde_json::Number) -> Option<Num> {
    match n.as_i64() {
        Some(i) => Some(Num::I(i)),
        None => n.as_f64().map(Num::F),
    }
}

/// Exact comparison of an integer and a double, as SQLite makes it.
fn int_float_cmp(i: i64, r: f64) -> Option<Ordering> {
    if r.is_nan() {
        return None;
    }
    if r < -9_223_372_036_854_775_808.0 {
        return Some(Ordering::Greater);
    }
    if r >= 9_223_372_036_854_775_808.0 {
        return Some(Ordering::Less);
    }
    let y = r as i64;
    match i.cmp(&y) {
        Ordering::Equal => (i as f64).partial_cmp(&r),
        o => Some(o),
    }
}

fn num_cmp(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::I(x), Num::I(y)) => Some(x.cmp(&y)),
        (Num::F(x), Num::F(y)) => x.partial_cmp(&y),
        (Num::I(x), Num::F(y)) => int_float_cmp(x, y),
        (Num::F(x), Num::I(y)) => int_float_cmp(y, x).map(Ordering::reverse),
    }
}

/// How an element compares with a condition's value, when they are of one kind.
fn compare(elem: &Value, s: &Scalar) -> Option<Ordering> {
    match (elem, s) {
        (Value::String(a), Scalar::Text(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (Value::Number(n), Scalar::Int(i)) => num_cmp(num_of_json(n)?, Num::I(*i)),
        (Value::Number(n), Scalar::Real(f)) => num_cmp(num_of_json(n)?, Num::F(*f)),
        (Value::Bool(a), Scalar::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn op_holds(op: &Op, elem: &Value) -> bool {
    match op {
        Op::Eq(s) => compare(elem, s) == Some(Ordering::Equal),
        Op::In(list) => list
            .iter()
            .any(|s| compare(elem, s) == Some(Ordering::Equal)),
        Op::Range(bounds) => bounds
            .iter()
            .all(|(b, s)| compare(elem, s).is_some_and(|o| b.holds(o))),
    }
}

fn parse_obj(v: &Value, depth: usize, budget: &mut Budget) -> Result<Filter> {
    if depth > MAX_DEPTH {
        return Err(Error::invalid(format!(
            "filter is nested too deeply (at most {MAX_DEPTH} levels of and/or/not)"
        )));
    }
    let obj = v
        .as_object()
        .ok_or_else(|| Error::invalid("filter must be a JSON object"))?;
    budget.clauses += 1 + obj.len();
    if budget.clauses > MAX_CLAUSES {
        return Err(Error::invalid(format!(
            "filter has too many clauses (at most {MAX_CLAUSES} objects and keys)"
        )));
    }
    let mut all = Vec::new();
    for (k, v) in obj {
        match k.as_str() {
            "and" | "or" => {
                let arr = v.as_array().ok_or_else(|| {
                    Error::invalid(format!("filter \"{k}\" takes an array of filters"))
                })?;
                let fs = arr
                    .iter()
                    .map(|x| parse_obj(x, depth + 1, budget))
                    .collect::<Result<Vec<_>>>()?;
                all.push(if k == "and" {
                    Filter::All(fs)
                } else {
                    Filter::Any(fs)
                });
            }
            "not" => all.push(Filter::Not(Box::new(parse_obj(v, depth + 1, budget)?))),
            _ => {
                let field = parse_field(k)?;
                let op = parse_op(k, &field, v, budget)?;
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
    let column = match k {
        "document_id" | "id" => Some(Column::Id),
        "external_id" => Some(Column::ExternalId),
        "title" => Some(Column::Title),
        "mime_type" => Some(Column::MimeType),
        "created_at" => Some(Column::CreatedAt),
        "updated_at" => Some(Column::UpdatedAt),
        _ => None,
    };
    if let Some(c) = column {
        return Ok(Field::Column(c));
    }
    let key = k.strip_prefix("metadata.").unwrap_or(k);
    let segs: Vec<&str> = key.split('.').collect();
    if key.is_empty()
        || k.len() > MAX_KEY_LEN
        || segs.iter().any(|s| {
            s.is_empty()
                || !s
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == ' ')
        })
    {
        return Err(Error::invalid(format!(
            "filter field {k:?} is not a valid metadata key (letters, digits, spaces, _ and - \
             separated by dots, at most {MAX_KEY_LEN} bytes)"
        )));
    }
    Ok(Field::Meta(segs.into_iter().map(str::to_string).collect()))
}

fn scalar(k: &str, field: &Field, v: &Value) -> Result<Scalar> {
    let s = match v {
        Value::String(s) => Scalar::Text(s.clone()),
        Value::Bool(b) => Scalar::Bool(*b),
        Value::Number(n) => match num_of_json(n) {
            Some(Num::I(i)) => Scalar::Int(i),
            Some(Num::F(f)) if f.is_finite() => Scalar::Real(f),
            _ => return Err(Error::invalid(format!("filter {k:?}: number out of range"))),
        },
        _ => {
            return Err(Error::invalid(format!(
                "filter value of {k:?} must be a string, number or boolean"
            )))
        }
    };
    if matches!(field, Field::Column(_)) && !matches!(s, Scalar::Text(_)) {
        return Err(Error::invalid(format!(
            "filter {k:?} is a document column and takes strings; write \"metadata.{k}\" for a \
             metadata key of that name"
        )));
    }
    Ok(s)
}

fn parse_op(k: &str, field: &Field, v: &Value, budget: &mut Budget) -> Result<Op> {
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
                budget.values += arr.len();
                if budget.values > MAX_VALUES {
                    return Err(Error::invalid(format!(
                        "filter has too many values: its \"in\" lists may hold at most \
                         {MAX_VALUES} values together"
                    )));
                }
                return Ok(Op::In(
                    arr.iter()
                        .map(|x| scalar(k, field, x))
                        .collect::<Result<_>>()?,
                ));
            }
            if let Some(x) = o.get("eq") {
                if o.len() != 1 {
                    return Err(Error::invalid(format!(
                        "filter {k:?}: \"eq\" cannot be combined with other operators"
                    )));
                }
                return Ok(Op::Eq(scalar(k, field, x)?));
            }
            if o.is_empty() {
                return Err(Error::invalid(format!("filter {k:?}: empty condition")));
            }
            let mut bounds = Vec::with_capacity(o.len());
            for (op, x) in o {
                let b = match op.as_str() {
                    "gt" => Bound::Gt,
                    "gte" => Bound::Gte,
                    "lt" => Bound::Lt,
                    "lte" => Bound::Lte,
                    other => {
                        return Err(Error::invalid(format!(
                        "filter {k:?}: unknown operator {other:?} (use in, eq, gt, gte, lt, lte)"
                    )))
                    }
                };
                let s = scalar(k, field, x)?;
                if matches!(s, Scalar::Bool(_)) {
                    return Err(Error::invalid(format!(
                        "filter {k:?}: {op} takes a number or a string"
                    )));
                }
                bounds.push((b, s));
            }
            Ok(Op::Range(bounds))
        }
        Value::Array(_) => Err(Error::invalid(format!(
            "filter {k:?}: use {{\"in\": [...]}} for a set of values"
        ))),
        other => Ok(Op::Eq(scalar(k, field, other)?)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// An in-memory database with the real workspace schema.
    pub(crate) fn db() -> rusqlite::Connection {
        crate::db::register_sqlite_vec();
        let mut c = rusqlite::Connection::open_in_memory().expect("db");
        crate::db::migrate(&mut c, crate::workspace::MIGRATIONS).expect("schema");
        c
    }

    /// Inserts a document (indexed) with these columns and metadata.
    pub(crate) fn insert(
        c: &rusqlite::Connection,
        id: &str,
        external_id: Option<&str>,
        title: &str,
        created_at: &str,
        metadata: &Value,
    ) {
        c.execute(
            "INSERT INTO documents (id, external_id, title, mime_type, content_hash, byte_size,
             metadata, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, 'text/plain', 'h', 0, ?4, 'indexed', ?5, ?5)",
            rusqlite::params![id, external_id, title, metadata.to_string(), created_at],
        )
        .expect("insert");
    }

    /// The ids SQL selects, sorted.
    pub(crate) fn sql_ids(c: &rusqlite::Connection, f: &Filter) -> rusqlite::Result<Vec<String>> {
        let mut params = Vec::new();
        let sql = format!(
            "SELECT id FROM documents d WHERE {} ORDER BY id",
            f.to_sql(&mut params)
        );
        let mut stmt = c.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| r.get(0))?;
        rows.collect()
    }

    /// The ids the Rust evaluation selects, sorted (documents read back as `get_document` does).
    pub(crate) fn rust_ids(c: &rusqlite::Connection, f: &Filter) -> Vec<String> {
        let mut stmt = c
            .prepare(
                "SELECT id, external_id, title, mime_type, created_at, updated_at, metadata
                 FROM documents ORDER BY id",
            )
            .expect("prepare");
        let mut rows = stmt.query([]).expect("query");
        let mut out = Vec::new();
        while let Some(r) = rows.next().expect("row") {
            let get = |i| r.get::<_, String>(i).expect("column");
            let (id, title, mime, created, updated) = (get(0), get(2), get(3), get(4), get(5));
            let ext: Option<String> = r.get(1).expect("external_id");
            let metadata = crate::db::json_column(&get(6)).expect("metadata");
            let doc = Doc {
                id: &id,
                external_id: ext.as_deref(),
                title: &title,
                mime_type: &mime,
                created_at: &created,
                updated_at: &updated,
                metadata: &metadata,
            };
            if f.matches(&doc) {
                out.push(id.clone());
            }
        }
        out
    }

    fn seeded() -> rusqlite::Connection {
        let c = db();
        insert(
            &c,
            "a",
            Some("ea"),
            "A",
            "2024-01-01",
            &json!({"group":"sales","year":2020,"tags":["x","y"],"pub":"2024-03-05","n":{"k":true}}),
        );
        insert(
            &c,
            "b",
            Some("eb"),
            "B",
            "2024-01-02",
            &json!({"group":"eng","year":2023,"tags":["z"],"pub":"2025-01-01","score":1.5,"flag":1}),
        );
        insert(
            &c,
            "c",
            None,
            "C",
            "2024-01-03",
            &json!({"year":"2021","gt":1,"obj":{"k":1}}),
        );
        c
    }

    /// The ids a filter selects; asserts that SQL and Rust agree.
    fn ids(f: Value) -> Vec<String> {
        let c = seeded();
        let filter = Filter::parse(&f).expect("parse");
        let sql = sql_ids(&c, &filter).expect("sql");
        assert_eq!(sql, rust_ids(&c, &filter), "SQL and Rust agree on {f}");
        sql
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
        assert_eq!(ids(json!({"group": {"in": []}})), Vec::<String>::new());
        assert_eq!(ids(json!({})), vec!["a", "b", "c"]);
    }

    #[test]
    fn booleans_are_not_numbers_and_objects_equal_nothing() {
        assert_eq!(ids(json!({"n.k": 1})), Vec::<String>::new());
        assert_eq!(ids(json!({"flag": true})), Vec::<String>::new());
        assert_eq!(ids(json!({"flag": 1.0})), vec!["b"]);
        assert_eq!(ids(json!({"n.k": {"gte": 0}})), Vec::<String>::new());
        assert_eq!(
            ids(json!({"obj": 1})),
            Vec::<String>::new(),
            "object members"
        );
        assert_eq!(ids(json!({"not": {"obj": 1}})), vec!["a", "b", "c"]);
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
    fn logic_combines_and_reserved_names_are_operators_and_columns() {
        assert_eq!(
            ids(json!({"or": [{"group": "eng"}, {"title": "C"}]})),
            vec!["b", "c"]
        );
        assert_eq!(
            ids(json!({"not": {"group": "sales"}, "mime_type": "text/plain"})),
            vec!["b", "c"]
        );
        // `not` is the operator: "not (gt = 1)" holds for a and b; `metadata.not` is a key.
        assert_eq!(ids(json!({"not": {"gt": 1}})), vec!["a", "b"]);
        assert_eq!(ids(json!({"metadata.gt": 1})), vec!["c"]);
        // A missing external_id matches no condition, so its negation holds.
        assert_eq!(ids(json!({"not": {"external_id": "ea"}})), vec!["b", "c"]);
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
            json!({"a": {"gt": true}}),
            json!({"title": 1}),
            json!({"created_at": {"gt": 5}}),
            json!({"document_id": {"in": ["a", 1]}}),
        ] {
            assert!(
                matches!(Filter::parse(&bad), Err(Error::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn in_lists_bind_one_parameter_each_and_their_total_is_bounded() {
        // Far more values than SQLite's bound-variable limit, in several lists: still runs.
        let list: Vec<Value> = (0..3000).map(|i| json!(format!("v{i}"))).collect();
        let f = json!({"and": [
            {"group": {"in": list.clone()}}, {"tags": {"in": list.clone()}},
            {"document_id": {"in": list.clone()}}]});
        let parsed = Filter::parse(&f).expect("9000 values are accepted");
        let mut params = Vec::new();
        parsed.to_sql(&mut params);
        assert!(params.len() < 10, "{} parameters", params.len());
        assert!(sql_ids(&seeded(), &parsed).expect("runs").is_empty());
        let over = json!({"and": [
            {"group": {"in": list.clone()}}, {"tags": {"in": list.clone()}},
            {"document_id": {"in": list.clone()}}, {"x": {"in": list}}]});
        match Filter::parse(&over) {
            Err(Error::Invalid(m)) => assert!(m.contains(&MAX_VALUES.to_string()), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deep_and_wide_filters_are_refused_not_overflowed() {
        // As deep as a request body can be (serde_json stops at 128 levels).
        let mut deep = json!({"k": 1});
        for _ in 0..120 {
            deep = json!({ "not": deep });
        }
        assert!(matches!(Filter::parse(&deep), Err(Error::Invalid(_))));
        let wide = json!({"or": vec![json!({}); 10_000]});
        assert!(matches!(Filter::parse(&wide), Err(Error::Invalid(_))));
        let mut ok = json!({"k": 1});
        for _ in 0..MAX_DEPTH {
            ok = json!({ "not": ok });
        }
        let f = Filter::parse(&ok).expect("at the depth limit");
        assert_eq!(
            sql_ids(&seeded(), &f).expect("runs"),
            rust_ids(&seeded(), &f)
        );
    }
}

#[cfg(test)]
mod props {
    use super::tests::{db, insert, rust_ids, sql_ids};
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

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

    /// Scalars chosen to collide: numbers equal across integer and real, strings that look like
    /// numbers and booleans, booleans next to 0 and 1, integers beyond a double's precision.
    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            (-2i64..3).prop_map(|i| json!(i)),
            prop::sample::select(vec![0.5, 1.0, -1.5, 2.0, 0.0]).prop_map(|f| json!(f)),
            prop::sample::select(vec![
                json!(9_007_199_254_740_993i64),
                json!(9_007_199_254_740_992.0),
                json!(i64::MAX),
                json!(u64::MAX),
            ]),
            prop::sample::select(vec!["a", "b", "1", "true", "", "2024-01-01", "é"])
                .prop_map(|s| json!(s)),
            any::<bool>().prop_map(Value::Bool),
        ]
    }

    fn text() -> impl Strategy<Value = Value> {
        prop::sample::select(vec![
            "a",
            "b",
            "1",
            "",
            "2024-01-01",
            "2024-06-01",
            "d1",
            "x",
        ])
        .prop_map(|s| json!(s))
    }

    /// A metadata value: scalars, null, arrays (with nested arrays and objects), objects.
    fn meta_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![scalar(), Just(Value::Null)];
        leaf.prop_recursive(2, 12, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(vec!["b", "k"]), inner), 0..3)
                    .prop_map(|kv| Value::Object(
                        kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                    )),
            ]
        })
    }

    fn metadata() -> impl Strategy<Value = Value> {
        prop::collection::vec(
            (
                prop::sample::select(vec!["k", "k", "k", "j", "a", "title", "not", "gt"]),
                meta_value(),
            ),
            0..6,
        )
        .prop_map(|kv| {
            let mut m = Map::new();
            for (k, v) in kv {
                m.insert(k.to_string(), v);
            }
            Value::Object(m)
        })
    }

    /// A condition on a key: equality, `eq`, `in`, a range; strings only for a column.
    fn condition(column: bool) -> BoxedStrategy<Value> {
        let s = if column {
            text().boxed()
        } else {
            scalar().boxed()
        };
        let bound = if column {
            text().boxed()
        } else {
            prop_oneof![
                (-2i64..3).prop_map(|i| json!(i)),
                Just(json!(0.5)),
                Just(json!(9_007_199_254_740_992.0)),
                text(),
            ]
            .boxed()
        };
        prop_oneof![
            s.clone(),
            s.clone().prop_map(|v| json!({ "eq": v })),
            prop::collection::vec(s, 0..4).prop_map(|v| json!({ "in": v })),
            prop::collection::vec(
                (prop::sample::select(vec!["gt", "gte", "lt", "lte"]), bound),
                1..3
            )
            .prop_map(|bs| {
                let mut m = Map::new();
                for (op, v) in bs {
                    m.insert(op.to_string(), v);
                }
                Value::Object(m)
            }),
        ]
        .boxed()
    }

    fn leaf() -> impl Strategy<Value = Value> {
        let meta_keys = prop::sample::select(vec![
            "k",
            "k",
            "k",
            "k",
            "j",
            "a",
            "a.b",
            "a.k",
            "metadata.k",
            "metadata.title",
            "metadata.not",
            "metadata.gt",
            "gt",
            "missing",
        ]);
        let columns = prop::sample::select(vec![
            "title",
            "document_id",
            "id",
            "external_id",
            "created_at",
            "updated_at",
            "mime_type",
        ]);
        prop_oneof![
            3 => (meta_keys, condition(false)).prop_map(|(k, c)| json!({ k: c })),
            1 => (columns, condition(true)).prop_map(|(k, c)| json!({ k: c })),
        ]
    }

    fn filter() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 24, 3, |inner| {
            prop_oneof![
                inner.clone().prop_map(|f| json!({ "not": f })),
                prop::collection::vec(inner.clone(), 0..3).prop_map(|v| json!({ "and": v })),
                prop::collection::vec(inner.clone(), 0..3).prop_map(|v| json!({ "or": v })),
                // Several keys in one object (ANDed).
                prop::collection::vec(inner, 1..3).prop_map(|v| {
                    let mut m = Map::new();
                    for f in v {
                        if let Value::Object(o) = f {
                            m.extend(o);
                        }
                    }
                    Value::Object(m)
                }),
            ]
        })
    }

    #[derive(Debug, Clone)]
    struct DocSpec {
        external_id: Option<Value>,
        title: Value,
        created_at: Value,
        metadata: Value,
    }

    fn doc() -> impl Strategy<Value = DocSpec> {
        (prop::option::of(text()), text(), text(), metadata()).prop_map(
            |(external_id, title, created_at, metadata)| DocSpec {
                external_id,
                title,
                created_at,
                metadata,
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Any JSON is either refused as an invalid request or becomes SQL that runs.
        #[test]
        fn any_json_is_invalid_or_runs(v in any_json()) {
            match Filter::parse(&v) {
                Ok(f) => {
                    let conn = super::tests::db();
                    prop_assert!(sql_ids(&conn, &f).is_ok(), "{} did not run", v);
                }
                Err(e) => prop_assert!(matches!(e, Error::Invalid(_)), "{}: {:?}", v, e),
            }
        }

        /// The one filter language has one meaning: on random documents (columns and
        /// metadata) the SQL of a random filter selects exactly what the Rust evaluation
        /// (`get_document`'s) selects.
        #[test]
        fn sql_and_rust_evaluation_select_the_same_documents(
            docs in prop::collection::vec(doc(), 1..10),
            f in filter(),
        ) {
            let conn = db();
            for (i, d) in docs.iter().enumerate() {
                let ext = d.external_id.as_ref().and_then(Value::as_str).map(|e| format!("{e}{i}"));
                // Unique external ids; some equal a generated value ("x0"... never, "d1" may).
                insert(
                    &conn,
                    &format!("d{i}"),
                    ext.as_deref(),
                    d.title.as_str().unwrap_or(""),
                    d.created_at.as_str().unwrap_or(""),
                    &d.metadata,
                );
            }
            let parsed = Filter::parse(&f);
            prop_assert!(parsed.is_ok(), "a generated filter parses: {} {:?}", f, parsed);
            let parsed = parsed.expect("checked");
            let sql = sql_ids(&conn, &parsed).expect("runs");
            prop_assert_eq!(sql, rust_ids(&conn, &parsed), "{}", f);
        }
    }
}
