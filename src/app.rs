//! The application: the control plane and the registry of open workspaces together, and the
//! domain operations that need both (creating a workspace makes a record and a store; deleting
//! one closes and removes its folder). HTTP handlers and CLI commands call these functions.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use crate::config::Config;
use crate::control::{
    AdminTokenSource, ControlPlane, NewOrg, NewWorkspace, Org, OrgPatch, OrgStatus, Page,
    WorkspacePatch, WorkspaceRecord,
};
use crate::error::{Error, Result};
use crate::workspace::{self, Handle, Registry, Stats};

/// Folder under the data dir where deleted workspace folders go before removal.
pub const TRASH_DIR: &str = ".trash";

pub struct App {
    pub config: Config,
    pub control: ControlPlane,
    pub registry: Registry,
    operator_digest: Option<[u8; 32]>,
    draining: AtomicBool,
    pub http_metrics: crate::http::system::HttpMetrics,
    /// Identity's in-memory state: status cache, key usage, login throttle, signing keys.
    pub identity: crate::identity::IdentityState,
    /// Chat's state: the master key that opens provider keys, the provider HTTP client, MCP
    /// sessions.
    pub chat: crate::chat::ChatState,
    /// The server-wide job scheduler (ingestion, embedding, re-embedding).
    pub scheduler: crate::knowledge::scheduler::Scheduler,
    /// Embedding models, shared by all workspaces.
    pub embedders: crate::knowledge::Embedders,
    /// Hybrid-search fusion parameters.
    pub fusion: std::sync::RwLock<crate::knowledge::search::Fusion>,
}

/// A workspace with the live statistics of its store.
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceView {
    #[serde(flatten)]
    pub record: WorkspaceRecord,
    pub stats: Stats,
}

