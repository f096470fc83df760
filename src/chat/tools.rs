//! The tools an agent may offer to its model, and MCP clients may call: workspace search in its
//! three modes and reading one document. They always run inside the request's tenant context:
//! the tenant token's filter applies, and a filter in the arguments can only narrow it.

use serde_json::{json, Value};

use super::retrieve::{self, Mode, Passage};
use super::Chat;
use crate::error::{Error, Result};
use crate::identity::WorkspaceAccess;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Search,
    FulltextSearch,
    VectorSearch,
    GetDocument,
}

pub const ALL: [Tool; 4] = [
    Tool::Search,
    Tool::FulltextSearch,
    Tool::VectorSearch,
    Tool::GetDocument,
];

/// Most results one tool call returns.
pub const MAX_RESULTS: usize = 10;
const DEFAULT_RESULTS: usize = 5;
/// Characters of a passage given to a model.
const PASSAGE_CHARS: usize = 1_500;
/// Characters of a document `get_document` returns.
const DOCUMENT_CHARS: usize = 20_000;

impl Tool {
    pub fn parse(name: &str) -> Option<Tool> {
        ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Tool::Search => "search",
            Tool::FulltextSearch => "fulltext_search",
            Tool::VectorSearch => "vector_search",
            Tool::GetDocument => "get_document",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Tool::Search => "Search the workspace's knowledge base (hybrid: full text and meaning). Returns the best passages with their document ids and citation markers.",
            Tool::FulltextSearch => "Search the workspace's knowledge base by keywords (BM25 full text). Returns the best passages.",
            Tool::VectorSearch => "Search the workspace's knowledge base by meaning (embeddings). Returns the best passages.",
            Tool::GetDocument => "Read one document of the knowledge base by its id (as returned by a search).",
        }
    }

    /// JSON Schema of the arguments.
    pub fn input_schema(self) -> Value {
        match self {
            Tool::GetDocument => json!({
                "type": "object",
                "properties": {"document_id": {"type": "string", "description": "the document's id"}},
                "required": ["document_id"],
                "additionalProperties": false
            }),
            _ => json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "what to look for"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_RESULTS, "description": "number of passages (default 5)"},
                    "filter": {"type": "object", "description": "metadata filter, e.g. {\"group\": \"sales\"}"}
                },
                "required": ["query"],
                "additionalProperties": false
            }),
        }
    }

    /// The tool in the OpenAI `tools` format.
    pub fn openai_spec(self) -> Value {
        json!({
            "type": "function",
            "function": {
                "name": self.name(),
                "description": self.description(),
                "parameters": self.input_schema(),
            }
        })
    }

    fn mode(self) -> Mode {
        match self {
            Tool::FulltextSearch => Mode::Fulltext,
            Tool::VectorSearch => Mode::Vector,
            _ => Mode::Hybrid,
        }
    }
}

/// What a tool call produced: JSON for the model or client, and the passages it showed (which
/// become citations).
#[derive(Debug, Clone)]
pub struct ToolOutput {
    pub content: Value,
    pub passages: Vec<Passage>,
}

fn str_arg<'a>(args: &'a Value, name: &str) -> Result<&'a str> {
    args.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            Error::invalid(format!(
                "argument {name:?} (a non-empty string) is required"
            ))
        })
}

/// Runs a tool with `args` in the context `ctx`; `extra` filters (a chat request's) apply on top
/// of the context's and the arguments' own. Blocking (SQLite, Tantivy).
pub fn run(
    chat: &Chat,
    ctx: &WorkspaceAccess,
    tool: Tool,
    args: &Value,
    extra: &[Value],
) -> Result<ToolOutput> {
    if !args.is_object() {
        return Err(Error::invalid("tool arguments must be a JSON object"));
    }
    match tool {
        Tool::GetDocument => {
            let id = str_arg(args, "document_id")?;
            let doc = retrieve::get_document(chat, ctx, id, DOCUMENT_CHARS, extra)?;
            Ok(ToolOutput {
                content: serde_json::to_value(&doc).map_err(|e| Error::internal(e.to_string()))?,
                passages: Vec::new(),
            })
        }
        _ => {
            let query = str_arg(args, "query")?;
            let limit = match args.get("limit") {
                None | Some(Value::Null) => DEFAULT_RESULTS,
                Some(v) => v
                    .as_u64()
                    .filter(|n| (1..=MAX_RESULTS as u64).contains(n))
                    .ok_or_else(|| Error::invalid(format!("limit must be 1 to {MAX_RESULTS}")))?
                    as usize,
            };
            let mut filters = extra.to_vec();
            if let Some(f) = args.get("filter").filter(|f| !f.is_null()) {
                filters.push(f.clone());
            }
            let passages = retrieve::search(chat, ctx, query, tool.mode(), limit, &filters)?;
            let results: Vec<Value> = passages
                .iter()
                .map(|p| {
                    json!({
                        "document_id": p.document_id,
                        "chunk_id": p.chunk_id,
                        "title": p.title,
                        "heading_path": p.heading_path,
                        "text": super::snippet(&p.text, PASSAGE_CHARS),
                        "score": p.score,
                        "metadata": p.metadata,
                    })
                })
                .collect();
            Ok(ToolOutput {
                content: json!({ "results": results }),
                passages,
            })
        }
    }
}
