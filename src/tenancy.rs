//! [`Tenancy`], the lifecycle of tenants: organizations and workspaces (create, read, update,
//! delete, suspend and reactivate), which need both the control plane (records) and the
//! registry of stores (a workspace's folder). Named `Tenancy`, not `Control`, so that it is not
//! confused with `control::ControlPlane`, the database it writes.
//!
//! Every operation for a principal takes the verified context ([`OrgAccess`] /
//! [`WorkspaceAccess`]) and checks its action here. Operator-only operations with no tenant
//! (create an org, list every org) are reached through the `Operator` extractor or the command
//! line. A status change notifies identity (its status cache) and knowledge (queued jobs of a
//! reactivated org resume) directly: both sit below tenancy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use crate::control::{
    ControlPlane, Invitation, NewOrg, NewWorkspace, Org, OrgPatch, OrgStatus, Page, WorkspacePatch,
    WorkspaceRecord,
};
use crate::error::{Error, Result};
use crate::governance::quota::Counted;
use crate::governance::Governance;
use crate::identity::{Action, Identity, OrgAccess, Role, WorkspaceAccess};
use crate::knowledge::Knowledge;
use crate::workspace::{self, Handle, Registry, Stats};

mod adopt;
mod lifecycle;
pub use lifecycle::UPKEEP_INTERVAL;

/// Folder under the data dir where deleted workspace folders go before removal.
pub const TRASH_DIR: &str = ".trash";

/// A workspace with the live statistics of its store.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkspaceView {
    #[serde(flatten)]
    pub record: WorkspaceRecord,
    pub stats: Stats,
}

/// The tenancy service. Private fields: reach it through `App::tenancy`.
pub struct Tenancy {
    data_dir: PathBuf,
    control: Arc<ControlPlane>,
    registry: Registry,
    identity: Arc<Identity>,
    knowledge: Arc<Knowledge>,
    /// Forgets a removed workspace's metrics (its embedding backlog, its storage sample);
    /// the quotas of orgs' plans (workspaces), their limits cache.
    governance: Arc<Governance>,
    /// Days a deleted org or workspace is kept, restorable, before it is purged.
    deletion_grace_days: u64,
}

impl Tenancy {
    pub fn new(
        data_dir: &Path,
        control: Arc<ControlPlane>,
        registry: Registry,
        identity: Arc<Identity>,
        knowledge: Arc<Knowledge>,
        governance: Arc<Governance>,
        deletion_grace_days: u64,
    ) -> Tenancy {
        Tenancy {
            data_dir: data_dir.to_path_buf(),
            control,
            registry,
            identity,
            knowledge,
            governance,
            deletion_grace_days,
        }
    }

    fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    // ---- organizations ----

    /// Creates an org (operator only: the route takes the `Operator` extractor; the command
    /// line acts as the operator).
    pub fn create_org(&self, new: NewOrg) -> Result<Org> {
        Ok(self.create_org_with_owner(new)?.0)
    }

    /// Creates an org (operator only, as [`Tenancy::create_org`]) and, when `owner_email`
    /// names its first owner, that owner's invitation and its token (the email is checked
    /// before the org exists).
    pub fn create_org_with_owner(
        &self,
        new: NewOrg,
    ) -> Result<(Org, Option<(Invitation, String)>)> {
        let owner = new
            .owner_email
            .as_deref()
            .map(crate::identity::normalize_email)
            .transpose()?;
        let org = self.control.create_org(new)?;
        let invitation = match owner {
            Some(email) => {
                let access = self.identity.operator_org(&org.id.to_string())?;
                Some(self.identity.invite(&access, &email, Role::Owner)?)
            }
            None => None,
        };
        Ok((org, invitation))
    }

    /// Every org (operator only, as [`Tenancy::create_org`]).
    pub fn list_orgs(&self, page: Page) -> Result<Vec<Org>> {
        self.control.list_orgs(page)
    }

    /// The org of the context (`OrgRead`).
    pub fn get_org(&self, access: &OrgAccess) -> Result<Org> {
        access.require(Action::OrgRead)?;
        Ok(access.org().clone())
    }

    /// Updates the org (`OrgUpdate`; plan, status and limits are billing fields:
    /// `OrgBillingUpdate`, the operator's).
    pub fn update_org(&self, access: &OrgAccess, patch: OrgPatch) -> Result<Org> {
        if patch.names_billing_fields() {
            access.require(Action::OrgBillingUpdate)?;
        }
        access.require(Action::OrgUpdate)?;
        let org = self.control.update_org(access.org_id(), patch)?;
        // A new plan means new limits.
        self.governance.invalidate_limits();
        Ok(org)
    }

    /// Suspends or reactivates the org (`OrgSuspend`).
    pub fn set_org_status(&self, access: &OrgAccess, status: OrgStatus) -> Result<Org> {
        access.require(Action::OrgSuspend)?;
        let org = self.control.set_org_status(access.org_id(), status)?;
        self.identity.invalidate_status();
        if status == OrgStatus::Active {
            // Jobs queued while the org was suspended resume (their markers were kept).
            self.knowledge.wake_org_jobs(org.id);
        }
        Ok(org)
    }

    // ---- workspaces ----

