//! Workspace records in the control plane (name, slug, org, status). The store itself lives in
//! `data/<id>/` and is handled by `crate::workspace`.

use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::orgs::{merge_patch, require_object};
use super::{ControlPlane, OrgStatus, Page};
use crate::db::{self, json_column};
use crate::error::{Error, Resource, Result};
use crate::ids;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkspaceRecord {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub slug: String,
    pub status: String,
    pub settings: Value,
    pub created_at: String,
    pub updated_at: String,
    /// Status of the owning org (suspended orgs' workspaces are refused by the caller).
    #[serde(skip)]
    pub org_status: OrgStatus,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWorkspace {
    pub name: String,
    pub slug: Option<String>,
    pub settings: Option<Value>,
}

impl NewWorkspace {
    /// Validates and normalises the fields; returns (name, slug, settings).
    pub fn validate(&self) -> Result<(String, String, Value)> {
        let name = ids::validate_name(&self.name)?;
        let slug = self.slug.clone().unwrap_or_else(|| ids::slugify(&name));
        ids::validate_slug(&slug)?;
        let settings = self
            .settings
            .clone()
            .unwrap_or_else(|| Value::Object(Default::default()));
        require_object(&settings, "settings")?;
        Ok((name, slug, settings))
    }
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspacePatch {
    pub name: Option<String>,
    pub slug: Option<String>,
    /// Merged into the current settings (RFC 7396).
    pub settings: Option<Value>,
}

/// A workspace row (with its org's status) as stored; [`RawWorkspace::finish`] parses the
/// columns that can be corrupt.
struct RawWorkspace {
    id: String,
    org_id: String,
    name: String,
    slug: String,
    status: String,
    settings: String,
    created_at: String,
    updated_at: String,
    org_status: String,
}

/// The columns [`RawWorkspace::from_row`] reads, by name.
const WS_SELECT: &str = "SELECT w.id AS id, w.org_id AS org_id, w.name AS name, w.slug AS slug,
        w.status AS status, w.settings AS settings, w.created_at AS created_at,
        w.updated_at AS updated_at, o.status AS org_status
        FROM workspaces w JOIN orgs o ON o.id = w.org_id";

impl RawWorkspace {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get("id")?,
            org_id: r.get("org_id")?,
            name: r.get("name")?,
            slug: r.get("slug")?,
            status: r.get("status")?,
            settings: r.get("settings")?,
            created_at: r.get("created_at")?,
            updated_at: r.get("updated_at")?,
            org_status: r.get("org_status")?,
        })
    }

    fn finish(self) -> Result<WorkspaceRecord> {
        let uuid = |s: &str| Uuid::try_parse(s).map_err(|_| Error::internal("corrupt id"));
        Ok(WorkspaceRecord {
            id: uuid(&self.id)?,
            org_id: uuid(&self.org_id)?,
            name: self.name,
            slug: self.slug,
            status: self.status,
            settings: json_column(&self.settings)?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            org_status: match self.org_status.as_str() {
                "active" => OrgStatus::Active,
                "suspended" => OrgStatus::Suspended,
                _ => OrgStatus::Deleted,
            },
        })
    }
}

fn slug_conflict(slug: &str) -> Error {
    Error::Conflict(format!(
        "a workspace with slug {slug:?} already exists in this organization"
    ))
}

impl ControlPlane {
    /// Whether an active workspace of `org_id` already uses `slug`.
    pub fn workspace_slug_taken(&self, org_id: Uuid, slug: &str) -> Result<bool> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM workspaces WHERE org_id = ?1 AND slug = ?2 AND status <> 'deleted'",
                params![org_id.to_string(), slug],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Records a workspace whose store was just created under id `id`.
    pub fn insert_workspace(
        &self,
        id: Uuid,
        org_id: Uuid,
        name: &str,
        slug: &str,
        settings: &Value,
    ) -> Result<WorkspaceRecord> {
        let now = db::now();
        let inserted = self.conn().execute(
            "INSERT INTO workspaces (id, org_id, name, slug, status, settings, created_at, updated_at)
             SELECT ?1, ?2, ?3, ?4, 'active', ?5, ?6, ?6
             WHERE EXISTS (SELECT 1 FROM orgs WHERE id = ?2 AND status <> 'deleted')",
            params![id.to_string(), org_id.to_string(), name, slug, settings.to_string(), now],
        );
        match inserted {
            Ok(0) => Err(Error::NotFound(Resource::Org)),
            Ok(_) => self.get_workspace(id),
            Err(e) if Error::is_unique_violation(&e) => Err(slug_conflict(slug)),
            Err(e) => Err(e.into()),
        }
    }

