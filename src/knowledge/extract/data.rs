//! CSV and JSON.

use super::{
    err, normalize_ws, too_much_text, utf8, Block, ExtractError, Extracted, Interrupt, Limits,
    CHECK_EVERY,
};

/// CSV: one row block per record, cells labelled with the header ("name: value; ...").
pub fn csv_table(bytes: &[u8]) -> Result<Extracted, ExtractError> {
    csv_with(bytes, &Limits::default(), &Interrupt::none())
}

pub(super) fn csv_with(
    bytes: &[u8],
    _limits: &Limits,
    stop: &Interrupt,
) -> Result<Extracted, ExtractError> {
    let text = utf8(bytes)?;
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| err(format!("the CSV is malformed: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut blocks = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        if i.is_multiple_of(CHECK_EVERY) {
            stop.check()?;
        }
        let rec = rec.map_err(|e| err(format!("the CSV is malformed at record {}: {e}", i + 1)))?;
        let cells: Vec<String> = rec
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(j, v)| match headers.get(j).filter(|h| !h.is_empty()) {
                Some(h) => format!("{h}: {}", v.trim()),
                None => v.trim().to_string(),
            })
            .collect();
        if !cells.is_empty() {
            blocks.push(Block::Row(cells.join("; ")));
        }
    }
    Ok(Extracted {
        title: None,
        blocks,
    })
}

/// JSON: every scalar becomes a `path: value` line; each element of a top-level array (or of
/// an array of objects) becomes its own block. serde_json refuses nesting deeper than 128, and
/// the walk over the value uses an explicit stack.
pub fn json(bytes: &[u8]) -> Result<Extracted, ExtractError> {
    json_with(bytes, &Limits::default(), &Interrupt::none())
}

pub(super) fn json_with(
    bytes: &[u8],
    limits: &Limits,
    stop: &Interrupt,
) -> Result<Extracted, ExtractError> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| err(format!("the JSON is malformed or too deeply nested: {e}")))?;
    let mut blocks = Vec::new();
    let title = v
        .get("title")
        .and_then(|t| t.as_str())
        .map(normalize_ws)
        .filter(|t| !t.is_empty());
    let mut total = 0usize;
    match &v {
        serde_json::Value::Array(items) => {
            for item in items {
                let mut lines = Vec::new();
                flatten_json(item, &mut lines, limits, stop)?;
                if !lines.is_empty() {
                    let row = lines.join("; ");
                    total += row.len();
                    blocks.push(Block::Row(row));
                }
                if total > limits.max_text {
                    return Err(too_much_text(limits));
                }
            }
        }
        _ => {
            let mut lines = Vec::new();
            flatten_json(&v, &mut lines, limits, stop)?;
            blocks.extend(lines.into_iter().map(Block::Para));
        }
    }
    Ok(Extracted { title, blocks })
}

/// A JSON path as a shared list of keys, joined only when a line is written.
struct JsonPath<'a> {
    parent: Option<std::rc::Rc<JsonPath<'a>>>,
    key: &'a str,
}

fn join_path(mut p: Option<&JsonPath<'_>>) -> String {
    let mut keys = Vec::new();
    while let Some(n) = p {
        keys.push(n.key);
        p = n.parent.as_deref();
    }
    keys.reverse();
    keys.join(".")
}

/// The `path: value` lines of `v`'s scalars, in document order, without recursion. Paths are
/// shared and joined only for a line written, and the lines stop at [`Limits::max_text`]: long
/// paths over many elements cannot make the work grow faster than the input.
fn flatten_json(
    v: &serde_json::Value,
    out: &mut Vec<String>,
    limits: &Limits,
    stop: &Interrupt,
) -> Result<(), ExtractError> {
    use serde_json::Value;
    use std::rc::Rc;
    let mut stack: Vec<(&Value, Option<Rc<JsonPath<'_>>>)> = vec![(v, None)];
    let mut steps = 0usize;
    let mut total = 0usize;
    while let Some((v, path)) = stack.pop() {
        steps += 1;
        if steps.is_multiple_of(CHECK_EVERY) {
            stop.check()?;
        }
        let value = match v {
            Value::Null => continue,
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => {
                if s.trim().is_empty() {
                    continue;
                }
                normalize_ws(s)
            }
            Value::Array(a) => {
                for x in a.iter().rev() {
                    stack.push((x, path.clone()));
                }
                continue;
            }
            Value::Object(o) => {
                for (k, x) in o.iter().rev() {
                    let p = JsonPath {
                        parent: path.clone(),
                        key: k.as_str(),
                    };
                    stack.push((x, Some(Rc::new(p))));
                }
                continue;
            }
        };
        let line = label(&join_path(path.as_deref()), &value);
        total += line.len();
        if total > limits.max_text {
            return Err(too_much_text(limits));
        }
        out.push(line);
    }
    Ok(())
}

fn label(path: &str, value: &str) -> String {
    if path.is_empty() {
        value.to_string()
    } else {
        format!("{path}: {value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_become_labelled_rows() {
        let ex = csv_table(b"name,city\nAda,London\nAlan,\n").expect("csv");
        assert_eq!(
            ex.blocks,
            vec![
                Block::Row("name: Ada; city: London".into()),
                Block::Row("name: Alan".into())
            ]
        );
        let ex =
            json(br#"{"title": "Cfg", "server": {"port": 80, "tags": ["a", "b"]}}"#).expect("json");
        assert_eq!(ex.title.as_deref(), Some("Cfg"));
        assert!(ex.blocks.contains(&Block::Para("server.port: 80".into())));
        assert!(ex.blocks.contains(&Block::Para("server.tags: b".into())));
        let ex = json(br#"[{"q": "x"}, {"q": "y"}]"#).expect("array");
        assert_eq!(ex.blocks.len(), 2);
    }
}
