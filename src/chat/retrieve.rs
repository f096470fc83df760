//! Retrieval for chat, tools and MCP: the one boundary between the chat subsystem and the
//! workspace's search. Every call applies the tenant context's filters (`ctx.filters`): the
//! tenant token's filter AND the caller's, so a request can narrow, never widen.
//!
//! Until the knowledge module's hybrid search is merged, `search` runs BM25 over the
//! workspace's Tantivy chunk index for every mode (documented; the mode is passed through).

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;

use crate::app::App;
use crate::error::{Error, Resource, Result};
use crate::identity::{filter, WorkspaceAccess};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Hybrid,
    Fulltext,
    Vector,
}

/// A retrieved chunk.
#[derive(Debug, Clone, Serialize)]
pub struct Passage {
    pub chunk_id: i64,
    pub document_id: String,
    pub title: String,
    pub heading_path: String,
    pub text: String,
    pub score: f32,
    pub metadata: Value,
}

/// A document as `get_document` shows it: its fields and its text (its chunks in order, cut
/// to `max_chars`).
#[derive(Debug, Clone, Serialize)]
pub struct DocumentText {
    pub document_id: String,
    pub external_id: Option<String>,
    pub title: String,
    pub metadata: Value,
    pub text: String,
    pub truncated: bool,
}

/// The context's filters (a tenant token's) and `extra` ones (a request's, a tool call's), all
/// validated: every one must hold.
pub fn filters_of(ctx: &WorkspaceAccess, extra: &[Value]) -> Result<Vec<Value>> {
    let mut all = ctx.filters(None)?;
    for f in extra.iter().filter(|f| !f.is_null()) {
        filter::validate(f)?;
        all.push(f.clone());
    }
    Ok(all)
}

/// Searches the context's workspace for `query`; `extra` filters narrow the context's own.
pub fn search(
    app: &App,
    ctx: &WorkspaceAccess,
    query: &str,
    _mode: Mode,
    limit: usize,
    extra: &[Value],
) -> Result<Vec<Passage>> {
    let filters = filters_of(ctx, extra)?;
    let limit = limit.clamp(1, 100);
    let (_, handle) = app.open_workspace(ctx.workspace_id)?;
    let searcher = handle.reader().searcher();
    let f = handle.fields();
    let parser = QueryParser::for_index(searcher.index(), vec![f.title, f.headings, f.text]);
    let (q, _) = parser.parse_query_lenient(query);
    // Over-fetch so that filtered-out chunks do not starve the answer.
    let depth = if filters.is_empty() {
        limit
    } else {
        limit * 8 + 50
    };
    let top = searcher.search(&q, &TopDocs::with_limit(depth).order_by_score())?;
    let mut scored: Vec<(i64, f32)> = Vec::with_capacity(top.len());
    let mut columns = HashMap::new();
    for (score, addr) in top {
        let col = match columns.entry(addr.segment_ord) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(
                searcher
                    .segment_reader(addr.segment_ord)
                    .fast_fields()
                    .u64("chunk_id")?,
            ),
        };
        if let Some(id) = col.first(addr.doc_id) {
            scored.push((id as i64, score));
        }
    }
    let conn = handle.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT c.document_id, c.heading_path, c.text, d.title, d.metadata
         FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.id = ?1",
    )?;
    let mut out = Vec::with_capacity(limit);
    for (chunk_id, score) in scored {
        let row = stmt.query_row([chunk_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        });
        let (document_id, heading_path, text, title, meta) = match row {
            Ok(r) => r,
            Err(rusqlite::Error::QueryReturnedNoRows) => continue,
            Err(e) => return Err(e.into()),
        };
        let metadata = crate::db::json_column(&meta)?;
        if !filters.iter().all(|fl| filter::matches(fl, &metadata)) {
            continue;
        }
        out.push(Passage {
            chunk_id,
            document_id,
            title,
            heading_path,
            text,
            score,
            metadata,
        });
        if out.len() == limit {
            break;
        }
    }
    Ok(out)
}

/// One document of the context's workspace, if the context's filters let it be seen (else
/// `NotFound`, as if it did not exist).
pub fn get_document(
    app: &App,
    ctx: &WorkspaceAccess,
    id: &str,
    max_chars: usize,
    extra: &[Value],
) -> Result<DocumentText> {
    if id.is_empty() || id.len() > 100 {
        return Err(Error::NotFound(Resource::Document));
    }
    let filters = filters_of(ctx, extra)?;
    let (_, handle) = app.open_workspace(ctx.workspace_id)?;
    let conn = handle.conn();
    let row = conn.query_row(
        "SELECT id, external_id, title, metadata FROM documents WHERE id = ?1",
        [id],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        },
    );
    let (document_id, external_id, title, meta) = match row {
        Ok(r) => r,
        Err(rusqlite::Error::QueryReturnedNoRows) => {
            return Err(Error::NotFound(Resource::Document))
        }
        Err(e) => return Err(e.into()),
    };
    let metadata = crate::db::json_column(&meta)?;
    if !filters.iter().all(|fl| filter::matches(fl, &metadata)) {
        return Err(Error::NotFound(Resource::Document));
    }
    let mut stmt =
        conn.prepare_cached("SELECT text FROM chunks WHERE document_id = ?1 ORDER BY ordinal")?;
    let mut rows = stmt.query([&document_id])?;
    let mut text = String::new();
    let mut truncated = false;
    while let Some(r) = rows.next()? {
        let t: String = r.get(0)?;
        if text.chars().count() + t.chars().count() > max_chars {
            truncated = true;
            break;
        }
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&t);
    }
    Ok(DocumentText {
        document_id,
        external_id,
        title,
        metadata,
        text,
        truncated,
    })
}
