//! Tiered storage as the control plane records it (`workspace_tier`): per workspace, the
//! generation the object store holds and whether it is the current copy. The policy (when to
//! offload, how to hydrate) is `durability::tier`; this is the record that decides which copy
//! a node may open.

use rusqlite::{params, OptionalExtension};
use uuid::Uuid;

use super::ControlPlane;
use crate::db;
use crate::error::Result;

/// Where a workspace's current copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierState {
    /// The local folder (written since the last offload, or never offloaded).
    Local,
    /// The object store's generation; a local folder is only a cache of it.
    Offloaded,
}

impl TierState {
    fn as_str(self) -> &'static str {
        match self {
            TierState::Local => "local",
            TierState::Offloaded => "offloaded",
        }
    }
}

/// A workspace's row of `workspace_tier`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierRecord {
    /// The newest generation recorded in the object store (0: none).
    pub generation: u64,
    pub state: TierState,
    /// Bytes of that generation's files.
    pub bytes: u64,
    /// Documents in that generation.
    pub documents: u64,
    pub updated_at: String,
}

const TIER_COLUMNS: &str = "generation, state, bytes, documents, updated_at";
/// The same, qualified (in joins with `workspaces`, which has an `updated_at` too).
const TIER_COLUMNS_T: &str = "t.generation, t.state, t.bytes, t.documents, t.updated_at";

impl TierRecord {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TierRecord> {
        let state: String = r.get("state")?;
        Ok(TierRecord {
            generation: u64::try_from(r.get::<_, i64>("generation")?).unwrap_or(0),
            state: if state == "offloaded" {
                TierState::Offloaded
            } else {
                TierState::Local
            },
            bytes: u64::try_from(r.get::<_, i64>("bytes")?).unwrap_or(0),
            documents: u64::try_from(r.get::<_, i64>("documents")?).unwrap_or(0),
            updated_at: r.get("updated_at")?,
        })
    }
}

fn ids(v: Vec<String>) -> Vec<Uuid> {
    v.iter().filter_map(|s| Uuid::try_parse(s).ok()).collect()
}

impl ControlPlane {
    /// The workspace's tier record (`None`: local, never offloaded).
    pub fn tier_of(&self, ws: Uuid) -> Result<Option<TierRecord>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!("SELECT {TIER_COLUMNS} FROM workspace_tier WHERE workspace_id = ?1"),
                [ws.to_string()],
                TierRecord::from_row,
            )
            .optional()?)
    }

    /// Records that generation `generation` (of `bytes`, holding `documents`) is in the object
    /// store and is now the
    /// current copy, if the record still says `previous` (the generation the offload started
    /// from: fencing, so an offload never overwrites a newer record). Returns whether it did.
    pub fn tier_offloaded(
        &self,
        ws: Uuid,
        previous: u64,
        generation: u64,
        bytes: u64,
        documents: u64,
    ) -> Result<bool> {
        let conn = self.conn();
        let now = db::now();
        let gen = i64::try_from(generation).unwrap_or(i64::MAX);
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let docs = i64::try_from(documents).unwrap_or(i64::MAX);
        let n = if previous == 0 {
            conn.execute(
                "INSERT INTO workspace_tier
                     (workspace_id, generation, state, bytes, documents, updated_at)
                 VALUES (?1, ?2, 'offloaded', ?3, ?5, ?4)
                 ON CONFLICT (workspace_id) DO UPDATE SET generation = ?2, state = 'offloaded',
                     bytes = ?3, documents = ?5, updated_at = ?4
                 WHERE workspace_tier.generation = 0",
                params![ws.to_string(), gen, bytes, now, docs],
            )?
        } else {
            conn.execute(
                "UPDATE workspace_tier SET generation = ?2, state = 'offloaded', bytes = ?3,
                     documents = ?6, updated_at = ?4
                 WHERE workspace_id = ?1 AND generation = ?5",
                params![
                    ws.to_string(),
                    gen,
                    bytes,
                    now,
                    i64::try_from(previous).unwrap_or(i64::MAX),
                    docs
                ],
            )?
        };
        Ok(n == 1)
    }

    /// Makes the local folder the current copy again (it was opened, or replaced by a
    /// restore): the next offload uploads it as a new generation.
    pub fn tier_local(&self, ws: Uuid) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "UPDATE workspace_tier SET state = ?2, updated_at = ?3
             WHERE workspace_id = ?1 AND state <> ?2",
            params![ws.to_string(), TierState::Local.as_str(), db::now()],
        )?;
        Ok(())
    }

    /// Live workspaces whose current copy is their local folder (offload candidates).
    pub fn tier_local_workspaces(&self) -> Result<Vec<Uuid>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT w.id FROM workspaces w LEFT JOIN workspace_tier t ON t.workspace_id = w.id
             WHERE w.status <> 'deleted' AND (t.state IS NULL OR t.state = 'local')
             ORDER BY w.id",
        )?;
        let v = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids(v))
    }

    /// Live workspaces whose current copy is in the object store, with their records (a local
    /// folder of theirs is a cache: evictable).
    pub fn tier_offloaded_workspaces(&self) -> Result<Vec<(Uuid, TierRecord)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT w.id, {TIER_COLUMNS_T} FROM workspaces w
             JOIN workspace_tier t ON t.workspace_id = w.id
             WHERE w.status <> 'deleted' AND t.state = 'offloaded' ORDER BY t.updated_at"
        ))?;
        let v = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, TierRecord::from_row(r)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v.into_iter()
            .filter_map(|(id, rec)| Uuid::try_parse(&id).ok().map(|id| (id, rec)))
            .collect())
    }

    /// Workspaces purged (folder gone for good) that still have objects recorded in the
    /// object store: their objects are to be deleted, then the row.
    pub fn tier_purged_workspaces(&self) -> Result<Vec<Uuid>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT t.workspace_id FROM workspace_tier t JOIN workspaces w ON w.id = t.workspace_id
             WHERE w.purged_at IS NOT NULL ORDER BY t.workspace_id",
        )?;
        let v = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids(v))
    }

    /// Forgets a purged workspace's tier row (its objects are deleted).
    pub fn tier_forget(&self, ws: Uuid) -> Result<()> {
        self.conn().execute(
            "DELETE FROM workspace_tier WHERE workspace_id = ?1",
            [ws.to_string()],
        )?;
        Ok(())
    }
}