impl App {
    /// Opens the control plane and settles the operator token. Returns the app and, on a first
    /// start without `ENCLAVE_ADMIN_TOKEN`, the generated token to print once.
    pub fn open(config: Config) -> Result<(Arc<App>, AdminTokenSource)> {
        let control = ControlPlane::open(&config.data_dir)?;
        let source = control.init_operator_token(config.admin_token.as_deref())?;
        let operator_digest = control.operator_token_digest()?;
        let identity = crate::identity::IdentityState::default();
        identity.set_signing_keys(control.signing_keys()?);
        let (chat, key_source) = crate::chat::ChatState::new(&config)?;
        if key_source == crate::crypto::MasterKeySource::Generated {
            tracing::info!(
                "generated the master key that seals provider API keys: {}/{} (keep it with the data)",
                config.data_dir.display(),
                crate::crypto::MASTER_KEY_FILE
            );
        }
        let registry = Registry::new(
            &config.data_dir,
            config.max_open_workspaces,
            Duration::from_secs(config.open_wait_secs),
        );
        let scheduler = crate::knowledge::scheduler::Scheduler::new(&config.data_dir);
        let app = App {
            scheduler,
            embedders: Default::default(),
            fusion: Default::default(),
            config,
            control,
            registry,
            operator_digest,
            draining: AtomicBool::new(false),
            http_metrics: Default::default(),
            identity,
            chat,
        };
        Ok((Arc::new(app), source))
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Whether `presented` is the operator token (constant-time comparison).
    pub fn is_operator_token(&self, presented: &str) -> bool {
        self.operator_digest
            .as_ref()
            .is_some_and(|d| crate::control::operator_token_matches(d, presented))
    }

    // ---- organizations ----

    pub fn create_org(&self, new: NewOrg) -> Result<Org> {
        self.control.create_org(new)
    }

    pub fn get_org(&self, key: &str) -> Result<Org> {
        self.control.get_org(key)
    }

    pub fn list_orgs(&self, page: Page) -> Result<Vec<Org>> {
        self.control.list_orgs(page)
    }

    pub fn update_org(&self, key: &str, patch: OrgPatch) -> Result<Org> {
        let org = self.control.get_org(key)?;
        self.control.update_org(org.id, patch)
    }

    pub fn set_org_status(&self, key: &str, status: OrgStatus) -> Result<Org> {
        let org = self.control.get_org(key)?;
        let org = self.control.set_org_status(org.id, status)?;
        self.identity.invalidate_status();
        if status == OrgStatus::Active {
            // Jobs queued while the org was suspended resume (their markers were kept).
            self.wake_org_jobs(org.id);
        }
        Ok(org)
    }

    /// Deletes an org and every one of its workspaces (records first, then folders).
    pub fn delete_org(&self, key: &str) -> Result<()> {
        let org = self.control.get_org(key)?;
        let ids = self.control.delete_org(org.id)?;
        self.identity.invalidate_status();
        for id in ids {
            self.remove_store(id);
        }
        tracing::info!(org_id = %org.id, "organization deleted");
        Ok(())
    }

    // ---- workspaces ----

    /// Creates a workspace: its store first (so a record never points at a missing folder),
    /// then its record; a store whose record loses a slug race is removed again.
    pub fn create_workspace(&self, org_key: &str, new: NewWorkspace) -> Result<WorkspaceRecord> {
        let org = self.control.get_org(org_key)?;
        let (name, slug, settings) = new.validate()?;
        if self.control.workspace_slug_taken(org.id, &slug)? {
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
            .insert_workspace(id, org.id, &name, &slug, &settings)
        {
            Ok(rec) => {
                tracing::info!(org_id = %org.id, workspace_id = %id, "workspace created");
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

    pub fn list_workspaces(&self, org_key: &str, page: Page) -> Result<Vec<WorkspaceRecord>> {
        let org = self.control.get_org(org_key)?;
        self.control.list_workspaces(org.id, page)
    }

    /// A handle to the open store of an existing workspace. The record is checked first, so a
    /// deleted workspace is never reopened.
    pub fn open_workspace(&self, id: Uuid) -> Result<(WorkspaceRecord, Handle)> {
        let record = self.control.get_workspace(id)?;
        let handle = self.registry.get(id)?;
        Ok((record, handle))
    }

    pub fn get_workspace(&self, id: Uuid) -> Result<WorkspaceView> {
        let (record, handle) = self.open_workspace(id)?;
        let stats = handle.stats()?;
        Ok(WorkspaceView { record, stats })
    }

    pub fn update_workspace(&self, id: Uuid, patch: WorkspacePatch) -> Result<WorkspaceRecord> {
        self.control.update_workspace(id, patch)
    }

    /// Deletes a workspace: the record is marked deleted (from then on nothing opens it), the
    /// store leaves the cache, and its folder is removed.
    pub fn delete_workspace(&self, id: Uuid) -> Result<()> {
        let record = self.control.get_workspace(id)?;
        self.control.mark_workspace_deleted(id)?;
        self.identity.invalidate_status();
        self.remove_store(id);
        tracing::info!(org_id = %record.org_id, workspace_id = %id, "workspace deleted");
        Ok(())
    }

    /// Takes a store out of the cache and removes its folder. The folder is first renamed into
    /// the trash (atomic), so a half-removed folder is never mistaken for a store; requests that
    /// still hold the store keep working on their open files until they finish.
    fn remove_store(&self, id: Uuid) {
        self.registry.remove(id);
        let dir = workspace::dir_of(self.data_dir(), id);
        let trash = self.data_dir().join(TRASH_DIR);
        let target = trash.join(format!(
            "{}-{}",
            id.hyphenated(),
            crate::ids::new_id().simple()
        ));
        let moved = std::fs::create_dir_all(&trash).and_then(|_| std::fs::rename(&dir, &target));
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

    /// Marks the server as draining: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Flushes everything for a clean stop: writers committed, WALs checkpointed.
    pub fn shutdown(&self) {
        self.scheduler.stop();
        self.registry.shutdown();
        if let Err(e) = self.flush_key_usage() {
            tracing::warn!(error = %e, "could not flush API key usage");
        }
        if let Err(e) = self.control.checkpoint() {
            tracing::warn!(error = %e, "control plane checkpoint failed");
        }
    }
}