    /// Creates a workspace in the org (`WorkspaceCreate`): its store first (so a record never
    /// points at a missing folder), then its record; a store whose record loses a slug race is
    /// removed again.
    pub fn create_workspace(
        &self,
        access: &OrgAccess,
        new: NewWorkspace,
    ) -> Result<WorkspaceRecord> {
        access.require(Action::WorkspaceCreate)?;
        let org = access.org_id();
        let (name, slug, settings) = new.validate()?;
        // Governance hook: room for one more workspace under the org's plan, held until the
        // record exists (or given back on failure).
        let room = self
            .governance
            .reserve(org, None, &[(Counted::Workspaces, 1)])?;
        if self.control.workspace_slug_taken(org, &slug)? {
            return Err(Error::Conflict(format!(
                "a workspace with slug {slug:?} already exists in this organization"
            )));
        }
        let id = crate::ids::new_id();
        let dir = workspace::dir_of(self.data_dir(), id);
        if let Err(e) = workspace::create(&dir) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        match self
            .control
            .insert_workspace(id, org, &name, &slug, &settings)
        {
            Ok(rec) => {
                room.commit();
                tracing::info!(org_id = %org, workspace_id = %id, "workspace created");
                Ok(rec)
            }
            Err(e) => {
                if let Err(rm) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(workspace_id = %id, error = %rm, "could not remove store of failed creation");
                }
                Err(e)
            }
        }
    }

    /// The org's workspaces (`WorkspaceList`).
    pub fn list_workspaces(&self, access: &OrgAccess, page: Page) -> Result<Vec<WorkspaceRecord>> {
        access.require(Action::WorkspaceList)?;
        self.control.list_workspaces(access.org_id(), page)
    }

    /// The org's workspace named by `slug` (`WorkspaceList`: whoever may list the org's
    /// workspaces may find one by its slug).
    pub fn workspace_by_slug(&self, access: &OrgAccess, slug: &str) -> Result<WorkspaceRecord> {
        access.require(Action::WorkspaceList)?;
        self.control.workspace_by_slug(access.org_id(), slug)
    }

    /// A handle to the open store of an existing workspace, by id, for operators' tools and
    /// tests. The record is checked first, so a deleted workspace is never reopened.
    pub fn open_workspace(&self, id: Uuid) -> Result<(WorkspaceRecord, Handle)> {
        let record = self.control.get_workspace(id)?;
        let handle = self.registry.get(id)?;
        Ok((record, handle))
    }

    /// The workspace's record with its store's live statistics (`WorkspaceRead`).
    pub fn get_workspace(&self, ctx: &WorkspaceAccess) -> Result<WorkspaceView> {
        ctx.require(Action::WorkspaceRead)?;
        let (record, handle) = self.open_workspace(ctx.workspace_id())?;
        let stats = handle.stats()?;
        Ok(WorkspaceView { record, stats })
    }

    /// (`WorkspaceUpdate`)
    pub fn update_workspace(
        &self,
        ctx: &WorkspaceAccess,
        patch: WorkspacePatch,
    ) -> Result<WorkspaceRecord> {
        ctx.require(Action::WorkspaceUpdate)?;
        self.control.update_workspace(ctx.workspace_id(), patch)
    }

    /// Takes a store out of the registry and removes its folder. The folder is first renamed
    /// into the trash (atomic), so a half-removed folder is never mistaken for a store; requests
    /// that still hold the store keep working on their open files until they finish.
    fn remove_store(&self, id: Uuid) {
        self.registry.remove(id);
        self.governance.forget_workspace(id);
        let dir = workspace::dir_of(self.data_dir(), id);
        let trash = self.data_dir().join(TRASH_DIR);
        let target = trash.join(format!(
            "{}-{}",
            id.hyphenated(),
            crate::ids::new_id().simple()
        ));
        let moved =
            crate::perms::create_dir_all(&trash).and_then(|_| std::fs::rename(&dir, &target));
        let to_remove: PathBuf = match moved {
            Ok(()) => target,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(workspace_id = %id, error = %e, "could not move store to trash");
                dir
            }
        };
        if let Err(e) = std::fs::remove_dir_all(&to_remove) {
            tracing::warn!(workspace_id = %id, error = %e, "could not remove store folder");
        }
    }

    /// Runs a write that frees space (a deletion); when it fails for lack of space, releases
    /// the storage reserve and tries once more.
    fn with_reserve<T>(&self, f: impl Fn() -> Result<T>) -> Result<T> {
        match f() {
            Err(e) if e.is_storage_full() && workspace::reserve::release(self.data_dir()) => f(),
            other => other,
        }
    }

    /// Removes what an interrupted deletion left in the trash. Run in the background after
    /// start, never before serving.
    pub fn empty_trash(&self) {
        let trash = self.data_dir().join(TRASH_DIR);
        if let Ok(entries) = std::fs::read_dir(&trash) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Removes the folders of deleted workspaces whose grace period is over (soft-deleted ones
    /// are kept until then), including any a crash left in place: [`Tenancy::purge_due`].
    /// Asks the control plane which workspaces are due and looks only at their folders:
    /// `data/` is not scanned. Returns how many it purged.
    pub fn remove_deleted_stores(&self) -> usize {
        self.purge_due().0
    }

    /// Background upkeep of the data directory after start: the trash, folders of deleted
    /// workspaces, the storage reserve.
    pub fn tidy_data_dir(&self) {
        self.empty_trash();
        self.remove_deleted_stores();
        self.ensure_storage_reserve();
    }

    /// Writes the storage reserve when it is missing (released for a deletion on a full disk)
    /// and the disk has room again.
    pub fn ensure_storage_reserve(&self) {
        match workspace::reserve::ensure(self.data_dir()) {
            Ok(true) => tracing::info!("storage reserve written"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot write the storage reserve"),
        }
    }
}
