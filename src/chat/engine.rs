//! The chat engine. `Chat::prepare_chat` checks everything that can be refused before an answer
//! starts (permission, agent visibility, session ownership, filters, provider settings), so
//! that those are plain HTTP errors; `Prepared::run` then answers: extractively from the best
//! passages, or with the org's model, offering the agent's tools and running them inside the
//! request's tenant context, looped to a bounded depth. Text deltas, tool activity and
//! citations are reported as [`ChatEvent`]s while it runs (for streaming); the exchange is
//! stored with its citations and usage when it completes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedSender;

use super::agents::{self, Agent};
use super::provider::{self, OpenAiConfig, ProviderUsage};
use super::retrieve::{self, Mode, Passage};
use super::sessions;
use super::tools::{self, Tool};
use super::Chat;
use super::{blocking, estimate_tokens, snippet};
use crate::error::{Error, Result};
use crate::identity::{Action, WorkspaceAccess};

/// Rounds of tool calls before the model must answer.
pub const MAX_TOOL_ROUNDS: usize = 4;
/// Tool calls run per round at most.
const MAX_CALLS_PER_ROUND: usize = 8;
/// Longest question.
pub const MAX_QUERY_CHARS: usize = 8_000;
/// Passages an extractive answer quotes.
const EXTRACTIVE_PASSAGES: usize = 3;
/// Passages put in the prompt of an agent without tools.
const CONTEXT_PASSAGES: usize = 5;
const SNIPPET_CHARS: usize = 300;

pub const EXTRACTIVE_NOTICE: &str =
    "Extractive answer (no language model is configured for this agent):";

/// One turn of a conversation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Turn {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Citation {
    pub marker: usize,
    pub chunk_id: i64,
    pub document_id: String,
    pub title: String,
    pub heading_path: String,
    pub snippet: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    fn add(&mut self, u: ProviderUsage) {
        self.prompt_tokens += u.prompt_tokens;
        self.completion_tokens += u.completion_tokens;
        self.total_tokens = self.prompt_tokens + self.completion_tokens;
    }
}

/// A tool the agent ran while answering.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ToolActivity {
    pub name: String,
    pub arguments: Value,
    pub results: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a running chat reports.
#[derive(Debug, Clone)]
pub enum ChatEvent {
    Delta(String),
    Tool(ToolActivity),
}

/// Where the conversation's history comes from.
#[derive(Debug, Clone)]
pub enum History {
    /// A stored session (continued when given, else a new one), saved after the answer.
    Session(Option<String>),
    /// Turns given by the client (the OpenAI facade), not stored.
    Given(Vec<Turn>),
}

