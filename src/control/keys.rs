//! Workspace API keys (digests only) and the signing keys of tenant tokens.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;
use uuid::Uuid;

use super::ControlPlane;
use crate::db;
use crate::error::{Error, Resource, Result};
use crate::roles::Scopes;

/// A signing key of tenant tokens.
#[derive(Debug, Clone)]
pub struct SigningKey {
    pub kid: String,
    pub secret: Vec<u8>,
}

/// An API key as listed: never its secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    pub org_id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub scopes: Scopes,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

/// What the hot path reads to check a key.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub workspace_id: Uuid,
    pub secret_sha256: String,
    pub scopes: Scopes,
    pub expires_at: Option<String>,
    pub revoked: bool,
}

impl KeyRow {
    /// Not revoked and not expired at `now` (RFC 3339, our one format).
    pub fn is_live(&self, now: &str) -> bool {
        !self.revoked && self.expires_at.as_deref().is_none_or(|e| e > now)
    }
}

fn uuid(s: &str) -> Result<Uuid> {
    Uuid::try_parse(s).map_err(|_| Error::internal("corrupt id"))
}

/// The columns [`RawKey::from_row`] reads, by name.
const KEY_COLUMNS: &str = "id, org_id, workspace_id, name, prefix, scopes, created_at, expires_at,
    revoked_at, last_used_at";

/// An API key row as stored; [`RawKey::finish`] parses the columns that can be corrupt.
struct RawKey {
    id: String,
    org_id: String,
    workspace_id: String,
    name: String,
    prefix: String,
    scopes: String,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    last_used_at: Option<String>,
}

impl RawKey {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get("id")?,
            org_id: r.get("org_id")?,
            workspace_id: r.get("workspace_id")?,
            name: r.get("name")?,
            prefix: r.get("prefix")?,
            scopes: r.get("scopes")?,
            created_at: r.get("created_at")?,
            expires_at: r.get("expires_at")?,
            revoked_at: r.get("revoked_at")?,
            last_used_at: r.get("last_used_at")?,
        })
    }

    fn finish(self) -> Result<ApiKey> {
        Ok(ApiKey {
            id: uuid(&self.id)?,
            org_id: uuid(&self.org_id)?,
            workspace_id: uuid(&self.workspace_id)?,
            name: self.name,
            prefix: self.prefix,
            scopes: Scopes::parse_csv(&self.scopes)
                .map_err(|_| Error::internal("corrupt scopes"))?,
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            last_used_at: self.last_used_at,
        })
    }
}

/// The columns [`RawKeyRow::from_row`] reads, by name.
const KEY_ROW_COLUMNS: &str =
    "id, org_id, workspace_id, secret_sha256, scopes, expires_at, revoked_at";

/// What the hot path reads of a key, as stored; [`RawKeyRow::finish`] parses it.
struct RawKeyRow {
    id: String,
    org_id: String,
    workspace_id: String,
    secret_sha256: String,
    scopes: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
}

impl RawKeyRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get("id")?,
            org_id: r.get("org_id")?,
            workspace_id: r.get("workspace_id")?,
            secret_sha256: r.get("secret_sha256")?,
            scopes: r.get("scopes")?,
            expires_at: r.get("expires_at")?,
            revoked_at: r.get("revoked_at")?,
        })
    }

    fn finish(self) -> Result<KeyRow> {
        Ok(KeyRow {
            id: uuid(&self.id)?,
            org_id: uuid(&self.org_id)?,
            workspace_id: uuid(&self.workspace_id)?,
            secret_sha256: self.secret_sha256,
            scopes: Scopes::parse_csv(&self.scopes)
                .map_err(|_| Error::internal("corrupt scopes"))?,
            expires_at: self.expires_at,
            revoked: self.revoked_at.is_some(),
        })
    }
}

