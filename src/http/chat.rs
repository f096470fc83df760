//! Agents (`/agents`), chat sessions (`/sessions`) and chat (`/chat`, JSON or Server-Sent
//! Events), under `/v1/workspaces/{ws}/...` or, for API keys and tenant tokens, `/v1/...`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{stream, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::auth::WorkspaceContext;
use super::error::{ApiError, ApiResult};
use super::extract::{Json, Path, Query};
use super::params::{blocking, param, PageQuery};
use crate::app::App;
use crate::chat::{AgentPatch, ChatAnswer, ChatEvent, ChatInput, History, NewAgent, Prepared};

pub async fn list_agents(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let page = q.page()?;
    let agents = blocking(move || app.chat().list_agents(&ctx, page)).await?;
    Ok(axum::Json(json!({ "data": agents })))
}

pub async fn create_agent(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Json(new): Json<NewAgent>,
) -> ApiResult<impl IntoResponse> {
    let agent = blocking(move || app.chat().create_agent(&ctx, new)).await?;
    super::middleware::record_target("agent", &agent.id);
    Ok((StatusCode::CREATED, axum::Json(agent)))
}

pub async fn get_agent(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let id = param(&p, "id")?.to_string();
    let agent = blocking(move || app.chat().get_agent(&ctx, &id)).await?;
    Ok(axum::Json(agent))
}

pub async fn patch_agent(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Path(p): Path<HashMap<String, String>>,
    Json(patch): Json<AgentPatch>,
) -> ApiResult<impl IntoResponse> {
    let id = param(&p, "id")?.to_string();
    let agent = blocking(move || app.chat().update_agent(&ctx, &id, patch)).await?;
    Ok(axum::Json(agent))
}

pub async fn delete_agent(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let id = param(&p, "id")?.to_string();
    blocking(move || app.chat().delete_agent(&ctx, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_sessions(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let page = q.page()?;
    let sessions = blocking(move || app.chat().list_sessions(&ctx, page)).await?;
    Ok(axum::Json(json!({ "data": sessions })))
}

pub async fn session_messages(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Path(p): Path<HashMap<String, String>>,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let id = param(&p, "id")?.to_string();
    let page = q.page()?;
    let messages = blocking(move || app.chat().session_messages(&ctx, &id, page)).await?;
    Ok(axum::Json(json!({ "data": messages })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatBody {
    /// Agent id or slug (default: the session's agent, else the workspace's default agent).
    #[serde(default)]
    pub agent_id: Option<String>,
    pub query: String,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub stream: bool,
    /// A metadata filter that narrows what the answer draws from.
    #[serde(default)]
    pub filter: Option<Value>,
}

pub async fn chat(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Json(body): Json<ChatBody>,
) -> ApiResult<Response> {
    let stream = body.stream;
    let input = ChatInput {
        agent: body.agent_id,
        query: body.query,
        history: History::Session(body.session_id),
        filter: body.filter,
        extra_system: None,
    };
    let prepared = blocking(move || app.chat().prepare_chat(&ctx, input)).await?;
    if !stream {
        let answer = prepared.run(None).await.map_err(ApiError::from)?;
        return Ok(axum::Json(answer).into_response());
    }
    let first = Event::default().event("session").data(
        json!({"session_id": prepared.session_id, "agent_id": prepared.agent.id}).to_string(),
    );
    let steps = drive(prepared);
    let events = stream::once(async move { first })
        .chain(steps.flat_map(|s| stream::iter(chat_events(s))))
        .map(Ok::<_, Infallible>);
    Ok(sse(events))
}

/// Wraps a stream of events as an SSE response with keep-alive comments.
pub fn sse<S>(events: S) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// What a running chat produces, in order: events, then its end.
pub enum Step {
    Event(ChatEvent),
    Done(Box<ChatAnswer>),
    Failed(ApiError),
}

/// Runs a prepared chat on its own task (it finishes, and stores its answer, even when the
/// client goes away) and streams its steps.
pub fn drive(prepared: Prepared) -> impl Stream<Item = Step> + Send + 'static {
    let (out, rx): (UnboundedSender<Step>, UnboundedReceiver<Step>) = unbounded_channel();
    tokio::spawn(async move {
        let (etx, mut erx) = unbounded_channel();
        let run = prepared.run(Some(etx));
        tokio::pin!(run);
        let result = loop {
            tokio::select! {
                Some(e) = erx.recv() => { let _ = out.send(Step::Event(e)); }
                r = &mut run => break r,
            }
        };
        while let Ok(e) = erx.try_recv() {
            let _ = out.send(Step::Event(e));
        }
        let _ = out.send(match result {
            Ok(a) => Step::Done(Box::new(a)),
            Err(e) => Step::Failed(ApiError::from(e)),
        });
    });
    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|s| (s, rx)) })
}

fn chat_events(step: Step) -> Vec<Event> {
    let ev = |name: &str, data: Value| Event::default().event(name).data(data.to_string());
    match step {
        Step::Event(ChatEvent::Delta(text)) => vec![ev("delta", json!({ "text": text }))],
        Step::Event(ChatEvent::Tool(t)) => {
            vec![ev("tool", serde_json::to_value(&t).unwrap_or_default())]
        }
        Step::Done(a) => vec![
            ev("citations", json!({ "citations": a.citations })),
            ev("done", serde_json::to_value(&*a).unwrap_or_default()),
        ],
        Step::Failed(e) => vec![ev(
            "error",
            json!({"error": {"code": e.code.as_str(), "message": e.message}}),
        )],
    }
}
