//! Agents: behaviour configurations stored in the workspace database. Access rules, expressed
//! through the permission table: reading needs `AgentsRead`; a private agent is visible only to
//! its owner and to whoever holds `AgentsAdmin` (org admins, `manage` keys, the operator);
//! editing and deleting need `AgentsManage` and either ownership or `AgentsAdmin`. An agent that
//! is not visible is `404`, as if it did not exist.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Deserializer, Serialize};

use super::tools::Tool;
use super::Chat;
use crate::control::Page;
use crate::error::{Error, Resource, Result};
use crate::identity::{Action, WorkspaceAccess};

/// Providers an agent may name. `None` (unset) means the org's provider when it has one,
/// else extractive.
pub const PROVIDERS: [&str; 2] = ["extractive", "openai-compatible"];
pub const MAX_PROMPT_CHARS: usize = 20_000;
pub const MAX_TOKENS_LIMIT: i64 = 32_768;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Agent {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub description: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub system_prompt: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<i64>,
    pub tools: Vec<String>,
    pub public: bool,
    pub owner_id: Option<String>,
    pub is_default: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl Agent {
    pub fn tools(&self) -> Vec<Tool> {
        self.tools.iter().filter_map(|t| Tool::parse(t)).collect()
    }
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    pub name: String,
    pub slug: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub system_prompt: Option<String>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub tools: Option<Vec<String>>,
    #[serde(default)]
    pub public: Option<bool>,
}

/// A partial update. For the nullable settings, `null` clears and absence keeps.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentPatch {
    pub name: Option<String>,
    pub slug: Option<String>,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub system_prompt: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub provider: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub model: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub temperature: Option<Option<f64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub max_tokens: Option<Option<i64>>,
    pub tools: Option<Vec<String>>,
    pub public: Option<bool>,
}

fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn check_kind(kind: &str) -> Result<String> {
    let k = kind.trim();
    let ok = !k.is_empty()
        && k.len() <= 64
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        return Err(Error::invalid(
            "type must be 1 to 64 characters of a-z, 0-9, '-' and '_' (e.g. \"assistant\")",
        ));
    }
    Ok(k.to_string())
}

fn check_text(field: &str, v: &str, max: usize) -> Result<String> {
    if v.chars().count() > max {
        return Err(Error::invalid(format!(
            "{field} must be at most {max} characters"
        )));
    }
    Ok(v.to_string())
}

fn check_provider(p: Option<String>) -> Result<Option<String>> {
    match p {
        None => Ok(None),
        Some(p) if PROVIDERS.contains(&p.as_str()) => Ok(Some(p)),
        Some(p) => Err(Error::invalid(format!(
            "unknown provider {p:?} (extractive, openai-compatible, or null for the org's default)"
        ))),
    }
}

fn check_model(m: Option<String>) -> Result<Option<String>> {
    match m {
        Some(m) if m.trim().is_empty() || m.len() > 200 || m.chars().any(char::is_control) => Err(
            Error::invalid("model must be 1 to 200 characters without control characters"),
        ),
        other => Ok(other),
    }
}

fn check_temperature(t: Option<f64>) -> Result<Option<f64>> {
    match t {
        Some(t) if !(0.0..=2.0).contains(&t) => {
            Err(Error::invalid("temperature must be between 0 and 2"))
        }
        other => Ok(other),
    }
}

fn check_max_tokens(t: Option<i64>) -> Result<Option<i64>> {
    match t {
        Some(t) if !(1..=MAX_TOKENS_LIMIT).contains(&t) => Err(Error::invalid(format!(
            "max_tokens must be between 1 and {MAX_TOKENS_LIMIT}"
        ))),
        other => Ok(other),
    }
}

fn check_tools(tools: Vec<String>) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for t in tools {
        let tool = Tool::parse(&t).ok_or_else(|| {
            Error::invalid(format!(
                "unknown tool {t:?} (search, fulltext_search, vector_search, get_document)"
            ))
        })?;
        let name = tool.name().to_string();
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// The columns [`RawAgent::from_row`] reads, by name.
const SELECT: &str = "SELECT id, slug, name, description, type, system_prompt, provider, model,
    temperature, max_tokens, tools, public, owner_id, is_default, created_at, updated_at
    FROM agents";

/// An agent row as stored: every column but `tools` (a JSON list), which
/// [`RawAgent::finish`] parses.
struct RawAgent {
    agent: Agent,
    tools: String,
}

impl RawAgent {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            agent: Agent {
                id: r.get("id")?,
                slug: r.get("slug")?,
                name: r.get("name")?,
                description: r.get("description")?,
                kind: r.get("type")?,
                system_prompt: r.get("system_prompt")?,
                provider: r.get("provider")?,
                model: r.get("model")?,
                temperature: r.get("temperature")?,
                max_tokens: r.get("max_tokens")?,
                tools: Vec::new(),
                public: r.get("public")?,
                owner_id: r.get("owner_id")?,
                is_default: r.get("is_default")?,
                created_at: r.get("created_at")?,
                updated_at: r.get("updated_at")?,
            },
            tools: r.get("tools")?,
        })
    }

    fn finish(self) -> Result<Agent> {
        let mut a = self.agent;
        a.tools = serde_json::from_str(&self.tools)
            .map_err(|e| Error::internal(format!("corrupt agent tools: {e}")))?;
        Ok(a)
    }
}