#[derive(Debug, Clone)]
pub struct ChatInput {
    /// Agent id or slug; `None`: the session's agent, or the workspace's default agent.
    pub agent: Option<String>,
    pub query: String,
    pub history: History,
    /// A metadata filter that narrows what the answer may draw from.
    pub filter: Option<Value>,
    /// More system instructions (the facade's system messages).
    pub extra_system: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChatAnswer {
    pub agent_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<i64>,
    pub answer: String,
    pub citations: Vec<Citation>,
    pub usage: Usage,
    pub tool_calls: Vec<ToolActivity>,
    pub provider: String,
    pub model: String,
}

enum Resolved {
    Extractive,
    OpenAi(OpenAiConfig),
}

/// A chat that passed every check and is ready to answer.
pub struct Prepared {
    chat: Arc<Chat>,
    ctx: WorkspaceAccess,
    pub agent: Agent,
    /// The session to continue, or the id of the one to create (`new_session`).
    pub session_id: Option<String>,
    new_session: bool,
    history: Vec<Turn>,
    query: String,
    filters: Vec<Value>,
    extra_system: Option<String>,
    provider: Resolved,
}

impl Prepared {
    pub fn model_name(&self) -> String {
        match &self.provider {
            Resolved::Extractive => "extractive".into(),
            Resolved::OpenAi(c) => c.model.clone(),
        }
    }
}

fn resolve_provider(chat: &Chat, ctx: &WorkspaceAccess, agent: &Agent) -> Result<Resolved> {
    let org = match agent.provider.as_deref() {
        Some("extractive") => return Ok(Resolved::Extractive),
        Some(_) => Some(chat.keys.org_openai_provider(ctx.org_id())?.ok_or_else(|| {
            Error::invalid(
                "this agent uses the openai-compatible provider, but the organization has none configured (PUT /v1/orgs/{org}/providers/openai-compatible)",
            )
        })?),
        None => chat.keys.org_openai_provider(ctx.org_id())?,
    };
    Ok(match org {
        None => Resolved::Extractive,
        Some(mut cfg) => {
            if let Some(m) = &agent.model {
                cfg.model = m.clone();
            }
            cfg.temperature = agent.temperature;
            cfg.max_tokens = agent.max_tokens;
            Resolved::OpenAi(cfg)
        }
    })
}

fn cut_history(turns: Vec<Turn>, budget: u64) -> Vec<Turn> {
    let mut out = Vec::new();
    let mut used = 0;
    for t in turns.into_iter().rev() {
        let cost = estimate_tokens(&t.content) + 4;
        if used + cost > budget {
            break;
        }
        used += cost;
        out.push(t);
    }
    out.reverse();
    out
}

impl Chat {
    /// Checks a chat request and resolves its agent, session, history and provider. Blocking.
    pub fn prepare_chat(
        self: &Arc<Self>,
        ctx: &WorkspaceAccess,
        input: ChatInput,
    ) -> Result<Prepared> {
        ctx.require(Action::Chat)?;
        // Governance hook: the month's chat tokens not used up.
        self.governance.check_monthly(
            ctx.org_id(),
            Some(ctx.workspace_id()),
            crate::governance::monthly::Monthly::ChatTokens,
        )?;
        let query = input.query.trim().to_string();
        if query.is_empty() || query.chars().count() > MAX_QUERY_CHARS {
            return Err(Error::invalid(format!(
                "query must be 1 to {MAX_QUERY_CHARS} characters"
            )));
        }
        // The request's own filter; the context's is applied again at every retrieval.
        let filters: Vec<Value> = input.filter.into_iter().filter(|f| !f.is_null()).collect();
        retrieve::filters_of(ctx, &filters)?;
        let handle = self.store(ctx)?;
        let (agent, session_id, new_session, history) = {
            let conn = handle.conn();
            let session = match &input.history {
                History::Session(Some(id)) => Some(sessions::owned(&conn, ctx, id)?),
                _ => None,
            };
            let key = match (&input.agent, &session) {
                (Some(a), _) => a.clone(),
                (None, Some(s)) => s.agent_id.clone(),
                (None, None) => "default".to_string(),
            };
            let agent = agents::visible_agent(&conn, ctx, &key)?;
            match (session, input.history) {
                (Some(s), _) => {
                    if s.agent_id != agent.id {
                        return Err(Error::invalid("this session belongs to another agent"));
                    }
                    let h = sessions::history(&conn, &s.id, sessions::HISTORY_TOKENS)?;
                    (agent, Some(s.id), false, h)
                }
                (None, History::Given(turns)) => (
                    agent,
                    None,
                    false,
                    cut_history(turns, sessions::HISTORY_TOKENS),
                ),
                (None, History::Session(_)) => (
                    agent,
                    Some(crate::ids::new_id().to_string()),
                    true,
                    Vec::new(),
                ),
            }
        };
        let provider = resolve_provider(self, ctx, &agent)?;
        Ok(Prepared {
            chat: self.clone(),
            ctx: ctx.clone(),
            agent,
            session_id,
            new_session,
            history,
            query,
            filters,
            extra_system: input.extra_system,
            provider,
        })
    }
}

/// Citations collected while answering, numbered in the order passages were first shown.
#[derive(Default)]
struct Citations(Vec<Citation>);

impl Citations {
    fn add(&mut self, p: &Passage) -> usize {
        if let Some(c) = self.0.iter().find(|c| c.chunk_id == p.chunk_id) {
            return c.marker;
        }
        let marker = self.0.len() + 1;
        self.0.push(Citation {
            marker,
            chunk_id: p.chunk_id,
            document_id: p.document_id.clone(),
            title: p.title.clone(),
            heading_path: p.heading_path.clone(),
            snippet: snippet(&p.text, SNIPPET_CHARS),
        });
        marker
    }

