//! Workspaces whose store comes from elsewhere (issue 13, `durability`): a new workspace whose
//! store is made before its record exists (an archive's import, a backup's workspace restored
//! under a new id), and a live workspace whose store is replaced by a backup's copy. The
//! archive and backup formats are `durability`'s; what a workspace's record, quota, registry
//! entry and queued jobs need is here, beside `create_workspace` and the soft-delete lifecycle.

use std::path::Path;

use uuid::Uuid;

use super::Tenancy;
use crate::control::{NewWorkspace, WorkspaceRecord};
use crate::error::{Error, Result};
use crate::governance::quota::{Counted, WORKSPACE_CONTENTS};
use crate::identity::{Action, OrgAccess};
use crate::workspace;

impl Tenancy {
    /// Creates a workspace in the org (`WorkspaceCreate`) whose store `make` builds at the
    /// folder it is given (with the new id) before the record exists, so a record never points
    /// at a half-made store. One workspace plus `asks` (the documents and bytes it brings) are
    /// reserved under the org's plan first and held until the record exists. On any failure the
    /// store is taken out of the registry and its folder removed. Unfinished jobs the store
    /// holds are queued.
    pub fn create_workspace_from(
        &self,
        access: &OrgAccess,
        new: NewWorkspace,
        asks: &[(Counted, i64)],
        make: impl FnOnce(Uuid, &Path) -> Result<()>,
    ) -> Result<WorkspaceRecord> {
        access.require(Action::WorkspaceCreate)?;
        let org = access.org_id();
        let (name, slug, settings) = new.validate()?;
        let mut all = vec![(Counted::Workspaces, 1)];
        all.extend(asks.iter().copied().filter(|(_, n)| *n > 0));
        let room = self.governance.reserve(org, None, &all)?;
        if self.control.workspace_slug_taken(org, &slug)? {
            return Err(Error::Conflict(format!(
                "a workspace with slug {slug:?} already exists in this organization: choose \
                 another slug"
            )));
        }
        let id = crate::ids::new_id();
        let dir = workspace::dir_of(self.data_dir(), id);
        let made = make(id, &dir).and_then(|()| {
            self.control
                .insert_workspace(id, org, &name, &slug, &settings)
        });
        match made {
            Ok(rec) => {
                room.commit();
                self.governance.freed(org, &WORKSPACE_CONTENTS);
                self.knowledge.resume_workspace_jobs(id, org);
                Ok(rec)
            }
            Err(e) => {
                self.registry.remove(id);
                if let Err(rm) = std::fs::remove_dir_all(&dir) {
                    if rm.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(workspace_id = %id, error = %rm, "could not remove the store of a failed creation");
                    }
                }
                Err(e)
            }
        }
    }

    /// Replaces the store of live workspace `ws` with the folder `prepared` (a backup's copy,
    /// checked by the caller); the old folder is moved to `old_to` (a staging folder the
    /// caller removes). Operator only (the route takes the `Operator` extractor; the command
    /// line acts as the operator). The store is out of the registry during the swap (a request
    /// arriving then gets `404`; the swap waits for requests holding the old store to finish,
    /// `503` if one outlasts the registry's wait), then readmitted and opened again, which
    /// reports a damaged copy here. A deleted
    /// workspace is refused: restore it first (`POST /v1/workspaces/{ws}/restore`).
    pub fn replace_workspace_store(
        &self,
        ws: Uuid,
        prepared: &Path,
        old_to: &Path,
    ) -> Result<WorkspaceRecord> {
        let rec = self.control.get_workspace(ws)?;
        self.registry.remove(ws);
        // No instance of the old store may outlive the swap: a holder would open files by
        // path in the new folder (readers, index segments), and the registry would take it
        // back after the readmission. Wait for the holders (bounded), else refuse.
        if let Err(e) = self.registry.wait_closed(ws) {
            self.registry.readmit(ws);
            return Err(e);
        }
        let dir = workspace::dir_of(self.data_dir(), ws);
        // An offloaded workspace may have no local folder (tiered storage): nothing to move.
        let moved_old = match std::fs::rename(&dir, old_to) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            r => r.map(|()| true),
        };
        let swapped = moved_old.and_then(|moved| {
            std::fs::rename(prepared, &dir).inspect_err(|_| {
                if moved {
                    let _ = std::fs::rename(old_to, &dir);
                }
            })
        });
        // Tiered storage: the new folder is the current copy, not a stale one of the object
        // store's generation (before readmitting, so no open hydrates over it).
        let swapped = swapped
            .map_err(crate::error::Error::from)
            .and_then(|()| self.control.tier_local(ws));
        self.registry.readmit(ws);
        swapped?;
        self.governance.forget_workspace(ws);
        self.governance.freed(rec.org_id, &WORKSPACE_CONTENTS);
        self.identity.invalidate_status();
        drop(self.registry.get(ws)?);
        self.knowledge.resume_workspace_jobs(ws, rec.org_id);
        Ok(rec)
    }

    /// Whether workspace `ws` is deleted but still restorable (within its grace period), and
    /// until when.
    pub fn deleted_workspace_until(&self, ws: Uuid) -> Result<Option<String>> {
        self.control.workspace_restorable_until(ws)
    }
}
