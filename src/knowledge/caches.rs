//! Knowledge's state derived from an open workspace, kept with it as an extension of the
//! store ([`Workspace::extension`]): the vector codes ([`Ann`]) and the allowed chunks of
//! recent filters ([`AllowedCache`]). Both are checked against SQLite, never trusted (see
//! ARCHITECTURE.md, "Derived in-memory state").

use std::sync::Arc;

use super::ann::Ann;
use super::search::AllowedCache;
use crate::workspace::Workspace;

/// The derived caches of one open workspace.
#[derive(Debug, Default)]
pub struct Caches {
    /// Binary codes of the vector spaces, kept current by the store's row changes.
    pub ann: Ann,
    /// Chunks allowed by recent filters, checked against the store's data version.
    pub allowed: AllowedCache,
}

/// The caches of `ws`, made on first use. A new [`Ann`] holds no codes, so the writes before
/// it follows the store's row changes are read from SQLite when it loads.
pub fn of(ws: &Workspace) -> Arc<Caches> {
    ws.extension(|slots| {
        let caches = Caches::default();
        let ann = caches.ann.clone();
        slots.observe_rows(move |table, rowid| ann.note(table, rowid));
        caches
    })
}
