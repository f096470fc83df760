//! Chat sessions and their messages, in the workspace database. A session belongs to the
//! principal that started it (`owner`): a user, an API key, a tenant token (its `jti`; or, when
//! the token names a `subject`, that end user of its key, so tokens minted for the same subject
//! share sessions), or the operator. Only its owner, and whoever holds `SessionsReadAll` (org
//! admins, `manage` keys, the operator), reach it; to anyone else it does not exist.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use serde_json::Value;

use super::engine::{Citation, Turn, Usage};
use super::Chat;
use crate::control::Page;
use crate::error::{Error, Resource, Result};
use crate::identity::{Action, Principal, WorkspaceAccess};

/// How much history (estimated tokens) goes into a prompt, newest first.
pub const HISTORY_TOKENS: u64 = 3_000;
/// Most messages considered for history.
const HISTORY_MESSAGES: u32 = 40;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Session {
    pub id: String,
    pub agent_id: String,
    pub title: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip)]
    pub owner: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Message {
    pub id: i64,
    pub session_id: String,
    pub role: String,
    pub content: String,
    pub citations: Value,
    pub tool_calls: Value,
    pub usage: Option<Value>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub created_at: String,
}

/// The owner key of sessions (chat and MCP) started by `principal`. A tenant token without a
/// subject (or with an empty one) owns its sessions alone: another token of the same key, with
/// another filter, must not continue them. `token:<key>:<subject>` is the format of the sessions
/// of an end user; `token-jti:<key>:<jti>` (another prefix, so no subject can spell it) those of
/// one token. Sessions stored as `token:<key>:` by older versions (tokens without a subject, which
/// were shared) are no token's any more; admins still read them.
pub fn owner_of(principal: &Principal) -> String {
    match principal {
        Principal::Operator => "operator".into(),
        Principal::User { user_id, .. } => format!("user:{user_id}"),
        Principal::ApiKey { key_id, .. } => format!("key:{key_id}"),
        Principal::TenantToken {
            key_id,
            subject: Some(subject),
            ..
        } if !subject.is_empty() => format!("token:{key_id}:{subject}"),
        Principal::TenantToken {
            key_id, token_id, ..
        } => format!("token-jti:{key_id}:{token_id}"),
    }
}

fn may_read(session: &Session, ctx: &WorkspaceAccess) -> bool {
    session.owner == owner_of(ctx.principal()) || ctx.require(Action::SessionsReadAll).is_ok()
}

/// The columns [`Session::from_row`] reads, by name.
const SELECT: &str = "SELECT id, agent_id, title, created_at, updated_at, owner FROM chat_sessions";

impl Session {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get("id")?,
            agent_id: r.get("agent_id")?,
            title: r.get("title")?,
            created_at: r.get("created_at")?,
            updated_at: r.get("updated_at")?,
            owner: r.get("owner")?,
        })
    }
}

/// A session the context may read; `NotFound` otherwise.
pub fn readable(conn: &Connection, ctx: &WorkspaceAccess, id: &str) -> Result<Session> {
    if id.is_empty() || id.len() > 100 {
        return Err(Error::NotFound(Resource::Session));
    }
    conn.query_row(&format!("{SELECT} WHERE id = ?1"), [id], Session::from_row)
        .optional()?
        .filter(|s| may_read(s, ctx))
        .ok_or(Error::NotFound(Resource::Session))
}

/// A session the context may continue (its own only, whatever its role).
pub fn owned(conn: &Connection, ctx: &WorkspaceAccess, id: &str) -> Result<Session> {
    let s = readable(conn, ctx, id)?;
    if s.owner != owner_of(ctx.principal()) {
        return Err(Error::forbidden("only the session's owner may continue it"));
    }
    Ok(s)
}

/// Creates a session with the id given (chosen before the first answer, so a stream can name
/// it at once).
pub fn create(
    conn: &Connection,
    ctx: &WorkspaceAccess,
    id: &str,
    agent_id: &str,
    title: &str,
) -> Result<Session> {
    let now = crate::db::now();
    let title = super::snippet(title, 80);
    conn.execute(
        "INSERT INTO chat_sessions (id, agent_id, owner, title, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![id, agent_id, owner_of(ctx.principal()), title, now],
    )?;
    conn.query_row(&format!("{SELECT} WHERE id = ?1"), [id], Session::from_row)
        .map_err(Error::from)
}

/// The columns [`RawMessage::from_row`] reads, by name.
const MSG_SELECT: &str = "SELECT id, session_id, role, content, citations, tool_calls, usage,
    provider, model, created_at FROM chat_messages";

/// A message row as stored: its JSON columns unparsed until [`RawMessage::finish`].
struct RawMessage {
    message: Message,
    citations: String,
    tool_calls: String,
    usage: Option<String>,
}

impl RawMessage {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            message: Message {
                id: r.get("id")?,
                session_id: r.get("session_id")?,
                role: r.get("role")?,
                content: r.get("content")?,
                citations: Value::Null,
                tool_calls: Value::Null,
                usage: None,
                provider: r.get("provider")?,
                model: r.get("model")?,
                created_at: r.get("created_at")?,
            },
            citations: r.get("citations")?,
            tool_calls: r.get("tool_calls")?,
            usage: r.get("usage")?,
        })
    }

    fn finish(self) -> Result<Message> {
        let mut m = self.message;
        m.citations = crate::db::json_column(&self.citations)?;
        m.tool_calls = crate::db::json_column(&self.tool_calls)?;
        m.usage = self.usage.map(|u| crate::db::json_column(&u)).transpose()?;
        Ok(m)
    }
}

