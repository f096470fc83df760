//! Model providers of an organization: base URL, default model and the sealed API key. The key is
//! stored sealed (see `crypto`) and only ever leaves this module sealed; `App` opens it for the
//! org's own requests.

use rusqlite::{params, OptionalExtension};
use uuid::Uuid;

use super::ControlPlane;
use crate::crypto::Sealed;
use crate::db;
use crate::error::{Error, Resource, Result};

/// One provider row. `sealed` is `None` when no key is set.
#[derive(Debug, Clone)]
pub struct ProviderRow {
    pub org_id: Uuid,
    pub name: String,
    pub base_url: String,
    pub model: String,
    pub sealed: Option<Sealed>,
    pub created_at: String,
    pub updated_at: String,
}

/// The columns [`RawProvider::from_row`] reads, by name.
const SELECT: &str = "SELECT org_id, name, base_url, model, key_nonce, key_sealed, created_at,
    updated_at FROM org_providers";

/// A provider row as stored; [`RawProvider::finish`] parses its org id.
struct RawProvider {
    org_id: String,
    name: String,
    base_url: String,
    model: String,
    key_nonce: Option<Vec<u8>>,
    key_sealed: Option<Vec<u8>>,
    created_at: String,
    updated_at: String,
}

impl RawProvider {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            org_id: r.get("org_id")?,
            name: r.get("name")?,
            base_url: r.get("base_url")?,
            model: r.get("model")?,
            key_nonce: r.get("key_nonce")?,
            key_sealed: r.get("key_sealed")?,
            created_at: r.get("created_at")?,
            updated_at: r.get("updated_at")?,
        })
    }

    fn finish(self) -> Result<ProviderRow> {
        Ok(ProviderRow {
            org_id: Uuid::try_parse(&self.org_id).map_err(|_| Error::internal("corrupt org id"))?,
            name: self.name,
            base_url: self.base_url,
            model: self.model,
            sealed: match (self.key_nonce, self.key_sealed) {
                (Some(nonce), Some(ciphertext)) => Some(Sealed { nonce, ciphertext }),
                _ => None,
            },
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

impl ControlPlane {
    /// Inserts or replaces an org's provider. `sealed: None` keeps the stored key.
    pub fn put_provider(
        &self,
        org_id: Uuid,
        name: &str,
        base_url: &str,
        model: &str,
        sealed: Option<&Sealed>,
    ) -> Result<ProviderRow> {
        let now = db::now();
        {
            let conn = self.conn();
            conn.execute(
                "INSERT INTO org_providers (org_id, name, base_url, model, key_nonce, key_sealed,
                     created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
                 ON CONFLICT (org_id, name) DO UPDATE SET base_url = excluded.base_url,
                     model = excluded.model,
                     key_nonce = coalesce(excluded.key_nonce, key_nonce),
                     key_sealed = coalesce(excluded.key_sealed, key_sealed),
                     updated_at = excluded.updated_at",
                params![
                    org_id.to_string(),
                    name,
                    base_url,
                    model,
                    sealed.map(|s| s.nonce.clone()),
                    sealed.map(|s| s.ciphertext.clone()),
                    now
                ],
            )?;
        }
        self.get_provider(org_id, name)?
            .ok_or(Error::NotFound(Resource::Provider))
    }

    pub fn get_provider(&self, org_id: Uuid, name: &str) -> Result<Option<ProviderRow>> {
        let conn = self.conn();
        let r = conn
            .query_row(
                &format!("{SELECT} WHERE org_id = ?1 AND name = ?2"),
                params![org_id.to_string(), name],
                RawProvider::from_row,
            )
            .optional()?;
        r.map(RawProvider::finish).transpose()
    }

    pub fn list_providers(&self, org_id: Uuid) -> Result<Vec<ProviderRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{SELECT} WHERE org_id = ?1 ORDER BY name"))?;
        let rows = stmt.query_map([org_id.to_string()], RawProvider::from_row)?;
        rows.map(|r| r?.finish()).collect()
    }

    /// Removes an org's provider (and its sealed key). `NotFound` when there is none.
    pub fn delete_provider(&self, org_id: Uuid, name: &str) -> Result<()> {
        let n = self.conn().execute(
            "DELETE FROM org_providers WHERE org_id = ?1 AND name = ?2",
            params![org_id.to_string(), name],
        )?;
        if n == 0 {
            return Err(Error::NotFound(Resource::Provider));
        }
        Ok(())
    }
}
