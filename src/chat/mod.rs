//! Agents and chat: agents (behaviour configurations in the workspace database), chat sessions
//! and messages, model providers resolved per org at request time (`extractive`, or an
//! OpenAI-compatible endpoint with the org's own sealed key), the tools the model may call, the
//! chat engine (retrieval, tool loop, citations, streaming events), and the MCP server's
//! domain side. HTTP lives in `http::{chat, openai, mcp, providers}`; nothing here knows axum.
//!
//! Every function takes the verified tenant context ([`WorkspaceAccess`] or [`OrgAccess`]):
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

use std::sync::Mutex;
use std::time::Duration;

use crate::config::Config;
use crate::crypto::{MasterKey, MasterKeySource};
use crate::error::{Error, Result};

pub use agents::{Agent, AgentPatch, NewAgent};
pub use engine::{
    ChatAnswer, ChatEvent, ChatInput, Citation, History, Prepared, ToolActivity, Turn, Usage,
};
pub use sessions::{Message, Session};

/// The chat subsystem's shared state: the master key that opens provider keys, one HTTP client
/// for providers, their timeout and retry policy, and the MCP sessions.
pub struct ChatState {
    pub master_key: MasterKey,
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
    pub fn new(config: &Config) -> Result<(ChatState, MasterKeySource)> {
        let (master_key, source) = MasterKey::load(
            config.master_key.as_deref(),
            config.master_key_file.as_deref(),
            &config.data_dir,
        )?;
        let timeout = Duration::from_secs(config.provider_timeout_secs.max(1));
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("enclave/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::internal(format!("HTTP client: {e}")))?;
        let cap = std::num::NonZeroUsize::new(MCP_SESSIONS)
            .ok_or_else(|| Error::internal("MCP session capacity"))?;
        Ok((
            ChatState {
                master_key,
                http,
                timeout,
                retries: config.provider_retries,
                backoff: Duration::from_millis(200),
                mcp_sessions: Mutex::new(lru::LruCache::new(cap)),
            },
            source,
        ))
    }
}

pub(crate) use crate::task::blocking;

/// Rough token count (about four characters per token), for budgets and for usage when a
/// provider reports none.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

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
