//! Knowledge's state derived from an open workspace, kept with it as an extension of the
//! store ([`Workspace::extension`]): the vector codes ([`Ann`]), the allowed chunks of
//! recent filters ([`AllowedCache`]) and the embedder configurations ([`SpacesCache`]). All
//! are checked against SQLite, never trusted (see ARCHITECTURE.md, "Derived in-memory state").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::ann::Ann;
use super::embedders::EmbedderConfig;
use super::search::AllowedCache;
use super::vectors::Space;
use crate::error::Result;
use crate::workspace::Workspace;

/// The derived caches of one open workspace.
#[derive(Debug, Default)]
pub struct Caches {
    /// Binary codes of the vector spaces, kept current by the store's row changes.
    pub ann: Ann,
    /// Chunks allowed by recent filters, checked against the store's data version.
    pub allowed: AllowedCache,
    /// The embedder configurations of the vector spaces, checked against their row changes.
    pub spaces: SpacesCache,
}

/// A workspace's embedder configurations (redacted), as `vector_spaces` holds them.
#[derive(Debug, Clone, Default)]
pub struct SpaceConfigs {
    /// Every space's (active and building).
    pub all: Vec<EmbedderConfig>,
    /// The active space (its table, dimension, storage and embedder), as a search reads it.
    pub active: Option<Space>,
}

/// The [`SpaceConfigs`] of a workspace, read once per change instead of once per search: kept
/// while no row of `vector_spaces` changed through the store's connection (a row observer counts
/// the changes) and no other connection committed (SQLite's `data_version`). Both are read
/// holding the store's connection, where no write of it is half done.
#[derive(Debug, Default)]
pub struct SpacesCache {
    changes: Arc<AtomicU64>,
    entry: Mutex<Option<(SpacesVersion, Arc<SpaceConfigs>)>>,
}

/// The count of `vector_spaces` row changes and SQLite's `data_version`.
type SpacesVersion = (u64, i64);

impl SpacesCache {
    /// The cached configurations, or `load`'s (which reads them from SQLite) when they changed.
    pub fn get_or_load(
        &self,
        ws: &Workspace,
        load: impl FnOnce() -> Result<SpaceConfigs>,
    ) -> Result<Arc<SpaceConfigs>> {
        let version = {
            let conn = ws.conn();
            let external: i64 = conn
                .prepare_cached("PRAGMA data_version")?
                .query_row([], |r| r.get(0))?;
            (self.changes.load(Ordering::Acquire), external)
        };
        if let Some((v, c)) = &*self.entry.lock().unwrap_or_else(|p| p.into_inner()) {
            if *v == version {
                return Ok(c.clone());
            }
        }
        // Read after the version: at least as new as it (a change meanwhile changes the
        // version, and the next call reads again).
        let configs = Arc::new(load()?);
        *self.entry.lock().unwrap_or_else(|p| p.into_inner()) = Some((version, configs.clone()));
        Ok(configs)
    }
}

/// The caches of `ws`, made on first use. A new [`Ann`] holds no codes, so the writes before
/// it follows the store's row changes are read from SQLite when it loads.
pub fn of(ws: &Workspace) -> Arc<Caches> {
    ws.extension(|slots| {
        let caches = Caches::default();
        let ann = caches.ann.clone();
        let spaces = caches.spaces.changes.clone();
        slots.observe_rows(move |table, rowid| {
            ann.note(table, rowid);
            if table == "vector_spaces" {
                spaces.fetch_add(1, Ordering::Release);
            }
        });
        caches
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn space_configs_are_read_again_after_any_change_of_vector_spaces() {
        let tmp = tempfile::tempdir().expect("tmp");
        let id = crate::ids::new_id();
        let dir = crate::workspace::dir_of(tmp.path(), id);
        crate::workspace::create(&dir).expect("create");
        let ws = Workspace::open(&dir, id).expect("open");
        let loads = AtomicUsize::new(0);
        let get = || {
            of(&ws)
                .spaces
                .get_or_load(&ws, || {
                    loads.fetch_add(1, Ordering::SeqCst);
                    Ok(SpaceConfigs::default())
                })
                .expect("configs");
            loads.load(Ordering::SeqCst)
        };
        assert_eq!(get(), 1, "read on first use");
        assert_eq!(get(), 1, "then cached");
        // A change through the store's own connection (as `PUT /embedder` makes it).
        ws.conn()
            .execute("UPDATE vector_spaces SET embedder = embedder", [])
            .expect("update");
        assert_eq!(
            get(),
            2,
            "read again after a change of the store's connection"
        );
        assert_eq!(get(), 2);
        // A change of the chunks is none of the spaces'.
        ws.conn()
            .execute("UPDATE chunks SET text = text", [])
            .expect("update");
        assert_eq!(get(), 2);
        // A commit of another connection.
        // (A real change: SQLite commits nothing for a row rewritten with its own values.)
        let other = crate::db::open(&dir.join(crate::workspace::DB_FILE), false).expect("other");
        other
            .execute("UPDATE vector_spaces SET created_at = 'changed'", [])
            .expect("update");
        drop(other);
        assert_eq!(get(), 3, "read again after another connection's commit");
        assert_eq!(get(), 3);
    }
}
