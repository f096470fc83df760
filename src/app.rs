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

/// The data directory's lock file (it holds the owning process id).
pub const LOCK_FILE: &str = ".lock";

/// An exclusive lock on `<data>/.lock`, held while an app that runs jobs is open on the
/// directory (the server, `enclave ingest`): a second one is refused rather than racing the
/// first (two schedulers on one job queue, two Tantivy writers, index readers and caches that
/// never see the other process's writes). Management commands (`App::open_for_management`)
/// take no lock: they write the control plane (SQLite, safe beside a server) and create or
/// remove workspace folders, which a server is built to see.
struct DataDirLock(std::sync::Mutex<Option<std::fs::File>>);

impl DataDirLock {
    fn acquire(dir: &Path) -> Result<DataDirLock> {
        use std::io::{Read, Write};
        crate::perms::create_dir_all(dir)?;
        let mut file = crate::perms::private_file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0)?;
                writeln!(file, "{}", std::process::id())?;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder
                    .trim()
                    .parse::<u32>()
                    .map(|pid| format!(" (process {pid})"))
                    .unwrap_or_default();
                return Err(Error::Conflict(format!(
                    "the data directory {} is in use by another enclave process{holder}: \
                     stop it first, or do this through its HTTP API",
                    dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                tracing::warn!(
                    data_dir = %dir.display(),
                    "file locks are not supported here: nothing stops a second process on this data directory"
                );
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        Ok(DataDirLock(std::sync::Mutex::new(Some(file))))
    }

    fn release(&self) {
        if let Ok(mut f) = self.0.lock() {
            // Closing the file releases the lock.
            f.take();
        }
    }
}

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
    /// Held from `open` to `shutdown` (or drop).
    lock: DataDirLock,
    /// Plans' limits, quota ledger, rate limits (`crate::governance`).
    governance: crate::governance::Governance,
}

/// A workspace with the live statistics of its store.
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceView {
    #[serde(flatten)]
    pub record: WorkspaceRecord,
    pub stats: Stats,
}

impl App {
    /// Takes the data directory's lock (`Conflict` while another process holds it), opens the
    /// control plane and settles the operator token. Returns the app and, on a first start
    /// without `ENCLAVE_ADMIN_TOKEN`, the generated token to print once.
    pub fn open(config: Config) -> Result<(Arc<App>, AdminTokenSource)> {
        let lock = DataDirLock::acquire(&config.data_dir)?;
        Self::open_with(config, lock)
    }

    /// As [`App::open`], without the data directory's lock: for management commands, which may
    /// run beside a server. Such an app must not run jobs.
    pub fn open_for_management(config: Config) -> Result<(Arc<App>, AdminTokenSource)> {
        Self::open_with(config, DataDirLock(std::sync::Mutex::new(None)))
    }

    fn open_with(config: Config, lock: DataDirLock) -> Result<(Arc<App>, AdminTokenSource)> {
        // What an older version created world-readable is made private before anything is read.
        crate::perms::create_dir_all(&config.data_dir)?;
        crate::perms::tighten_data_dir(&config.data_dir);
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
        let governance = crate::governance::Governance::new(identity.clock().clone());
        let app = App {
            governance,
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
            lock,
        };
        Ok((Arc::new(app), source))
    }

    /// Governance's state: limits cache, quota ledger, rate limits.
    pub fn governance(&self) -> &crate::governance::Governance {
        &self.governance
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
        let org = self.control.update_org(org.id, patch)?;
        // Governance hook: a new plan means new limits.
        self.governance.invalidate_limits();
        Ok(org)
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

    /// Deletes an org and every one of its workspaces: a soft delete (governance hook: records
    /// marked, stores closed, data kept for the grace period and purged by the upkeep), or with
    /// `purge` removed at once (the operator's `?purge=true`).
    pub fn delete_org(&self, key: &str, purge: bool) -> Result<()> {
        let org = self.control.get_org(key)?;
        self.with_reserve(|| crate::governance::lifecycle::delete_org(self, org.id, purge))
    }

    // ---- workspaces ----

    /// Creates a workspace: its store first (so a record never points at a missing folder),
    /// then its record; a store whose record loses a slug race is removed again.
    pub fn create_workspace(&self, org_key: &str, new: NewWorkspace) -> Result<WorkspaceRecord> {
        let org = self.control.get_org(org_key)?;
        let (name, slug, settings) = new.validate()?;
        // Governance hook: room for one more workspace under the org's plan, held until the
        // record exists (or given back on failure).
        let room = crate::governance::reserve(
            self,
            org.id,
            &[(crate::governance::quota::Counted::Workspaces, 1)],
        )?;
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
                room.commit();
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

    /// Deletes a workspace: the record is marked deleted (from then on nothing opens it) and
    /// the store leaves the cache (governance hook: a soft delete, purged after the grace period
    /// by the upkeep, or at once with `purge`).
    pub fn delete_workspace(&self, id: Uuid, purge: bool) -> Result<()> {
        let record = self.control.get_workspace(id)?;
        self.with_reserve(|| {
            crate::governance::lifecycle::delete_workspace(self, id, record.org_id, purge)
        })
    }

    /// Takes a store out of the cache and removes its folder. The folder is first renamed into
    /// the trash (atomic), so a half-removed folder is never mistaken for a store; requests that
    /// still hold the store keep working on their open files until they finish.
    pub(crate) fn remove_store(&self, id: Uuid) {
        self.registry.remove(id);
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

    /// Removes the folders of workspaces whose record is deleted (one by one or with their
    /// org) and whose grace period is over (governance hook: soft-deleted ones are kept until
    /// then), including any a crash left in place. Asks the control plane which workspaces
    /// are due and looks only at their folders: `data/` is not scanned. Run in the
    /// background after start and by the periodic upkeep. Returns how many folders it removed.
    pub fn remove_deleted_stores(&self) -> usize {
        crate::governance::lifecycle::purge_due(self).0
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
        self.lock.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_app_at_a_time_per_data_dir() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = || {
            let mut c = Config::for_data_dir(tmp.path());
            c.admin_token = Some("operator-token-for-unit-tests".into());
            c
        };
        let (first, _) = App::open(config()).expect("open");
        let held = std::fs::read_to_string(tmp.path().join(LOCK_FILE)).expect("lock file");
        assert_eq!(held.trim(), std::process::id().to_string());
        match App::open(config()) {
            Err(Error::Conflict(m)) => assert!(m.contains("in use"), "{m}"),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a second app opened the same data dir"),
        }
        // Released at shutdown, even while the first app is still referenced.
        first.shutdown();
        let (second, _) = App::open(config()).expect("reopen after shutdown");
        drop(second);
        // And released when an app is dropped without a shutdown.
        App::open(config()).expect("reopen after drop");
        drop(first);
    }
}
