//! The operator audit log: every request made with the operator token, and every management
//! command run from the command line, with who, what, which org and workspace, and when.

use rusqlite::params;
use serde::Serialize;
use uuid::Uuid;

use super::{ControlPlane, Page};
use crate::db;
use crate::error::Result;

#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    /// `operator` (HTTP, operator token) or `cli` (the command line).
    pub actor: String,
    /// What was done, e.g. `POST /v1/orgs/{org}/suspend` or `key revoke`.
    pub action: String,
    pub path: String,
    pub status: Option<u16>,
    pub org_id: Option<Uuid>,
    pub workspace_id: Option<Uuid>,
    pub request_id: Option<String>,
    pub client: Option<String>,
}

impl ControlPlane {
    pub fn record_audit(&self, e: &AuditEntry) -> Result<()> {
        self.conn().execute(
            "INSERT INTO operator_audit (at, actor, action, path, status, org_id, workspace_id,
                                         request_id, client)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                db::now(),
                e.actor,
                e.action,
                e.path,
                e.status,
                e.org_id.map(|u| u.to_string()),
                e.workspace_id.map(|u| u.to_string()),
                e.request_id,
                e.client
            ],
        )?;
        Ok(())
    }

    /// Newest first; optionally only the entries about one org.
    pub fn list_audit(&self, org_id: Option<Uuid>, page: Page) -> Result<Vec<AuditEntry>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, actor, action, path, status, org_id, workspace_id, request_id, client
             FROM operator_audit WHERE (?1 IS NULL OR org_id = ?1)
             ORDER BY id DESC LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt.query_map(
            params![org_id.map(|u| u.to_string()), page.limit, page.offset],
            |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    path: r.get(4)?,
                    status: r.get(5)?,
                    org_id: r
                        .get::<_, Option<String>>(6)?
                        .and_then(|s| Uuid::try_parse(&s).ok()),
                    workspace_id: r
                        .get::<_, Option<String>>(7)?
                        .and_then(|s| Uuid::try_parse(&s).ok()),
                    request_id: r.get(8)?,
                    client: r.get(9)?,
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