/// A live agent by id or slug. A key that parses as an id (in any form the id parser accepts)
/// is looked up by id only, never by slug: no slug can stand in for another agent's id.
pub fn find(conn: &Connection, key: &str) -> Result<Option<Agent>> {
    let r = match crate::ids::parse_uuid(key, "agent") {
        Ok(id) => conn
            .query_row(
                &format!("{SELECT} WHERE id = ?1 AND deleted_at IS NULL"),
                [id.hyphenated().to_string()],
                RawAgent::from_row,
            )
            .optional()?,
        Err(_) => conn
            .query_row(
                &format!("{SELECT} WHERE slug = ?1 AND deleted_at IS NULL"),
                [key],
                RawAgent::from_row,
            )
            .optional()?,
    };
    r.map(RawAgent::finish).transpose()
}

pub fn list(conn: &Connection) -> Result<Vec<Agent>> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT} WHERE deleted_at IS NULL ORDER BY is_default DESC, created_at, id"
    ))?;
    let rows = stmt.query_map([], RawAgent::from_row)?;
    rows.map(|r| r?.finish()).collect()
}

fn slug_conflict(slug: &str) -> Error {
    Error::Conflict(format!(
        "an agent with slug {slug:?} already exists in this workspace"
    ))
}

/// Whether the context may see `agent`.
pub fn visible(agent: &Agent, ctx: &WorkspaceAccess) -> bool {
    agent.public || ctx.require(Action::AgentsAdmin).is_ok() || is_owner(agent, ctx)
}

fn is_owner(agent: &Agent, ctx: &WorkspaceAccess) -> bool {
    match (&agent.owner_id, ctx.principal().user_id()) {
        (Some(owner), Some(user)) => *owner == user.to_string(),
        _ => false,
    }
}

/// `Forbidden` unless the context may edit or delete `agent` (which it can see).
fn require_editor(agent: &Agent, ctx: &WorkspaceAccess) -> Result<()> {
    ctx.require(Action::AgentsManage)?;
    if is_owner(agent, ctx) || ctx.require(Action::AgentsAdmin).is_ok() {
        Ok(())
    } else {
        Err(Error::forbidden(
            "only the agent's owner or an org admin may change or delete it",
        ))
    }
}

/// A live agent the context can see, by id or slug; `NotFound` otherwise.
pub fn visible_agent(conn: &Connection, ctx: &WorkspaceAccess, key: &str) -> Result<Agent> {
    if key.is_empty() || key.len() > 100 {
        return Err(Error::NotFound(Resource::Agent));
    }
    find(conn, key)?
        .filter(|a| visible(a, ctx))
        .ok_or(Error::NotFound(Resource::Agent))
}

impl Chat {
    /// The agents the context may see (`AgentsRead`).
    pub fn list_agents(&self, ctx: &WorkspaceAccess, page: Page) -> Result<Vec<Agent>> {
        ctx.require(Action::AgentsRead)?;
        let handle = self.store(ctx)?;
        let all = list(&handle.conn())?;
        Ok(all
            .into_iter()
            .filter(|a| visible(a, ctx))
            .skip(page.offset as usize)
            .take(page.limit as usize)
            .collect())
    }

    /// An agent the context may see (`AgentsRead`), by id or slug.
    pub fn get_agent(&self, ctx: &WorkspaceAccess, key: &str) -> Result<Agent> {
        ctx.require(Action::AgentsRead)?;
        let handle = self.store(ctx)?;
        let conn = handle.conn();
        visible_agent(&conn, ctx, key)
    }

