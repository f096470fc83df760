//! The control plane: `data/control.db`, holding organizations, workspaces and server settings
//! users, sessions, memberships, invitations, API keys, tenant-token signing keys and the control plane's audit trail (`operator_audit`, written and
//! read by `governance` through its own connection). It never touches workspace folders; `app`
//! combines it with the workspace registry.

mod keys;
mod lifecycle;
pub mod limits;
mod operator;
mod orgs;
mod plans;
mod providers;
pub mod tier;
mod users;
mod workspaces;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use crate::db::{self, Migration};
use crate::error::Result;

pub use keys::{format_time, ApiKey, KeyRow, SigningKey};
pub use lifecycle::Deleted;
pub use operator::{operator_token_matches, AdminTokenSource, TOKEN_PREFIX};
pub use orgs::{NewOrg, Org, OrgPatch, OrgStatus};
pub use providers::ProviderRow;
pub use users::{Accepted, Invitation, Member, SessionRow, User};
pub use workspaces::{NewWorkspace, WorkspacePatch, WorkspaceRecord};

pub const CONTROL_DB: &str = "control.db";

pub static MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../schema/control/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "identity",
        sql: include_str!("../../schema/control/0002_identity.sql"),
    },
    Migration {
        version: 3,
        name: "providers",
        sql: include_str!("../../schema/control/0003_providers.sql"),
    },
    Migration {
        version: 4,
        name: "id_shaped_slugs",
        sql: include_str!("../../schema/control/0004_id_shaped_slugs.sql"),
    },
    Migration {
        version: 6,
        name: "audit_chain_usage",
        sql: include_str!("../../schema/control/0006_audit_chain_usage.sql"),
    },
    // 5 was never used on main (issue 12 part A's migration became 7, after part B's 6).
    Migration {
        version: 7,
        name: "governance",
        sql: include_str!("../../schema/control/0007_governance.sql"),
    },
    Migration {
        version: 8,
        name: "tier",
        sql: include_str!("../../schema/control/0008_tier.sql"),
    },
];

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
    /// A second connection for the read-only lookups of authentication (keys, sessions,
    /// memberships): WAL lets it read while the main connection writes.
    auth: Mutex<Connection>,
}

impl ControlPlane {
    /// Opens (creating if needed) `control.db` in `data_dir` and applies pending migrations.
    pub fn open(data_dir: &Path) -> Result<Self> {
        crate::perms::create_dir_all(data_dir)?;
        let mut conn = db::open(&data_dir.join(CONTROL_DB), true)?;
        db::migrate(&mut conn, MIGRATIONS)?;
        let auth = db::open(&data_dir.join(CONTROL_DB), false)?;
        auth.pragma_update(None, "query_only", "ON")?;
        Ok(ControlPlane {
            conn: Mutex::new(conn),
            auth: Mutex::new(auth),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn auth_conn(&self) -> MutexGuard<'_, Connection> {
        self.auth.lock().unwrap_or_else(|p| p.into_inner())
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