    /// The citations the answer refers to by marker (`[n]`), or all when it names none.
    fn for_answer(self, answer: &str) -> Vec<Citation> {
        let cited: Vec<Citation> = self
            .0
            .iter()
            .filter(|c| answer.contains(&format!("[{}]", c.marker)))
            .cloned()
            .collect();
        if cited.is_empty() {
            self.0
        } else {
            cited
        }
    }
}

fn send(events: &Option<UnboundedSender<ChatEvent>>, e: ChatEvent) {
    if let Some(tx) = events {
        // A client that went away stops listening; the answer is still stored.
        let _ = tx.send(e);
    }
}

const INSTRUCTIONS: &str = "Answer from the knowledge base of this workspace. Cite the passages you use with their markers, like [1]. If the passages do not contain the answer, say so plainly.";

impl Prepared {
    /// Answers, reporting progress to `events`, and stores the exchange (for session chats).
    pub async fn run(self, events: Option<UnboundedSender<ChatEvent>>) -> Result<ChatAnswer> {
        let mut cites = Citations::default();
        let (answer, usage, activity) = match &self.provider {
            Resolved::Extractive => self.extractive(&events, &mut cites).await?,
            Resolved::OpenAi(cfg) => self.generate(cfg, &events, &mut cites).await?,
        };
        let citations = cites.for_answer(&answer);
        self.chat
            .governance
            .chat_tokens(&self.ctx, usage.prompt_tokens, usage.completion_tokens);
        let provider = match self.provider {
            Resolved::Extractive => "extractive",
            Resolved::OpenAi(_) => "openai-compatible",
        };
        let model = self.model_name();
        let mut message_id = None;
        if let Some(sid) = self.session_id.clone() {
            let chat = self.chat.clone();
            let ctx = self.ctx.clone();
            let (agent_id, query, new) =
                (self.agent.id.clone(), self.query.clone(), self.new_session);
            let (a, c, u, m) = (answer.clone(), citations.clone(), usage, model.clone());
            let tools_json = serde_json::to_value(&activity).unwrap_or(Value::Null);
            message_id = Some(
                blocking(move || {
                    let handle = chat.store(&ctx)?;
                    let mut conn = handle.conn();
                    if new {
                        sessions::create(&conn, &ctx, &sid, &agent_id, &query)?;
                    }
                    sessions::append(
                        &mut conn,
                        &sid,
                        &sessions::Exchange {
                            question: &query,
                            answer: &a,
                            citations: &c,
                            tool_calls: &tools_json,
                            usage: &u,
                            provider,
                            model: &m,
                        },
                    )
                })
                .await?,
            );
        }
        Ok(ChatAnswer {
            agent_id: self.agent.id.clone(),
            session_id: self.session_id.clone(),
            message_id,
            answer,
            citations,
            usage,
            tool_calls: activity,
            provider: provider.into(),
            model,
        })
    }

    async fn retrieve(&self, limit: usize) -> Result<Vec<Passage>> {
        let (chat, ctx, q, f) = (
            self.chat.clone(),
            self.ctx.clone(),
            self.query.clone(),
            self.filters.clone(),
        );
        blocking(move || retrieve::search_message(&chat, &ctx, &q, Mode::Hybrid, limit, &f)).await
    }