pub fn messages(conn: &Connection, session_id: &str, page: Page) -> Result<Vec<Message>> {
    let mut stmt = conn.prepare_cached(&format!(
        "{MSG_SELECT} WHERE session_id = ?1 ORDER BY id LIMIT ?2 OFFSET ?3"
    ))?;
    let rows = stmt.query_map(
        params![session_id, page.limit, page.offset],
        RawMessage::from_row,
    )?;
    rows.map(|r| r?.finish()).collect()
}

/// The newest turns of a session that fit in `budget` estimated tokens, oldest first.
pub fn history(conn: &Connection, session_id: &str, budget: u64) -> Result<Vec<Turn>> {
    let mut stmt = conn.prepare_cached(
        "SELECT role, content FROM chat_messages WHERE session_id = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![session_id, HISTORY_MESSAGES], |r| {
        Ok(Turn {
            role: r.get("role")?,
            content: r.get("content")?,
        })
    })?;
    let mut out = Vec::new();
    let mut used = 0;
    for t in rows {
        let t = t?;
        let cost = super::estimate_tokens(&t.content) + 4;
        if used + cost > budget {
            break;
        }
        used += cost;
        out.push(t);
    }
    out.reverse();
    // A history never starts with an answer whose question was cut off.
    while out.first().is_some_and(|t| t.role != "user") {
        out.remove(0);
    }
    Ok(out)
}

/// What one exchange stores: the question and the answer with its citations, tools and usage.
pub struct Exchange<'a> {
    pub question: &'a str,
    pub answer: &'a str,
    pub citations: &'a [Citation],
    pub tool_calls: &'a Value,
    pub usage: &'a Usage,
    pub provider: &'a str,
    pub model: &'a str,
}

/// Stores an exchange in one transaction; returns the answer's message id.
pub fn append(conn: &mut Connection, session_id: &str, ex: &Exchange<'_>) -> Result<i64> {
    let tx = conn.transaction()?;
    let now = crate::db::now();
    tx.execute(
        "INSERT INTO chat_messages (session_id, role, content, created_at) VALUES (?1, 'user', ?2, ?3)",
        params![session_id, ex.question, now],
    )?;
    tx.execute(
        "INSERT INTO chat_messages (session_id, role, content, citations, tool_calls, usage,
             provider, model, created_at)
         VALUES (?1, 'assistant', ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            session_id,
            ex.answer,
            to_json(ex.citations)?,
            to_json(ex.tool_calls)?,
            to_json(ex.usage)?,
            ex.provider,
            ex.model,
            now
        ],
    )?;
    let id = tx.last_insert_rowid();
    tx.execute(
        "UPDATE chat_sessions SET updated_at = ?2 WHERE id = ?1",
        params![session_id, now],
    )?;
    tx.commit()?;
    Ok(id)
}

fn to_json<T: Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::internal(e.to_string()))
}

impl Chat {
    /// The sessions the context may read, newest first.
    pub fn list_sessions(&self, ctx: &WorkspaceAccess, page: Page) -> Result<Vec<Session>> {
        ctx.require(Action::SessionsRead)?;
        let handle = self.store(ctx)?;
        let conn = handle.conn();
        let all = ctx.require(Action::SessionsReadAll).is_ok();
        let owner = owner_of(ctx.principal());
        let mut stmt = conn.prepare_cached(&format!(
            "{SELECT} WHERE (?1 OR owner = ?2) ORDER BY updated_at DESC, id DESC LIMIT ?3 OFFSET ?4"
        ))?;
        let rows = stmt.query_map(
            params![all, owner, page.limit, page.offset],
            Session::from_row,
        )?;
        rows.collect::<rusqlite::Result<_>>().map_err(Error::from)
    }

    pub fn session_messages(
        &self,
        ctx: &WorkspaceAccess,
        id: &str,
        page: Page,
    ) -> Result<Vec<Message>> {
        ctx.require(Action::SessionsRead)?;
        let handle = self.store(ctx)?;
        let conn = handle.conn();
        let s = readable(&conn, ctx, id)?;
        messages(&conn, &s.id, page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Scopes;
    use uuid::Uuid;

    fn token(key: Uuid, jti: &str, subject: Option<&str>) -> Principal {
        Principal::TenantToken {
            key_id: key,
            org_id: Uuid::nil(),
            workspace_id: Uuid::nil(),
            scopes: Scopes::TENANT_TOKEN_MAX,
            filter: None,
            subject: subject.map(str::to_string),
            token_id: jti.to_string(),
        }
    }

    #[test]
    fn tenant_tokens_share_sessions_only_through_an_explicit_subject() {
        let key = crate::ids::new_id();
        let other_key = crate::ids::new_id();
        let o = |jti, sub| owner_of(&token(key, jti, sub));
        // Without a subject (or with an empty one), each token owns its sessions alone.
        assert_ne!(o("a", None), o("b", None));
        assert_ne!(o("a", Some("")), o("b", Some("")));
        assert_ne!(o("a", Some("")), o("b", None));
        assert_eq!(o("a", None), o("a", Some("")));
        // The same subject of the same key is one end user; another subject is another.
        assert_eq!(o("a", Some("u1")), o("b", Some("u1")));
        assert_ne!(o("a", Some("u1")), o("a", Some("u2")));
        assert_ne!(
            o("a", Some("u1")),
            owner_of(&token(other_key, "a", Some("u1")))
        );
        // No subject spells a token's own owner key.
        let own = o("a", None);
        let spelled = own.split_once(':').map(|x| x.1).unwrap_or_default();
        assert_ne!(o("b", Some(spelled)), own);
        assert_ne!(o("b", Some(&format!("{key}:a"))), own);
    }
}
