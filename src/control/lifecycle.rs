//! Soft deletion of orgs and workspaces as stored: marked deleted (invisible to every other
//! query, which all filter `status <> 'deleted'`) with a `purge_after` time, restorable until
//! the background upkeep purges them (`purged_at`). The policy (grace period, when to purge,
//! what purging removes) is `tenancy::lifecycle`.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use uuid::Uuid;

use super::ControlPlane;
use crate::db;
use crate::error::{Error, Resource, Result};

/// A deleted org or workspace that can still be restored.
#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    pub kind: &'static str,
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub slug: String,
    pub deleted_at: Option<String>,
    pub purge_after: Option<String>,
}

fn ids(v: Vec<String>) -> Vec<Uuid> {
    v.iter().filter_map(|s| Uuid::try_parse(s).ok()).collect()
}

impl ControlPlane {
    /// Marks an org and its live workspaces deleted, to be purged after `purge_after`. Returns
    /// the workspaces marked. Provider keys stay until the purge (a restore gets them back).
    pub fn soft_delete_org(&self, id: Uuid, purge_after: &str) -> Result<Vec<Uuid>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = db::now();
        let n = tx.execute(
            "UPDATE orgs SET status = 'deleted', deleted_at = ?2, updated_at = ?2, purge_after = ?3
             WHERE id = ?1 AND status <> 'deleted'",
            params![id.to_string(), now, purge_after],
        )?;
        if n == 0 {
            return Err(Error::NotFound(Resource::Org));
        }
        let ws: Vec<String> = {
            let mut stmt = tx.prepare(
                "UPDATE workspaces SET status = 'deleted', deleted_at = ?2, updated_at = ?2,
                        purge_after = ?3, deleted_with_org = 1
                 WHERE org_id = ?1 AND status <> 'deleted' RETURNING id",
            )?;
            let rows = stmt.query_map(params![id.to_string(), now, purge_after], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        tx.commit()?;
        Ok(ids(ws))
    }

    /// Marks a workspace deleted, to be purged after `purge_after`.
    pub fn soft_delete_workspace(&self, id: Uuid, purge_after: &str) -> Result<()> {
        let now = db::now();
        let n = self.conn().execute(
            "UPDATE workspaces SET status = 'deleted', deleted_at = ?2, updated_at = ?2,
                    purge_after = ?3, deleted_with_org = 0
             WHERE id = ?1 AND status <> 'deleted'",
            params![id.to_string(), now, purge_after],
        )?;
        if n == 0 {
            return Err(Error::NotFound(Resource::Workspace));
        }
        Ok(())
    }

    /// Makes a deleted org (or, with `workspace`, one deleted workspace) due for purge now.
    pub fn purge_now(&self, org: Option<Uuid>, workspace: Option<Uuid>, now: &str) -> Result<()> {
        let conn = self.conn();
        if let Some(o) = org {
            conn.execute(
                "UPDATE orgs SET purge_after = ?2 WHERE id = ?1 AND status = 'deleted'",
                params![o.to_string(), now],
            )?;
            conn.execute(
                "UPDATE workspaces SET purge_after = ?2
                 WHERE org_id = ?1 AND status = 'deleted' AND purged_at IS NULL",
                params![o.to_string(), now],
            )?;
        }
        if let Some(w) = workspace {
            conn.execute(
                "UPDATE workspaces SET purge_after = ?2 WHERE id = ?1 AND status = 'deleted'",
                params![w.to_string(), now],
            )?;
        }
        Ok(())
    }

    /// Restores a deleted, unpurged org and the workspaces its deletion marked. `Conflict` when
    /// another org took its slug meanwhile.
    pub fn restore_org(&self, id: Uuid) -> Result<Vec<Uuid>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = db::now();
        let restored = tx.execute(
            "UPDATE orgs SET status = 'active', deleted_at = NULL, purge_after = NULL, updated_at = ?2
             WHERE id = ?1 AND status = 'deleted' AND purged_at IS NULL",
            params![id.to_string(), now],
        );
        match restored {
            Ok(0) => return Err(Error::NotFound(Resource::Org)),
            Ok(_) => {}
            Err(e) if Error::is_unique_violation(&e) => {
                return Err(Error::Conflict(
                    "another organization now has this one's slug: change that one's slug first"
                        .into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        let ws: Vec<String> = {
            let mut stmt = tx.prepare(
                "UPDATE workspaces SET status = 'active', deleted_at = NULL, purge_after = NULL,
                        deleted_with_org = 0, updated_at = ?2
                 WHERE org_id = ?1 AND status = 'deleted' AND deleted_with_org = 1
                   AND purged_at IS NULL RETURNING id",
            )?;
            let rows = stmt.query_map(params![id.to_string(), now], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        tx.commit()?;
        Ok(ids(ws))
    }

    /// Restores a deleted, unpurged workspace of a live org. `Conflict` when its slug was
    /// taken meanwhile.
    pub fn restore_workspace(&self, id: Uuid) -> Result<Uuid> {
        let conn = self.conn();
        let org: Option<String> = conn
            .query_row(
                "SELECT w.org_id FROM workspaces w JOIN orgs o ON o.id = w.org_id
                 WHERE w.id = ?1 AND w.status = 'deleted' AND w.purged_at IS NULL
                   AND o.status <> 'deleted'",
                [id.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        let org = org
            .and_then(|o| Uuid::try_parse(&o).ok())
            .ok_or(Error::NotFound(Resource::Workspace))?;
        let restored = conn.execute(
            "UPDATE workspaces SET status = 'active', deleted_at = NULL, purge_after = NULL,
                    deleted_with_org = 0, updated_at = ?2
             WHERE id = ?1 AND status = 'deleted'",
            params![id.to_string(), db::now()],
        );
        match restored {
            Ok(_) => Ok(org),
            Err(e) if Error::is_unique_violation(&e) => Err(Error::Conflict(
                "another workspace of this organization now has this one's slug: change that \
                 one's slug first"
                    .into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Deleted workspaces (on their own or with their org) whose grace period is over at `now`
    /// and that are not purged yet. Rows deleted before soft deletion existed have no
    /// `purge_after` and are due at once.
    pub fn workspaces_due_for_purge(&self, now: &str) -> Result<Vec<Uuid>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT w.id FROM workspaces w JOIN orgs o ON o.id = w.org_id
             WHERE (w.status = 'deleted' OR o.status = 'deleted') AND w.purged_at IS NULL
               AND (CASE WHEN w.status = 'deleted' THEN w.purge_after ELSE o.purge_after END
                    IS NULL
                    OR (CASE WHEN w.status = 'deleted' THEN w.purge_after ELSE o.purge_after END)
                       <= ?1)",
        )?;
        let v = stmt
            .query_map([now], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids(v))
    }

    /// Deleted orgs whose grace period is over at `now`, not purged yet.
    pub fn orgs_due_for_purge(&self, now: &str) -> Result<Vec<Uuid>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id FROM orgs WHERE status = 'deleted' AND purged_at IS NULL
               AND (purge_after IS NULL OR purge_after <= ?1)",
        )?;
        let v = stmt
            .query_map([now], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids(v))
    }

    /// Records that a workspace's folder is gone: it can no longer be restored.
    pub fn mark_workspace_purged(&self, id: Uuid) -> Result<()> {
        self.conn().execute(
            "UPDATE workspaces SET purged_at = ?2, status = 'deleted' WHERE id = ?1",
            params![id.to_string(), db::now()],
        )?;
        Ok(())
    }

    /// Records that an org is purged: its provider keys are destroyed and it can no longer be
    /// restored.
    pub fn mark_org_purged(&self, id: Uuid) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM org_providers WHERE org_id = ?1",
            [id.to_string()],
        )?;
        tx.execute(
            "UPDATE orgs SET purged_at = ?2 WHERE id = ?1 AND status = 'deleted'",
            params![id.to_string(), db::now()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// What the operator can still restore: deleted orgs and workspaces not purged (a row whose
    /// ids do not parse is left out).
    pub fn list_deleted(&self) -> Result<Vec<Deleted>> {
        let conn = self.conn();
        let queries = [
            (
                "org",
                "SELECT id, id AS org_id, name, slug, deleted_at, purge_after FROM orgs
                 WHERE status = 'deleted' AND purged_at IS NULL ORDER BY deleted_at, id",
            ),
            (
                "workspace",
                "SELECT id, org_id, name, slug, deleted_at, purge_after FROM workspaces
                 WHERE status = 'deleted' AND purged_at IS NULL AND deleted_with_org = 0
                 ORDER BY deleted_at, id",
            ),
        ];
        let mut out = Vec::new();
        for (kind, sql) in queries {
            let mut stmt = conn.prepare(sql)?;
            let rows = stmt.query_map([], |r| Deleted::from_row(kind, r))?;
            for row in rows {
                out.extend(row?);
            }
        }
        Ok(out)
    }
}

impl Deleted {
    /// A row of `list_deleted`'s queries, read by column name; `None` when an id does not parse.
    fn from_row(kind: &'static str, r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Deleted>> {
        let id: String = r.get("id")?;
        let org_id: String = r.get("org_id")?;
        let (Ok(id), Ok(org_id)) = (Uuid::try_parse(&id), Uuid::try_parse(&org_id)) else {
            return Ok(None);
        };
        Ok(Some(Deleted {
            kind,
            id,
            org_id,
            name: r.get("name")?,
            slug: r.get("slug")?,
            deleted_at: r.get("deleted_at")?,
            purge_after: r.get("purge_after")?,
        }))
    }
}

impl ControlPlane {
    /// When workspace `id` is deleted but not yet purged (restorable): its `purge_after`.
    /// `None` for a live workspace, a purged one or an unknown id.
    pub fn workspace_restorable_until(&self, id: Uuid) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT coalesce(purge_after, '') FROM workspaces
                 WHERE id = ?1 AND status = 'deleted' AND purged_at IS NULL",
                [id.to_string()],
                |r| r.get(0),
            )
            .optional()?)
    }
}