    async fn extractive(
        &self,
        events: &Option<UnboundedSender<ChatEvent>>,
        cites: &mut Citations,
    ) -> Result<(String, Usage, Vec<ToolActivity>)> {
        let passages = self.retrieve(EXTRACTIVE_PASSAGES).await?;
        let mut parts = Vec::new();
        if passages.is_empty() {
            parts.push(format!(
                "{EXTRACTIVE_NOTICE} no passage of this workspace's knowledge base matches the question."
            ));
        } else {
            parts.push(format!(
                "{EXTRACTIVE_NOTICE} the most relevant passages from the knowledge base.\n\n"
            ));
            for p in &passages {
                let n = cites.add(p);
                let title = if p.title.is_empty() {
                    "Untitled"
                } else {
                    &p.title
                };
                let heading = if p.heading_path.is_empty() {
                    String::new()
                } else {
                    format!(" › {}", p.heading_path)
                };
                parts.push(format!(
                    "[{n}] {title}{heading}: {}\n\n",
                    snippet(&p.text, 600)
                ));
            }
        }
        let answer: String = parts.concat().trim_end().to_string();
        for p in &parts {
            send(events, ChatEvent::Delta(p.clone()));
        }
        let prompt = estimate_tokens(&self.query);
        let completion = estimate_tokens(&answer);
        Ok((
            answer,
            Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt + completion,
            },
            Vec::new(),
        ))
    }

    async fn generate(
        &self,
        cfg: &OpenAiConfig,
        events: &Option<UnboundedSender<ChatEvent>>,
        cites: &mut Citations,
    ) -> Result<(String, Usage, Vec<ToolActivity>)> {
        let tools: Vec<Tool> = self.agent.tools();
        let system = self.system_prompt(tools.is_empty(), cites).await?;
        let mut messages = self.opening_messages(system);
        let specs: Vec<Value> = tools.iter().map(|t| t.openai_spec()).collect();
        let mut usage = Usage::default();
        let mut reported = false;
        let mut answer = String::new();
        let mut activity = Vec::new();
        let tx = events.clone();
        let on_delta = move |t: &str| send(&tx, ChatEvent::Delta(t.to_string()));
        let on_delta: Option<&(dyn Fn(&str) + Send + Sync)> = if events.is_some() {
            Some(&on_delta)
        } else {
            None
        };
        for round in 0..=MAX_TOOL_ROUNDS {
            let offer = !tools.is_empty() && round < MAX_TOOL_ROUNDS;
            let choice = tool_choice(!tools.is_empty(), offer);
            let c = provider::complete(&self.chat.state, cfg, &messages, &specs, choice, on_delta)
                .await?;
            reported |= c.usage.is_some();
            usage.add(round_usage(c.usage, &messages, &c.content));
            answer.push_str(&c.content);
            if !offer || c.tool_calls.is_empty() {
                break;
            }
            let calls: Vec<_> = c.tool_calls.into_iter().take(MAX_CALLS_PER_ROUND).collect();
            messages.push(assistant_calls(&c.content, &calls));
            for call in calls {
                let (content, act) = self
                    .run_tool(&tools, &call.name, &call.arguments, cites)
                    .await;
                send(events, ChatEvent::Tool(act.clone()));
                activity.push(act);
                messages.push(json!({
                    "role": "tool",
                    "tool_call_id": call.id,
                    "content": content.to_string(),
                }));
            }
        }
        if !reported {
            tracing::debug!("the provider reported no usage; estimated");
        }
        Ok((answer, usage, activity))
    }