/// Formats a time in our one stored format.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl ControlPlane {
    #[allow(clippy::too_many_arguments)]
    pub fn insert_api_key(
        &self,
        org_id: Uuid,
        workspace_id: Uuid,
        name: &str,
        prefix: &str,
        digest_hex: &str,
        scopes: Scopes,
        created_by: Option<Uuid>,
        expires_at: Option<&str>,
    ) -> Result<ApiKey> {
        let id = crate::ids::new_id();
        let now = db::now();
        let n = self.conn().execute(
            "INSERT INTO api_keys (id, org_id, workspace_id, name, prefix, secret_sha256, scopes,
                                   created_by, created_at, expires_at)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10
             WHERE EXISTS (SELECT 1 FROM workspaces WHERE id = ?3 AND org_id = ?2 AND status <> 'deleted')",
            params![
                id.to_string(),
                org_id.to_string(),
                workspace_id.to_string(),
                name,
                prefix,
                digest_hex,
                scopes.to_csv(),
                created_by.map(|u| u.to_string()),
                now,
                expires_at
            ],
        )?;
        if n == 0 {
            return Err(Error::NotFound(Resource::Workspace));
        }
        self.get_api_key(workspace_id, id)
    }

    pub fn get_api_key(&self, workspace_id: Uuid, id: Uuid) -> Result<ApiKey> {
        let row = self
            .conn()
            .query_row(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1 AND workspace_id = ?2"),
                params![id.to_string(), workspace_id.to_string()],
                RawKey::from_row,
            )
            .optional()?;
        row.ok_or(Error::NotFound(Resource::ApiKey))?.finish()
    }

    pub fn list_api_keys(&self, workspace_id: Uuid) -> Result<Vec<ApiKey>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE workspace_id = ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map([workspace_id.to_string()], RawKey::from_row)?;
        rows.map(|r| r?.finish()).collect()
    }

    /// Revokes a key of `workspace_id`; `NotFound` when it is not there or already revoked.
    pub fn revoke_api_key(&self, workspace_id: Uuid, id: Uuid) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE api_keys SET revoked_at = ?3 WHERE id = ?1 AND workspace_id = ?2 AND revoked_at IS NULL",
            params![id.to_string(), workspace_id.to_string(), db::now()],
        )?;
        if n == 0 {
            return Err(Error::NotFound(Resource::ApiKey));
        }
        Ok(())
    }

    /// The workspace of a key (any state), for the command line.
    pub fn workspace_of_key(&self, id: Uuid) -> Result<Uuid> {
        let ws: Option<String> = self
            .conn()
            .query_row(
                "SELECT workspace_id FROM api_keys WHERE id = ?1",
                [id.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        uuid(&ws.ok_or(Error::NotFound(Resource::ApiKey))?)
    }

    /// A key by its public prefix (hot path).
    pub fn key_by_prefix(&self, prefix: &str) -> Result<Option<KeyRow>> {
        let conn = self.auth_conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {KEY_ROW_COLUMNS} FROM api_keys WHERE prefix = ?1"
        ))?;
        let row = stmt.query_row([prefix], RawKeyRow::from_row).optional()?;
        row.map(RawKeyRow::finish).transpose()
    }

    /// A key by id (hot path of tenant tokens).
    pub fn key_by_id(&self, id: Uuid) -> Result<Option<KeyRow>> {
        let conn = self.auth_conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {KEY_ROW_COLUMNS} FROM api_keys WHERE id = ?1"
        ))?;
        let row = stmt
            .query_row([id.to_string()], RawKeyRow::from_row)
            .optional()?;
        row.map(RawKeyRow::finish).transpose()
    }

    /// Writes pending `last_used_at` values (never moving one backwards), in one transaction.
    pub fn flush_last_used(&self, pending: &HashMap<Uuid, DateTime<Utc>>) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE api_keys SET last_used_at = ?2
                 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
            )?;
            for (id, at) in pending {
                stmt.execute(params![id.to_string(), format_time(*at)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    // ---- tenant-token signing keys ----

    /// The unretired signing keys, newest first; creates the first one when there is none.
    pub fn signing_keys(&self) -> Result<Vec<SigningKey>> {
        let keys = self.load_signing_keys()?;
        if !keys.is_empty() {
            return Ok(keys);
        }
        self.rotate_signing_key(false)
    }

    fn load_signing_keys(&self) -> Result<Vec<SigningKey>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT kid, secret_hex FROM token_signing_keys WHERE retired_at IS NULL
             ORDER BY created_at DESC, kid DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>("kid")?,
                r.get::<_, String>("secret_hex")?,
            ))
        })?;
        rows.map(|r| {
            let (kid, hex_secret) = r?;
            let secret =
                hex::decode(hex_secret).map_err(|_| Error::internal("corrupt signing key"))?;
            Ok(SigningKey { kid, secret })
        })
        .collect()
    }

    /// Makes a new signing key current. The previous one keeps verifying (tokens already handed
    /// out stay valid until they expire) unless `retire_previous`; older ones are retired.
    pub fn rotate_signing_key(&self, retire_previous: bool) -> Result<Vec<SigningKey>> {
        {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let now = db::now();
            let keep: Option<String> = if retire_previous {
                None
            } else {
                tx.query_row(
                    "SELECT kid FROM token_signing_keys WHERE retired_at IS NULL
                     ORDER BY created_at DESC, kid DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?
            };
            tx.execute(
                "UPDATE token_signing_keys SET retired_at = ?1
                 WHERE retired_at IS NULL AND kid IS NOT ?2",
                params![now, keep],
            )?;
            let kid = crate::crypto::random_hex(8);
            tx.execute(
                "INSERT INTO token_signing_keys (kid, secret_hex, created_at) VALUES (?1, ?2, ?3)",
                params![kid, crate::crypto::random_hex(32), now],
            )?;
            tx.commit()?;
        }
        self.load_signing_keys()
    }
}
