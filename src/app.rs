//! The composition root: [`App`] opens the control plane, the registry of stores and the
//! master key, builds the four domain services and governance over them and wires their narrow
//! dependencies (knowledge's `OrgProviders` is chat's `ProviderKeys`; chat's `Retriever` is
//! knowledge; tenancy notifies identity and knowledge of status changes; knowledge and chat
//! meter their usage into governance), and owns the lifecycle (the data directory's lock,
//! draining, shutdown, HTTP metrics). It has no domain operations of its own: handlers and CLI
//! commands call `app.identity()`, `app.knowledge()`, `app.chat()`, `app.tenancy()`,
//! `app.governance()`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::chat::{Chat, ProviderKeys};
use crate::config::Config;
use crate::control::{AdminTokenSource, ControlPlane};
use crate::error::{Error, Result};
use crate::governance::Governance;
use crate::identity::Identity;
use crate::knowledge::Knowledge;
use crate::task::Draining;
use crate::tenancy::Tenancy;
use crate::workspace::Registry;

pub use crate::tenancy::{WorkspaceView, TRASH_DIR};

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

/// The composition root. Private fields; the services are reached through accessors.
pub struct App {
    config: Arc<Config>,
    control: Arc<ControlPlane>,
    registry: Registry,
    identity: Arc<Identity>,
    knowledge: Arc<Knowledge>,
    chat: Arc<Chat>,
    tenancy: Tenancy,
    draining: Draining,
    http_metrics: crate::http::system::HttpMetrics,
    governance: Arc<Governance>,
    /// Held from `open` to `shutdown` (or drop).
    lock: DataDirLock,
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
        let control = Arc::new(ControlPlane::open(&config.data_dir)?);
        let source = control.init_operator_token(config.admin_token.as_deref())?;
        let identity = Arc::new(Identity::new(control.clone())?);
        let (keys, key_source) = ProviderKeys::load(&config, control.clone())?;
        if key_source == crate::crypto::MasterKeySource::Generated {
            tracing::info!(
                "generated the master key that seals provider API keys: {}/{} (keep it with the data)",
                config.data_dir.display(),
                crate::crypto::MASTER_KEY_FILE
            );
        }
        let keys = Arc::new(keys);
        let registry = Registry::new(
            &config.data_dir,
            config.max_open_workspaces,
            Duration::from_secs(config.open_wait_secs),
        );
        let draining = Draining::default();
        let governance = Arc::new(Governance::open(
            &config.data_dir,
            control.clone(),
            registry.clone(),
            identity.clone(),
        )?);
        // Identity's members and API keys are held through governance's quotas (weakly:
        // governance is built over identity).
        let quota: Arc<dyn crate::identity::SeatQuota> = governance.clone();
        identity.set_quota(Arc::downgrade(&quota));
        let knowledge = Arc::new(Knowledge::new(
            &config,
            control.clone(),
            registry.clone(),
            keys.clone(),
            draining.clone(),
            governance.clone(),
        ));
        let chat = Arc::new(Chat::new(
            &config,
            registry.clone(),
            keys,
            knowledge.clone(),
            governance.clone(),
        )?);
        let tenancy = Tenancy::new(
            &config.data_dir,
            control.clone(),
            registry.clone(),
            identity.clone(),
            knowledge.clone(),
            governance.clone(),
            config.deletion_grace_days,
        );
        let app = App {
            config: Arc::new(config),
            control,
            registry,
            identity,
            knowledge,
            chat,
            tenancy,
            draining,
            http_metrics: Default::default(),
            governance,
            lock,
        };
        Ok((Arc::new(app), source))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Authentication, the verified contexts, users, members, keys, tokens.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Documents, jobs, search, embedders; the scheduler and job workers.
    pub fn knowledge(&self) -> &Arc<Knowledge> {
        &self.knowledge
    }

    /// Agents, chat sessions, the chat engine, org providers, MCP.
    pub fn chat(&self) -> &Arc<Chat> {
        &self.chat
    }

    /// Orgs and workspaces: create, read, update, delete, suspend; the data dir's upkeep.
    pub fn tenancy(&self) -> &Tenancy {
        &self.tenancy
    }

    /// The control plane itself: for management commands and tests that need a row the
    /// services do not expose. Domain code goes through the services.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.control
    }

    /// The registry of open stores (writer sweeps, metrics, tests).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Audit trails, usage metering and the server's governance metrics; plans and limits,
    /// quotas, rate limits.
    pub fn governance(&self) -> &Arc<Governance> {
        &self.governance
    }

    pub fn http_metrics(&self) -> &crate::http::system::HttpMetrics {
        &self.http_metrics
    }

    /// Marks the server as draining: `/readyz` answers 503 from now on, `?wait=true` waits end.
    pub fn start_draining(&self) {
        self.draining.start();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_draining()
    }

    /// Flushes everything for a clean stop: writers committed, WALs checkpointed.
    pub fn shutdown(&self) {
        self.knowledge.scheduler().stop();
        self.registry.shutdown();
        if let Err(e) = self.identity.flush_key_usage() {
            tracing::warn!(error = %e, "could not flush API key usage");
        }
        if let Err(e) = self.governance.flush_usage() {
            tracing::warn!(error = %e, "could not flush usage counters");
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
