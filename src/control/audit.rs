//! The operator audit log: every request made with the operator token, and every management
//! command run from the command line, with who, what, which org and workspace, and when.

use rusqlite::{params, Row};
use serde::Serialize;
use uuid::Uuid;

use super::{ControlPlane, Page};
use crate::db;
use crate::error::Result;

#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
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

/// The columns [`AuditEntry::from_row`] reads, by name.
const AUDIT_COLUMNS: &str =
    "id, at, actor, action, path, status, org_id, workspace_id, request_id, client";

impl AuditEntry {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        // An id that does not parse reads as none (the log is kept whatever it holds).
        let id = |name: &str| -> rusqlite::Result<Option<Uuid>> {
            Ok(r.get::<_, Option<String>>(name)?
                .and_then(|s| Uuid::try_parse(&s).ok()))
        };
        Ok(Self {
            id: r.get("id")?,
            at: r.get("at")?,
            actor: r.get("actor")?,
            action: r.get("action")?,
            path: r.get("path")?,
            status: r.get("status")?,
            org_id: id("org_id")?,
            workspace_id: id("workspace_id")?,
            request_id: r.get("request_id")?,
            client: r.get("client")?,
        })
    }
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
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {AUDIT_COLUMNS}
             FROM operator_audit WHERE (?1 IS NULL OR org_id = ?1)
             ORDER BY id DESC LIMIT ?2 OFFSET ?3"
        ))?;
        let rows = stmt.query_map(
            params![org_id.map(|u| u.to_string()), page.limit, page.offset],
            AuditEntry::from_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
