//! The OpenAI-compatible facade of a workspace, so that OpenAI SDKs talk to its agents
//! unchanged: base URL `/v1/workspaces/{ws}/openai/v1` (or `/v1/openai/v1` with an API key),
//! `GET /models` (the agents the caller can see; `id` is the slug), `GET /models/{model}`, and
//! `POST /chat/completions` with `model` = agent id or slug, streaming or not. The
//! conversation comes from `messages` (nothing is stored); the last message must be the user's.
//! Answers carry Enclave's `citations` as an extra field.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use futures_util::{stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::WorkspaceContext;
use super::chat::{drive, sse, Step};
use super::error::{ApiError, ApiResult};
use super::extract::{Json, Path};
use super::params::blocking;
use crate::app::App;
use crate::chat::{Agent, ChatEvent, ChatInput, History, Turn};
use crate::control::Page;

fn unix(ts: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(ts)
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

fn model_of(a: &Agent) -> Value {
    json!({
        "id": a.slug,
        "object": "model",
        "created": unix(&a.created_at),
        "owned_by": "enclave",
        "agent_id": a.id,
        "name": a.name,
        "description": a.description,
    })
}

pub async fn models(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
) -> ApiResult<impl IntoResponse> {
    let page = Page {
        limit: crate::control::MAX_PAGE,
        offset: 0,
    };
    let agents = blocking(move || app.chat().list_agents(&ctx, page)).await?;
    let data: Vec<Value> = agents.iter().map(model_of).collect();
    Ok(axum::Json(json!({"object": "list", "data": data})))
}

pub async fn model(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let key = p.get("model").cloned().unwrap_or_default();
    let agent = blocking(move || app.chat().get_agent(&ctx, &key)).await?;
    Ok(axum::Json(model_of(&agent)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct InMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Value>,
}

/// The fields Enclave reads; the SDKs' other fields are accepted and ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CompletionRequest {
    pub model: String,
    pub messages: Vec<InMessage>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<Value>,
}

/// The text of a message's content: a string, or the text parts of an array.
fn text_of(content: &Option<Value>) -> Result<String, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n")),
        Some(_) => Err(ApiError::invalid(
            StatusCode::BAD_REQUEST,
            "message content must be a string or an array of parts",
        )),
    }
}

fn chat_input(req: &CompletionRequest) -> Result<ChatInput, ApiError> {
    let bad = |m: &str| ApiError::invalid(StatusCode::BAD_REQUEST, m);
    let (last, earlier) = req
        .messages
        .split_last()
        .ok_or_else(|| bad("messages must not be empty"))?;
    if last.role != "user" {
        return Err(bad("the last message must be the user's"));
    }
    let mut system = Vec::new();
    let mut turns = Vec::new();
    for m in earlier {
        let text = text_of(&m.content)?;
        match m.role.as_str() {
            "system" | "developer" => system.push(text),
            "user" | "assistant" if !text.is_empty() => turns.push(Turn {
                role: m.role.clone(),
                content: text,
            }),
            "user" | "assistant" | "tool" | "function" => {}
            other => return Err(bad(&format!("unknown message role {other:?}"))),
        }
    }
    Ok(ChatInput {
        agent: Some(req.model.clone()),
        query: text_of(&last.content)?,
        history: History::Given(turns),
        filter: None,
        extra_system: if system.is_empty() {
            None
        } else {
            Some(system.join("\n\n"))
        },
    })
}

pub async fn completions(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Json(req): Json<CompletionRequest>,
) -> ApiResult<Response> {
    let input = chat_input(&req)?;
    let prepared = blocking(move || app.chat().prepare_chat(&ctx, input)).await?;
    let id = format!("chatcmpl-{}", crate::identity::secrets::random_hex(12));
    let created = chrono::Utc::now().timestamp();
    let model = req.model.clone();
    if !req.stream {
        let a = prepared.run(None).await.map_err(ApiError::from)?;
        return Ok(axum::Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": a.answer, "refusal": null},
                "finish_reason": "stop",
                "logprobs": null,
            }],
            "usage": a.usage,
            "citations": a.citations,
        }))
        .into_response());
    }
    let include_usage = req
        .stream_options
        .as_ref()
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        })
    };
    let data = |v: Value| Event::default().data(v.to_string());
    let first = data(chunk(json!({"role": "assistant", "content": ""}), None));
    let steps = drive(prepared).flat_map(move |s| {
        let events = match s {
            Step::Event(ChatEvent::Delta(t)) => vec![data(chunk(json!({ "content": t }), None))],
            Step::Event(ChatEvent::Tool(_)) => Vec::new(),
            Step::Done(a) => {
                let mut last = chunk(json!({}), Some("stop"));
                last["citations"] = json!(a.citations);
                let mut out = vec![data(last)];
                if include_usage {
                    let mut u = chunk(json!({}), None);
                    u["choices"] = json!([]);
                    u["usage"] = json!(a.usage);
                    out.push(data(u));
                }
                out.push(Event::default().data("[DONE]"));
                out
            }
            Step::Failed(e) => vec![data(json!({
                "error": {"message": e.message, "type": e.code.as_str(), "code": e.code.as_str()}
            }))],
        };
        stream::iter(events)
    });
    let events = stream::once(async move { first })
        .chain(steps)
        .map(Ok::<_, Infallible>);
    Ok(sse(events))
}