    /// The system message: the agent's prompt, the instructions, the request's own system
    /// text, then the best passages (an agent without tools) or how to use the tools.
    async fn system_prompt(&self, with_passages: bool, cites: &mut Citations) -> Result<String> {
        let mut system = String::new();
        if !self.agent.system_prompt.trim().is_empty() {
            system.push_str(self.agent.system_prompt.trim());
            system.push_str("\n\n");
        }
        system.push_str(INSTRUCTIONS);
        if let Some(extra) = self
            .extra_system
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            system.push_str("\n\n");
            system.push_str(extra.trim());
        }
        if with_passages {
            let passages = self.retrieve(CONTEXT_PASSAGES).await?;
            system.push_str("\n\nPassages from the knowledge base:\n");
            if passages.is_empty() {
                system.push_str("(none match the question)\n");
            }
            for p in &passages {
                let n = cites.add(p);
                system.push_str(&format!(
                    "\n[{n}] {}: {}\n",
                    p.title,
                    snippet(&p.text, 1_500)
                ));
            }
        } else {
            system.push_str(
                "\n\nUse the tools to look things up in the knowledge base before answering; their results carry citation markers.",
            );
        }
        Ok(system)
    }

    /// The conversation the model first sees: the system message, the history, the question.
    fn opening_messages(&self, system: String) -> Vec<Value> {
        let mut messages = vec![json!({"role": "system", "content": system})];
        for t in &self.history {
            messages.push(json!({"role": t.role, "content": t.content}));
        }
        messages.push(json!({"role": "user", "content": self.query}));
        messages
    }

    /// Runs one tool call of the model; failures become an error result the model can read.
    async fn run_tool(
        &self,
        enabled: &[Tool],
        name: &str,
        arguments: &str,
        cites: &mut Citations,
    ) -> (Value, ToolActivity) {
        let args: Value = serde_json::from_str(arguments).unwrap_or(Value::Null);
        let mut act = ToolActivity {
            name: name.to_string(),
            arguments: args.clone(),
            results: 0,
            error: None,
        };
        let Some(tool) = Tool::parse(name).filter(|t| enabled.contains(t)) else {
            let msg = format!("no tool named {name:?} is enabled for this agent");
            act.error = Some(msg.clone());
            return (json!({"error": msg}), act);
        };
        let (chat, ctx, f) = (self.chat.clone(), self.ctx.clone(), self.filters.clone());
        let a = args.clone();
        match blocking(move || tools::run(&chat, &ctx, tool, &a, &f)).await {
            Ok(mut out) => {
                if let Some(results) = out.content.get_mut("results").and_then(Value::as_array_mut)
                {
                    for (r, p) in results.iter_mut().zip(&out.passages) {
                        r["marker"] = json!(cites.add(p));
                    }
                    act.results = results.len();
                } else {
                    act.results = 1;
                }
                (out.content, act)
            }
            Err(e) => {
                let msg = match &e {
                    Error::Invalid(m) => m.clone(),
                    Error::NotFound(what) => format!("{what} not found"),
                    _ => "the tool failed".to_string(),
                };
                if !matches!(e, Error::Invalid(_) | Error::NotFound(_)) {
                    tracing::warn!(tool = name, error = %e, "tool failed");
                }
                act.error = Some(msg.clone());
                (json!({"error": msg}), act)
            }
        }
    }
}

/// The `tool_choice` of a round: none without tools; `auto` while tools are offered; `none`
/// in the last round, which must answer.
fn tool_choice(has_tools: bool, offer: bool) -> Option<&'static str> {
    match (has_tools, offer) {
        (false, _) => None,
        (true, true) => Some("auto"),
        (true, false) => Some("none"),
    }
}

/// A round's usage: what the provider reported, else estimated from the messages sent and
/// the content received.
fn round_usage(reported: Option<ProviderUsage>, sent: &[Value], content: &str) -> ProviderUsage {
    reported.unwrap_or_else(|| ProviderUsage {
        prompt_tokens: sent.iter().map(|m| estimate_tokens(&m.to_string())).sum(),
        completion_tokens: estimate_tokens(content),
    })
}

/// The assistant message that asked for `calls` (kept in the conversation for the next round).
fn assistant_calls(content: &str, calls: &[provider::ToolCall]) -> Value {
    json!({
        "role": "assistant",
        "content": if content.is_empty() { Value::Null } else { json!(content) },
        "tool_calls": calls.iter().map(|call| json!({
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        })).collect::<Vec<_>>(),
    })
}