    /// A workspace that is not deleted, of an org that is not deleted.
    pub fn get_workspace(&self, id: Uuid) -> Result<WorkspaceRecord> {
        let row = self
            .conn()
            .query_row(
                &format!("{WS_SELECT} WHERE w.id = ?1 AND w.status <> 'deleted' AND o.status <> 'deleted'"),
                [id.to_string()],
                RawWorkspace::from_row,
            )
            .optional()?;
        row.ok_or(Error::NotFound(Resource::Workspace))?.finish()
    }

    pub fn list_workspaces(&self, org_id: Uuid, page: Page) -> Result<Vec<WorkspaceRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "{WS_SELECT} WHERE w.org_id = ?1 AND w.status <> 'deleted' ORDER BY w.id LIMIT ?2 OFFSET ?3"
        ))?;
        let rows = stmt.query_map(
            params![org_id.to_string(), page.limit, page.offset],
            RawWorkspace::from_row,
        )?;
        rows.map(|r| r?.finish()).collect()
    }

    pub fn update_workspace(&self, id: Uuid, patch: WorkspacePatch) -> Result<WorkspaceRecord> {
        let mut ws = self.get_workspace(id)?;
        if let Some(name) = patch.name {
            ws.name = ids::validate_name(&name)?;
        }
        if let Some(slug) = patch.slug {
            ids::validate_slug(&slug)?;
            ws.slug = slug;
        }
        if let Some(settings) = patch.settings {
            require_object(&settings, "settings")?;
            merge_patch(&mut ws.settings, &settings);
        }
        let updated = self.conn().execute(
            "UPDATE workspaces SET name = ?2, slug = ?3, settings = ?4, updated_at = ?5
             WHERE id = ?1 AND status <> 'deleted'",
            params![
                id.to_string(),
                ws.name,
                ws.slug,
                ws.settings.to_string(),
                db::now()
            ],
        );
        match updated {
            Ok(0) => Err(Error::NotFound(Resource::Workspace)),
            Ok(_) => self.get_workspace(id),
            Err(e) if Error::is_unique_violation(&e) => Err(slug_conflict(&ws.slug)),
            Err(e) => Err(e.into()),
        }
    }

    /// Marks a workspace deleted; `NotFound` when it already is (or never was).
    pub fn mark_workspace_deleted(&self, id: Uuid) -> Result<()> {
        let now = db::now();
        let n = self.conn().execute(
            "UPDATE workspaces SET status = 'deleted', deleted_at = ?2, updated_at = ?2
             WHERE id = ?1 AND status <> 'deleted'",
            params![id.to_string(), now],
        )?;
        if n == 0 {
            return Err(Error::NotFound(Resource::Workspace));
        }
        Ok(())
    }

    /// Ids of deleted workspaces (records kept, marked deleted), whether deleted one by one or
    /// with their org: the background task removes any folder a crash left behind.
    pub fn deleted_workspace_ids(&self) -> Result<Vec<Uuid>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT w.id FROM workspaces w JOIN orgs o ON o.id = w.org_id
             WHERE w.status = 'deleted' OR o.status = 'deleted'",
        )?;
        let ids = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids.iter().filter_map(|s| Uuid::try_parse(s).ok()).collect())
    }

    /// Removes a workspace record entirely: used only to undo a creation whose store failed.
    pub fn forget_workspace(&self, id: Uuid) -> Result<()> {
        self.conn()
            .execute("DELETE FROM workspaces WHERE id = ?1", [id.to_string()])?;
        Ok(())
    }
}
