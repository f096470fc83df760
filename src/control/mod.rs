//! The control plane: `data/control.db`, holding organizations, workspaces and server settings
//! (later: users, memberships, API keys, usage). It never touches workspace folders; `app`
//! combines it with the workspace registry.

mod operator;
mod orgs;
mod plans;
mod workspaces;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use crate::db::{self, Migration};
use crate::error::Result;

pub use operator::{operator_token_matches, AdminTokenSource, TOKEN_PREFIX};
pub use orgs::{NewOrg, Org, OrgPatch, OrgStatus};
pub use workspaces::{NewWorkspace, WorkspacePatch, WorkspaceRecord};

pub const CONTROL_DB: &str = "control.db";

pub static MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "init",
    sql: include_str!("../../schema/control/0001_init.sql"),
}];

/// Largest page a list call returns.
pub const MAX_PAGE: u32 = 1000;

/// A page request: `limit` (1..=1000, default 100) and `offset`.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: u32,
    pub offset: u32,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            limit: 100,
            offset: 0,
        }
    }
}

impl Page {
    pub fn new(limit: Option<u32>, offset: Option<u32>) -> Result<Page> {
        let limit = limit.unwrap_or(100);
        if limit == 0 || limit > MAX_PAGE {
            return Err(crate::Error::invalid("limit must be between 1 and 1000"));
        }
        Ok(Page {
            limit,
            offset: offset.unwrap_or(0),
        })
    }
}

pub struct ControlPlane {
    conn: Mutex<Connection>,
}

impl ControlPlane {
    /// Opens (creating if needed) `control.db` in `data_dir` and applies pending migrations.
    pub fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let mut conn = db::open(&data_dir.join(CONTROL_DB), true)?;
        db::migrate(&mut conn, MIGRATIONS)?;
        Ok(ControlPlane {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A cheap liveness query, for `/readyz`.
    pub fn ping(&self) -> Result<()> {
        self.conn().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    /// Truncates the WAL: part of a clean shutdown.
    pub fn checkpoint(&self) -> Result<()> {
        self.conn()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn()
            .query_row(
                "SELECT value FROM server_settings WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO server_settings (key, value, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            rusqlite::params![key, value, db::now()],
        )?;
        Ok(())
    }
}
