//! Retrieval for chat, tools and MCP: the one boundary between the chat subsystem and the
//! workspace's knowledge. Search goes through the [`Retriever`] (implemented here by
//! `knowledge::Knowledge`, whose `retrieve` checks the action and ANDs the tenant token's
//! filter); `get_document` applies the context's filters itself. A request can narrow, never
//! widen.

use serde::Serialize;
use serde_json::Value;

use super::Chat;
use crate::error::{Error, Resource, Result};
use crate::filter::{Doc, Filter};
use crate::identity::WorkspaceAccess;
use crate::knowledge::search::Mode as KMode;
use crate::knowledge::SearchRequest;
use crate::knowledge::{Knowledge, SearchResponse};

/// What chat needs of knowledge: search in the context's workspace, for chat (`Chat`) and for
/// tools and MCP (`Search`), with the context's token filter AND `extra`.
pub trait Retriever: Send + Sync {
    fn retrieve(
        &self,
        ctx: &WorkspaceAccess,
        req: &SearchRequest,
        extra: Option<Filter>,
    ) -> Result<SearchResponse>;
}

impl Retriever for Knowledge {
    fn retrieve(
        &self,
        ctx: &WorkspaceAccess,
        req: &SearchRequest,
        extra: Option<Filter>,
    ) -> Result<SearchResponse> {
        Knowledge::retrieve(self, ctx, req, extra)
    }
}

/// The columns of a document [`DocRow::from_row`] reads, by name: what a filter sees.
const DOC_COLUMNS: &str = "id, external_id, title, metadata, mime_type, created_at, updated_at";

/// A document row as stored (its metadata still JSON text).
struct DocRow {
    id: String,
    external_id: Option<String>,
    title: String,
    metadata: String,
    mime_type: String,
    created_at: String,
    updated_at: String,
}

impl DocRow {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get("id")?,
            external_id: r.get("external_id")?,
            title: r.get("title")?,
            metadata: r.get("metadata")?,
            mime_type: r.get("mime_type")?,
            created_at: r.get("created_at")?,
            updated_at: r.get("updated_at")?,
        })
    }
}

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

/// The one filter of the context (a tenant token's) AND the `extra` ones (a request's, a tool
/// call's), parsed: every one must hold. `None` when nothing restricts.
pub fn filters_of(ctx: &WorkspaceAccess, extra: &[Value]) -> Result<Option<Filter>> {
    let extra: Vec<&Value> = extra.iter().collect();
    ctx.filter_with(&extra)
}

/// Searches the context's workspace for `query` (in the query language, as `POST /search`
/// reads it: a tool's or an MCP client's query) with the workspace's own search (the same code
/// path as `POST /search`); `extra` filters narrow the context's own.
pub fn search(
    chat: &Chat,
    ctx: &WorkspaceAccess,
    query: &str,
    mode: Mode,
    limit: usize,
    extra: &[Value],
) -> Result<Vec<Passage>> {
    search_with(chat, ctx, query, false, mode, limit, extra)
}

/// [`search`] for a chat message: its text is read as plain words, never as query syntax (a
/// question such as "Note: (see above)" is not a query).
pub fn search_message(
    chat: &Chat,
    ctx: &WorkspaceAccess,
    message: &str,
    mode: Mode,
    limit: usize,
    extra: &[Value],
) -> Result<Vec<Passage>> {
    search_with(chat, ctx, message, true, mode, limit, extra)
}

fn search_with(
    chat: &Chat,
    ctx: &WorkspaceAccess,
    query: &str,
    plain_words: bool,
    mode: Mode,
    limit: usize,
    extra: &[Value],
) -> Result<Vec<Passage>> {
    // The extra filters only: the retriever ANDs the context's token filter itself.
    let mut combined = None;
    for f in extra.iter().filter(|f| !f.is_null()) {
        combined = Filter::and(combined, Some(Filter::parse(f)?));
    }
    let req = SearchRequest {
        query: query.to_string(),
        mode: Some(match mode {
            Mode::Hybrid => KMode::Hybrid,
            Mode::Fulltext => KMode::Fulltext,
            Mode::Vector => KMode::Vector,
        }),
        limit: Some(limit.clamp(1, crate::knowledge::search::MAX_LIMIT)),
        highlight: Some(false),
        plain_words,
        ..Default::default()
    };
    let found = chat.retriever.retrieve(ctx, &req, combined)?;
    Ok(found
        .results
        .into_iter()
        .map(|r| Passage {
            chunk_id: r.chunk_id,
            document_id: r.document_id,
            title: r.title,
            heading_path: r.heading_path,
            text: r.text,
            score: r.score,
            metadata: r.metadata,
        })
        .collect())
}

/// One document of the context's workspace, if the context's filters let it be seen (else
/// `NotFound`, as if it did not exist).
pub fn get_document(
    chat: &Chat,
    ctx: &WorkspaceAccess,
    id: &str,
    max_chars: usize,
    extra: &[Value],
) -> Result<DocumentText> {
    if id.is_empty() || id.len() > 100 {
        return Err(Error::NotFound(Resource::Document));
    }
    let filter = filters_of(ctx, extra)?;
    let handle = chat.store(ctx)?;
    let conn = handle.conn();
    // The filter sees what search's SQL sees: the document's columns and metadata.
    let row = conn.query_row(
        &format!("SELECT {DOC_COLUMNS} FROM documents WHERE id = ?1"),
        [id],
        DocRow::from_row,
    );
    let DocRow {
        id: document_id,
        external_id,
        title,
        metadata,
        mime_type,
        created_at,
        updated_at,
    } = match row {
        Ok(r) => r,
        Err(rusqlite::Error::QueryReturnedNoRows) => {
            return Err(Error::NotFound(Resource::Document))
        }
        Err(e) => return Err(e.into()),
    };
    let metadata = crate::db::json_column(&metadata)?;
    let doc = Doc {
        id: &document_id,
        external_id: external_id.as_deref(),
        title: &title,
        mime_type: &mime_type,
        created_at: &created_at,
        updated_at: &updated_at,
        metadata: &metadata,
    };
    if filter.is_some_and(|f| !f.matches(&doc)) {
        return Err(Error::NotFound(Resource::Document));
    }
    let mut stmt =
        conn.prepare_cached("SELECT text FROM chunks WHERE document_id = ?1 ORDER BY ordinal")?;
    let mut rows = stmt.query([&document_id])?;
    let mut text = String::new();
    let mut truncated = false;
    while let Some(r) = rows.next()? {
        let t: String = r.get("text")?;
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
