//! Agents and chat: agents (behaviour configurations in the workspace database), chat sessions
//! and messages, model providers resolved per org at request time (`extractive`, or an
//! OpenAI-compatible endpoint with the org's own sealed key), the tools the model may call, the
//! chat engine (retrieval, tool loop, citations, streaming events), and the MCP server's
//! domain side. HTTP lives in `http::{chat, openai, mcp, providers}`; nothing here knows axum.
//!
//! Every function takes the verified tenant context, checks its action (`ctx.require`) ([`WorkspaceAccess`] or [`OrgAccess`]):
//! the workspace and org come from it, never from a request body, so one org's agents,
//! sessions and provider keys cannot serve another org's request.
//!
//! [`WorkspaceAccess`]: crate::identity::WorkspaceAccess
//! [`OrgAccess`]: crate::identity::OrgAccess

pub mod agents;
pub mod engine;
pub mod mcp;
pub mod provider;
pub mod providers;
pub mod retrieve;
pub mod sessions;
pub mod tools;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Config;
use crate::control::ControlPlane;
use crate::error::{Error, Result};
use crate::governance::Governance;
use crate::identity::WorkspaceAccess;
use crate::workspace::{Handle, Registry};

pub use agents::{Agent, AgentPatch, NewAgent};
pub use engine::{
    ChatAnswer, ChatEvent, ChatInput, Citation, History, Prepared, ToolActivity, Turn, Usage,
};
pub use providers::ProviderKeys;
pub use retrieve::Retriever;
pub use sessions::{Message, Session};

/// The chat service: agents, sessions, the chat engine, the org's providers and MCP. Private
/// fields: reach it through `App::chat`. It reads the workspace's knowledge only through its
/// [`Retriever`] (implemented by `knowledge::Knowledge`, in `retrieve.rs`).
pub struct Chat {
    registry: Registry,
    state: ChatState,
    keys: Arc<ProviderKeys>,
    retriever: Arc<dyn Retriever>,
    /// Usage metering: chat tokens.
    governance: Arc<Governance>,
}

impl Chat {
    pub fn new(
        config: &Config,
        registry: Registry,
        keys: Arc<ProviderKeys>,
        retriever: Arc<dyn Retriever>,
        governance: Arc<Governance>,
    ) -> Result<Chat> {
        Ok(Chat {
            registry,
            state: ChatState::new(config)?,
            keys,
            retriever,
            governance,
        })
    }

    /// The control plane (providers' rows), through the provider keys that own them.
    fn control(&self) -> &ControlPlane {
        self.keys.control()
    }

    /// The store of the context's workspace. The context decided that it exists; a workspace
    /// deleted since is `NotFound` (the registry never reopens a removed store).
    fn store(&self, ctx: &WorkspaceAccess) -> Result<Handle> {
        self.registry.get(ctx.workspace_id())
    }
}

/// The chat subsystem's shared state: one HTTP client for providers, their timeout and retry
/// policy, and the MCP sessions.
pub struct ChatState {
    pub http: reqwest::Client,
    pub timeout: Duration,
    pub retries: u32,
    /// Base delay of the exponential backoff between provider retries.
    pub backoff: Duration,
    pub(crate) mcp_sessions: Mutex<lru::LruCache<String, mcp::McpSession>>,
}

/// Most MCP sessions remembered at once (least recently used are forgotten; their clients
/// get `404` and initialize again, as the transport specifies).
const MCP_SESSIONS: usize = 10_000;

impl ChatState {
    pub fn new(config: &Config) -> Result<ChatState> {
        let timeout = Duration::from_secs(config.provider_timeout_secs.max(1));
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("enclave/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::internal(format!("HTTP client: {e}")))?;
        let cap = std::num::NonZeroUsize::new(MCP_SESSIONS)
            .ok_or_else(|| Error::internal("MCP session capacity"))?;
        Ok(ChatState {
            http,
            timeout,
            retries: config.provider_retries,
            backoff: Duration::from_millis(200),
            mcp_sessions: Mutex::new(lru::LruCache::new(cap)),
        })
    }
}

pub(crate) use crate::task::blocking;

pub use crate::governance::usage::estimate_tokens;

/// `text` cut to at most `max` characters at a word boundary, with `…` when cut.
pub fn snippet(text: &str, max: usize) -> String {
    let t = text.trim();
    if t.chars().count() <= max {
        return t.to_string();
    }
    let cut: String = t.chars().take(max).collect();
    let end = cut.rfind(char::is_whitespace).unwrap_or(cut.len());
    format!("{}…", cut[..end].trim_end())
}
