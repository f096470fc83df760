//! The Model Context Protocol server of a workspace (Streamable HTTP transport, JSON-RPC 2.0),
//! transport-independent: `Chat::mcp_post` takes a parsed body and answers with a status, an
//! optional JSON body and an optional new session id; `http::mcp` only moves bytes.
//!
//! - `initialize` opens a session (`Mcp-Session-Id`), bound to the workspace and the principal
//!   that opened it; every later request must carry it (unknown or foreign: `404`, after which
//!   clients initialize again, as the transport specifies).
//! - `tools/list` and `tools/call` expose the workspace's search (`search`, `fulltext_search`,
//!   `vector_search`) and `get_document`, run inside the request's tenant context: they need the
//!   `Search` permission, and a tenant token's filter applies.
//! - Notifications and client responses are accepted with `202` and no body.

use serde_json::{json, Value};
use uuid::Uuid;

use super::sessions::owner_of;
use super::tools::{self, Tool};
use super::Chat;
use crate::error::Error;
use crate::identity::{Action, WorkspaceAccess};

/// Protocol revisions this server speaks, newest first.
pub const PROTOCOL_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

/// What an MCP session is bound to.
#[derive(Debug, Clone)]
pub struct McpSession {
    workspace: Uuid,
    owner: String,
}

/// The answer to one HTTP request of the transport.
#[derive(Debug, Clone)]
pub struct McpReply {
    pub status: u16,
    pub body: Option<Value>,
    /// A session opened by this request (`initialize`).
    pub session_id: Option<String>,
}

impl McpReply {
    fn error(status: u16, code: i64, message: &str) -> McpReply {
        McpReply {
            status,
            body: Some(rpc_error(Value::Null, code, message)),
            session_id: None,
        }
    }
}

fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn rpc_result(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn is_initialize(v: &Value) -> bool {
    v.get("method").and_then(Value::as_str) == Some("initialize")
}

impl Chat {
    /// Handles a POST of the transport. `body` is `None` when it was not JSON. Blocking.
    pub fn mcp_post(
        &self,
        ctx: &WorkspaceAccess,
        session: Option<&str>,
        protocol: Option<&str>,
        body: Option<Value>,
    ) -> McpReply {
        let Some(body) = body else {
            return McpReply::error(400, PARSE_ERROR, "the body is not JSON");
        };
        if let Some(p) = protocol {
            if !PROTOCOL_VERSIONS.contains(&p) {
                return McpReply::error(
                    400,
                    INVALID_REQUEST,
                    &format!("unsupported MCP-Protocol-Version {p:?}"),
                );
            }
        }
        let (messages, batch) = match body {
            Value::Array(items) if !items.is_empty() => (items, true),
            v @ Value::Object(_) => (vec![v], false),
            _ => return McpReply::error(400, INVALID_REQUEST, "expected a JSON-RPC message"),
        };
        let initializing = messages.iter().any(is_initialize);
        if initializing && messages.len() > 1 {
            return McpReply::error(400, INVALID_REQUEST, "initialize must be sent alone");
        }
        if !initializing {
            match session {
                None => {
                    return McpReply::error(
                        400,
                        INVALID_REQUEST,
                        "missing Mcp-Session-Id header: call initialize first",
                    )
                }
                Some(id) if !self.mcp_session_ok(ctx, id) => {
                    return McpReply::error(
                        404,
                        INVALID_REQUEST,
                        "unknown or expired MCP session: initialize again",
                    )
                }
                Some(_) => {}
            }
        }
        let mut new_session = None;
        let mut out = Vec::new();
        for m in messages {
            let id = m.get("id").cloned();
            let method = m.get("method").and_then(Value::as_str);
            let (Some(id), Some(method)) = (id, method) else {
                // A notification or a client's response: nothing to answer.
                if m.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
                    out.push(rpc_error(
                        Value::Null,
                        INVALID_REQUEST,
                        "not a JSON-RPC 2.0 message",
                    ));
                }
                continue;
            };
            if m.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
                out.push(rpc_error(id, INVALID_REQUEST, "not a JSON-RPC 2.0 message"));
                continue;
            }
            let params = m.get("params").cloned().unwrap_or_else(|| json!({}));
            out.push(match method {
                "initialize" => {
                    let (result, sid) = self.mcp_initialize(ctx, &params);
                    new_session = Some(sid);
                    rpc_result(id, result)
                }
                "ping" => rpc_result(id, json!({})),
                "tools/list" => rpc_result(id, json!({"tools": mcp_tools(ctx)})),
                "tools/call" => match self.mcp_call(ctx, &params) {
                    Ok(result) => rpc_result(id, result),
                    Err(msg) => rpc_error(id, INVALID_PARAMS, &msg),
                },
                other => rpc_error(id, METHOD_NOT_FOUND, &format!("method {other:?} not found")),
            });
        }
        let body = match (out.len(), batch) {
            (0, _) => None,
            (_, true) => Some(Value::Array(out)),
            (_, false) => out.pop(),
        };
        McpReply {
            status: if body.is_some() { 200 } else { 202 },
            body,
            session_id: new_session,
        }
    }

    /// Ends a session (`DELETE`). False when it is unknown or not the caller's.
    pub fn mcp_delete(&self, ctx: &WorkspaceAccess, session: &str) -> bool {
        if !self.mcp_session_ok(ctx, session) {
            return false;
        }
        let mut s = self
            .state
            .mcp_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        s.pop(session).is_some()
    }

    fn mcp_session_ok(&self, ctx: &WorkspaceAccess, id: &str) -> bool {
        let mut s = self
            .state
            .mcp_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        s.get(id).is_some_and(|m| {
            m.workspace == ctx.workspace_id() && m.owner == owner_of(ctx.principal())
        })
    }

    fn mcp_initialize(&self, ctx: &WorkspaceAccess, params: &Value) -> (Value, String) {
        let asked = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let version = PROTOCOL_VERSIONS
            .iter()
            .find(|v| **v == asked)
            .unwrap_or(&PROTOCOL_VERSIONS[0]);
        let sid = crate::identity::secrets::random_hex(16);
        self.state
            .mcp_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(
                sid.clone(),
                McpSession {
                    workspace: ctx.workspace_id(),
                    owner: owner_of(ctx.principal()),
                },
            );
        (
            json!({
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": {"name": "enclave", "title": "Enclave", "version": env!("CARGO_PKG_VERSION")},
                "instructions": "Search this workspace's knowledge base with the search tools, then read documents with get_document.",
            }),
            sid,
        )
    }

    fn mcp_call(&self, ctx: &WorkspaceAccess, params: &Value) -> Result<Value, String> {
        let name = params
            .get("name")
            .and_then(Value::as_str)
            .ok_or("params.name (the tool) is required")?;
        let tool = Tool::parse(name).ok_or_else(|| format!("unknown tool {name:?}"))?;
        let args = match params.get("arguments") {
            None | Some(Value::Null) => json!({}),
            Some(a) => a.clone(),
        };
        let result = ctx
            .require(Action::Search)
            .and_then(|_| tools::run(self, ctx, tool, &args, &[]));
        Ok(match result {
            Ok(out) => {
                let text = serde_json::to_string_pretty(&out.content).unwrap_or_default();
                json!({
                    "content": [{"type": "text", "text": text}],
                    "structuredContent": out.content,
                    "isError": false,
                })
            }
            Err(e) => {
                let msg = match &e {
                    Error::Invalid(m) | Error::Forbidden(m) => m.clone(),
                    Error::NotFound(what) => format!("{what} not found"),
                    Error::Suspended => "the organization is suspended".into(),
                    _ => {
                        tracing::warn!(tool = name, error = %e, "MCP tool failed");
                        "the tool failed; the server log has details".into()
                    }
                };
                json!({"content": [{"type": "text", "text": msg}], "isError": true})
            }
        })
    }
}

/// The tools this context may call.
fn mcp_tools(ctx: &WorkspaceAccess) -> Vec<Value> {
    if ctx.require(Action::Search).is_err() {
        return Vec::new();
    }
    tools::ALL
        .iter()
        .map(|t| {
            json!({
                "name": t.name(),
                "description": t.description(),
                "inputSchema": t.input_schema(),
            })
        })
        .collect()
}