    /// Creates an agent owned by the calling user (no owner for the operator and API keys).
    pub fn create_agent(&self, ctx: &WorkspaceAccess, new: NewAgent) -> Result<Agent> {
        ctx.require(Action::AgentsManage)?;
        let name = crate::ids::validate_name(&new.name)?;
        let slug = match new.slug {
            Some(s) => {
                crate::ids::validate_slug(&s)?;
                s
            }
            None => {
                let s = crate::ids::slugify(&name);
                if s.is_empty() {
                    return Err(Error::invalid("name gives no slug: pass a slug"));
                }
                s
            }
        };
        let kind = check_kind(new.kind.as_deref().unwrap_or("assistant"))?;
        let description = check_text(
            "description",
            new.description.as_deref().unwrap_or(""),
            2000,
        )?;
        let prompt = check_text(
            "system_prompt",
            new.system_prompt.as_deref().unwrap_or(""),
            MAX_PROMPT_CHARS,
        )?;
        let provider = check_provider(new.provider)?;
        let model = check_model(new.model)?;
        let temperature = check_temperature(new.temperature)?;
        let max_tokens = check_max_tokens(new.max_tokens)?;
        let tools = check_tools(
            new.tools
                .unwrap_or_else(|| vec!["search".into(), "get_document".into()]),
        )?;
        let tools_json =
            serde_json::to_string(&tools).map_err(|e| Error::internal(e.to_string()))?;
        let id = crate::ids::new_id().to_string();
        let owner = ctx.principal().user_id().map(|u| u.to_string());
        let now = crate::db::now();
        let handle = self.store(ctx)?;
        let conn = handle.conn();
        let res = conn.execute(
            "INSERT INTO agents (id, slug, name, description, type, system_prompt, provider, model,
                 temperature, max_tokens, tools, public, owner_id, is_default, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 0, ?14, ?14)",
            params![
                id,
                slug,
                name,
                description,
                kind,
                prompt,
                provider,
                model,
                temperature,
                max_tokens,
                tools_json,
                new.public.unwrap_or(true),
                owner,
                now
            ],
        );
        match res {
            Ok(_) => {}
            Err(e) if Error::is_unique_violation(&e) => return Err(slug_conflict(&slug)),
            Err(e) => return Err(e.into()),
        }
        find(&conn, &id)?.ok_or(Error::NotFound(Resource::Agent))
    }

    pub fn update_agent(
        &self,
        ctx: &WorkspaceAccess,
        key: &str,
        patch: AgentPatch,
    ) -> Result<Agent> {
        ctx.require(Action::AgentsManage)?;
        let handle = self.store(ctx)?;
        let conn = handle.conn();
        let mut a = visible_agent(&conn, ctx, key)?;
        require_editor(&a, ctx)?;
        if let Some(n) = patch.name {
            a.name = crate::ids::validate_name(&n)?;
        }
        if let Some(s) = patch.slug {
            crate::ids::validate_slug(&s)?;
            if a.is_default && s != a.slug {
                return Err(Error::invalid(
                    "the default agent keeps its slug \"default\"",
                ));
            }
            a.slug = s;
        }
        if let Some(d) = patch.description {
            a.description = check_text("description", &d, 2000)?;
        }
        if let Some(k) = patch.kind {
            a.kind = check_kind(&k)?;
        }
        if let Some(p) = patch.system_prompt {
            a.system_prompt = check_text("system_prompt", &p, MAX_PROMPT_CHARS)?;
        }
        if let Some(p) = patch.provider {
            a.provider = check_provider(p)?;
        }
        if let Some(m) = patch.model {
            a.model = check_model(m)?;
        }
        if let Some(t) = patch.temperature {
            a.temperature = check_temperature(t)?;
        }
        if let Some(t) = patch.max_tokens {
            a.max_tokens = check_max_tokens(t)?;
        }
        if let Some(t) = patch.tools {
            a.tools = check_tools(t)?;
        }
        if let Some(p) = patch.public {
            a.public = p;
        }
        let tools_json =
            serde_json::to_string(&a.tools).map_err(|e| Error::internal(e.to_string()))?;
        let res = conn.execute(
            "UPDATE agents SET slug = ?2, name = ?3, description = ?4, type = ?5, system_prompt = ?6,
                 provider = ?7, model = ?8, temperature = ?9, max_tokens = ?10, tools = ?11,
                 public = ?12, updated_at = ?13
             WHERE id = ?1 AND deleted_at IS NULL",
            params![
                a.id,
                a.slug,
                a.name,
                a.description,
                a.kind,
                a.system_prompt,
                a.provider,
                a.model,
                a.temperature,
                a.max_tokens,
                tools_json,
                a.public,
                crate::db::now()
            ],
        );
        match res {
            Ok(_) => {}
            Err(e) if Error::is_unique_violation(&e) => return Err(slug_conflict(&a.slug)),
            Err(e) => return Err(e.into()),
        }
        find(&conn, &a.id)?.ok_or(Error::NotFound(Resource::Agent))
    }

    /// Soft-deletes an agent (its sessions and messages stay readable). The default agent
    /// cannot be deleted.
    pub fn delete_agent(&self, ctx: &WorkspaceAccess, key: &str) -> Result<()> {
        ctx.require(Action::AgentsManage)?;
        let handle = self.store(ctx)?;
        let conn = handle.conn();
        let a = visible_agent(&conn, ctx, key)?;
        require_editor(&a, ctx)?;
        if a.is_default {
            return Err(Error::Conflict(
                "the default agent cannot be deleted; change its settings instead".into(),
            ));
        }
        conn.execute(
            "UPDATE agents SET deleted_at = ?2, updated_at = ?2 WHERE id = ?1 AND deleted_at IS NULL",
            params![a.id, crate::db::now()],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::{self, Workspace};

    /// A new workspace store in a temp dir: (the temp dir, the store's folder, its id).
    fn new_store() -> (tempfile::TempDir, std::path::PathBuf, uuid::Uuid) {
        let tmp = tempfile::tempdir().expect("tmp");
        let id = crate::ids::new_id();
        let dir = workspace::dir_of(tmp.path(), id);
        workspace::create(&dir).expect("create");
        (tmp, dir, id)
    }

    #[test]
    fn a_store_made_before_agents_gets_its_default_agent_when_opened() {
        let (_tmp, dir, id) = new_store();
        {
            // Roll the store back to what it was before agents existed.
            let ws = Workspace::open(&dir, id).expect("open");
            let conn = ws.conn();
            conn.execute_batch(
                "DROP TABLE chat_messages; DROP TABLE chat_sessions; DROP TABLE agents;
                 DROP INDEX chunks_unembedded_by_document;
                 DROP INDEX audit_log_at; ALTER TABLE audit_log DROP COLUMN actor_id;
                 ALTER TABLE audit_log DROP COLUMN target; ALTER TABLE audit_log DROP COLUMN request_id;
                 ALTER TABLE audit_log DROP COLUMN outcome; ALTER TABLE audit_log DROP COLUMN status;
                 ALTER TABLE audit_log DROP COLUMN prev_hash; ALTER TABLE audit_log DROP COLUMN hash;
                 DELETE FROM schema_migrations WHERE version >= 3; PRAGMA user_version = 2;",
            )
            .expect("roll back");
        }
        let ws = Workspace::open(&dir, id).expect("reopen");
        let conn = ws.conn();
        let agents = list(&conn).expect("list");
        assert_eq!(agents.len(), 1);
        let a = &agents[0];
        assert!(a.is_default && a.public && a.slug == "default");
        assert!(crate::ids::parse_uuid(&a.id, "agent").is_ok(), "{}", a.id);
        assert!(chrono::DateTime::parse_from_rfc3339(&a.created_at).is_ok());
        assert_eq!(a.tools, ["search", "get_document"]);
    }

    #[test]
    fn lookups_by_id_never_match_a_slug_and_old_id_shaped_slugs_are_renamed() {
        let (_tmp, dir, id) = new_store();
        let ws = Workspace::open(&dir, id).expect("open");
        let conn = ws.conn();
        let default = find(&conn, "default")
            .expect("find")
            .expect("default agent");
        // Rows written before slugs were checked: one whose slug is the default agent's id, one
        // whose slug is an id in simple form, and one whose renamed slug is already taken.
        let victim = uuid::Uuid::try_parse(&default.id).expect("id");
        let simple = crate::ids::new_id().simple().to_string();
        let taken = crate::ids::new_id().hyphenated().to_string();
        for (n, slug) in [
            (1, victim.hyphenated().to_string()),
            (2, simple.clone()),
            (3, taken.clone()),
            (4, format!("slug-{taken}")),
        ] {
            conn.execute(
                "INSERT INTO agents (id, slug, name, created_at, updated_at)
                 VALUES (?1, ?2, 'impostor', 'now', 'now')",
                params![format!("00000000-0000-4000-8000-00000000000{n}"), slug],
            )
            .expect("insert");
        }
        // By id, in every accepted form: the real agent, never the row whose slug is that id.
        for key in [
            victim.hyphenated().to_string(),
            victim.hyphenated().to_string().to_uppercase(),
            victim.simple().to_string(),
        ] {
            let a = find(&conn, &key).expect("find").expect("found");
            assert_eq!(a.id, default.id, "{key}");
        }
        assert!(find(&conn, &simple).expect("find").is_none());

        conn.execute_batch(include_str!(
            "../../schema/workspace/0006_id_shaped_slugs.sql"
        ))
        .expect("migration");
        let slugs: Vec<String> = list(&conn)
            .expect("list")
            .into_iter()
            .map(|a| a.slug)
            .collect();
        assert!(
            slugs.iter().all(|s| crate::ids::validate_slug(s).is_ok()),
            "{slugs:?}"
        );
        assert!(slugs.contains(&format!("slug-{victim}")), "{slugs:?}");
        assert!(slugs.contains(&format!("slug-{simple}")), "{slugs:?}");
        assert!(slugs.contains(&format!("slug-{taken}")), "{slugs:?}");
        assert!(slugs.iter().any(|s| s.starts_with("renamed-")), "{slugs:?}");
    }
}
