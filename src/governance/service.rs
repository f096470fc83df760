//! The governance service, [`Governance`]: recording what a request did (audit entry, usage,
//! latency) from one place, the request middleware; counting the usage that only a domain sees
//! (chat tokens from chat; ingested bytes and job quanta from knowledge; refusals from whoever
//! refuses); listing and verifying audit chains; usage reports. `App` owns it and hands an `Arc`
//! of it to knowledge, chat and tenancy; it depends on `control`, `identity` and `workspace`
//! only, never on a service above it.
//!
//! Why one choke point: the middleware sees, for every request, the verified principal (the
//! auth extractors note it), the matched route template, the verified org and workspace, the
//! outcome (status) and the request id. Recording there means no handler can forget its audit
//! entry or its usage count, and routes added later (plans, restores) are audited by default
//! (an unknown state-changing route is recorded under its method and template). What only a
//! handler knows, the id of what it created, it notes with `http::middleware::record_target`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use rusqlite::Connection;
use uuid::Uuid;

use super::audit::{self, Chain, Entry, Filter, Verification};
use super::metrics::Metrics;
use super::plans::LimitsCache;
use super::quota::Ledger;
use super::ratelimit::RateLimits;
use super::routes::{self, Scope};
use super::usage::{self, Metric, Refusal, Usage};
use crate::control::{ControlPlane, Page};
use crate::error::{Error, Resource, Result};
use crate::identity::{Action, Identity, OrgAccess, WorkspaceAccess};
use crate::workspace::{Handle, Registry};

/// How often the server writes its usage counters to the control plane: what a `kill -9` can
/// lose at most.
pub const USAGE_FLUSH: Duration = Duration::from_secs(5);

/// How often a busy workspace's storage and document count are sampled, at most.
pub const STORAGE_SAMPLE_EVERY: Duration = Duration::from_secs(300);

/// The governance service: a connection to `control.db` of its own (the control chain and the
/// usage table), the usage counters, the metrics, and the workspaces due a storage sample. It
/// reads the control plane (workspace records, org slugs), opens workspace stores through the
/// registry (their trails) and takes "today" from identity's clock (which tests advance).
/// Private fields: reach it through `App::governance`; knowledge and chat hold it to meter
/// what only they see.
pub struct Governance {
    pub(super) db: Mutex<Connection>,
    pub(super) usage: Usage,
    metrics: Metrics,
    /// Workspaces with activity since their last storage sample: their org and when they were
    /// last sampled.
    touched: Mutex<HashMap<Uuid, (Uuid, Option<Instant>)>>,
    pub(super) control: Arc<ControlPlane>,
    pub(super) registry: Registry,
    pub(super) identity: Arc<Identity>,
    /// Part A: the orgs' effective limits (cached), the quota ledger, the rate-limit buckets
    /// (`quota`, `ratelimit`, `plans`, `monthly`).
    pub(super) limits: LimitsCache,
    pub(super) ledger: Ledger,
    pub(super) rates: RateLimits,
}

/// What one job quantum did for a workspace, as governance counts it.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuantumWork {
    /// Chunks written to the full-text index.
    pub indexed: u64,
    /// Chunks embedded (first embedding or re-embedding).
    pub embedded: u64,
    /// Estimated tokens of the texts embedded.
    pub embedded_tokens: u64,
}

impl Governance {
    /// Opens governance's connection to `control.db` (already migrated by the control plane).
    pub fn open(
        data_dir: &Path,
        control: Arc<ControlPlane>,
        registry: Registry,
        identity: Arc<Identity>,
    ) -> Result<Governance> {
        let conn = crate::db::open(&data_dir.join(crate::control::CONTROL_DB), false)?;
        // Rate limits follow identity's clock (a clone shares its offset: tests advance it).
        let rates = RateLimits::new(identity.clock().clone());
        Ok(Governance {
            db: Mutex::new(conn),
            usage: Usage::default(),
            metrics: Metrics::default(),
            touched: Mutex::new(HashMap::new()),
            control,
            registry,
            identity,
            limits: LimitsCache::default(),
            ledger: Ledger::default(),
            rates,
        })
    }

    pub(super) fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The usage counters (refusal totals for `/metrics`).
    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    /// The governance metrics (latency by route, ingest, embedding backlog).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Appends to the control plane's chain.
    pub fn append_control(&self, e: &Entry) -> Result<Entry> {
        audit::append(&mut self.db(), Chain::Control, e)
    }

    /// Writes the usage counted since the last flush to the control plane.
    pub fn flush_usage(&self) -> Result<usize> {
        self.usage.flush(&mut self.db())
    }

    /// Lists the control plane's chain.
    pub fn list_control(&self, f: &Filter, page: Page) -> Result<Vec<Entry>> {
        audit::list(&self.db(), Chain::Control, f, page)
    }

    pub fn verify_control(&self) -> Result<Verification> {
        audit::verify(&self.db(), Chain::Control)
    }

    /// The usage report of `q`, after a flush (so it includes everything counted so far).
    pub fn report(&self, q: &usage::Query) -> Result<Vec<usage::Row>> {
        let mut db = self.db();
        self.usage.flush(&mut db)?;
        usage::report(&db, q)
    }

    /// Forgets a removed workspace: its embedding backlog leaves the `/metrics` gauge and it
    /// is no longer due a storage sample. Its counted usage stays (flushed as usual).
    pub fn forget_workspace(&self, ws: Uuid) {
        self.metrics.forget(ws);
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ws);
    }

    fn touch(&self, org: Uuid, ws: Uuid) {
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(ws)
            .or_insert((org, None));
    }

    /// Today (UTC) by the app's clock (which tests advance).
    pub fn today(&self) -> NaiveDate {
        self.identity.clock().now().date_naive()
    }

    /// Counts `n` of `metric` for a workspace of `org` today.
    pub fn count(&self, org: Uuid, ws: Option<Uuid>, metric: Metric, n: u64) {
        self.usage.add(self.today(), org, ws, metric, n);
        if let Some(ws) = ws {
            self.touch(org, ws);
        }
    }

    /// Counts a refused request: a quota (`429 quota_exceeded`) or a rate limit (`429
    /// rate_limited`). Call it where the refusal is decided; it is cheap (atomics).
    pub fn record_refusal(&self, org: Uuid, ws: Option<Uuid>, kind: Refusal) {
        self.usage.refusal(self.today(), org, ws, kind);
    }

    /// A chat answer's tokens (the provider's numbers, or estimated for extractive answers).
    pub fn chat_tokens(&self, access: &WorkspaceAccess, prompt: u64, completion: u64) {
        let (org, ws) = (access.org_id(), Some(access.workspace_id()));
        self.count(org, ws, Metric::ChatPromptTokens, prompt);
        self.count(org, ws, Metric::ChatCompletionTokens, completion);
    }

    /// A document accepted for ingestion: its bytes, and whether it is new (not a duplicate).
    pub fn ingested(&self, org: Uuid, ws: Uuid, bytes: u64, new: bool) {
        if new {
            self.count(org, Some(ws), Metric::IngestBytes, bytes);
            self.count(org, Some(ws), Metric::DocumentsAdded, 1);
        }
    }

    /// What one job quantum did for a workspace: embedding usage, ingest metrics, and the
    /// workspace's embedding backlog (one indexed count).
    pub fn quantum(&self, org: Uuid, handle: &Handle, q: QuantumWork) {
        let ws = handle.id();
        self.count(org, Some(ws), Metric::EmbeddingChunks, q.embedded);
        self.count(org, Some(ws), Metric::EmbeddingTokens, q.embedded_tokens);
        let backlog = handle
            .conn()
            .query_row("SELECT count(*) FROM chunks WHERE embedded = 0", [], |r| {
                r.get::<_, i64>(0)
            })
            .ok()
            .map(|n| u64::try_from(n).unwrap_or(0));
        self.metrics.quantum(ws, q.indexed, q.embedded, backlog);
    }

    /// Samples the storage and documents of the workspaces active since their last sample (at
    /// most once per [`STORAGE_SAMPLE_EVERY`] each, or every one when `all`). Only workspaces
    /// still open in the registry are measured: a sample never opens a store.
    pub fn sample_storage(&self, all: bool) -> usize {
        let due: Vec<(Uuid, Uuid)> = {
            let mut t = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let due: Vec<(Uuid, Uuid)> = t
                .iter()
                .filter(|(_, (_, last))| {
                    all || last.is_none_or(|l| now.duration_since(l) >= STORAGE_SAMPLE_EVERY)
                })
                .map(|(ws, (org, _))| (*ws, *org))
                .collect();
            for (ws, _) in &due {
                t.remove(ws);
            }
            due
        };
        let mut sampled = 0;
        for (ws, org) in due {
            let Some(handle) = self.registry.get_if_open(ws) else {
                continue;
            };
            match handle.stats() {
                Ok(s) => {
                    let day = self.today();
                    self.usage
                        .sample(day, org, Some(ws), Metric::StorageBytes, s.bytes_on_disk);
                    let docs = u64::try_from(s.documents).unwrap_or(0);
                    self.usage
                        .sample(day, org, Some(ws), Metric::Documents, docs);
                    self.touched
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(ws)
                        .or_insert((org, Some(Instant::now())));
                    sampled += 1;
                }
                Err(e) => tracing::warn!(workspace_id = %ws, error = %e, "cannot sample storage"),
            }
        }
        sampled
    }

    /// Records what a request did: its latency and its usage (2xx in a workspace), at once
    /// (atomics); returns its audit entry (state-changing requests of an authenticated
    /// principal, and every operator request) for [`Governance::write_audit`].
    pub fn after_request(&self, f: &Facts) -> Option<PendingAudit> {
        self.metrics.request(f.route.as_deref(), f.status, f.took);
        let route = f.route.as_deref();
        if let (Some(org), Some(ws), true) = (f.org_id, f.workspace_id, f.verified_workspace) {
            if (200..300).contains(&f.status) {
                if let Some(kind) = route.and_then(|r| routes::request_kind(&f.method, r)) {
                    self.count(org, Some(ws), kind.metric(), 1);
                }
            }
        }
        let actor = f.actor?;
        let class = routes::classify(&f.method, route, actor == "operator")?;
        let target = f.target.clone().or(class.target_from_path(&f.path));
        let entry = Entry {
            actor: actor.to_string(),
            actor_id: f.actor_id.clone(),
            action: class.action,
            target,
            path: f.path.clone(),
            status: Some(f.status),
            outcome: Some(audit::outcome_of(f.status).to_string()),
            org_id: f.org_id,
            workspace_id: f.workspace_id,
            request_id: Some(f.request_id.clone()),
            client: f.client.clone(),
            at: self.identity.clock().now_text(),
            ..Default::default()
        };
        let workspace = match (class.scope, f.verified_workspace, f.workspace_id) {
            (Scope::Workspace, true, Some(ws)) => Some((ws, f.org_id)),
            _ => None,
        };
        Some(PendingAudit { entry, workspace })
    }

    /// A workspace's record and store, the record checked first (a deleted workspace is never
    /// reopened).
    fn store_by_record(&self, ws: Uuid) -> Result<Handle> {
        self.control.get_workspace(ws)?;
        self.registry.get(ws)
    }

    /// Writes a request's audit entry (blocking: SQLite). A failure is logged, never fails the
    /// request; a workspace trail that cannot be written (the workspace deleted meanwhile, the
    /// registry full) leaves the entry in the control plane's.
    pub fn write_audit(&self, p: PendingAudit) {
        let mut entry = p.entry;
        if let Some((ws, org)) = p.workspace {
            match self.store_by_record(ws) {
                Ok(handle) => match audit::append(&mut handle.conn(), Chain::Workspace, &entry) {
                    Ok(_) => {
                        if let Some(org) = org {
                            self.touch(org, ws);
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::error!(workspace_id = %ws, error = %e, "could not write the workspace audit trail; recording in the control plane")
                    }
                },
                Err(e) => {
                    tracing::warn!(workspace_id = %ws, error = %e, "workspace audit trail unavailable; recording in the control plane")
                }
            }
            entry.action = format!("{} (workspace trail unavailable)", entry.action);
        }
        if let Err(e) = self.append_control(&entry) {
            tracing::error!(error = %e, "could not write the control plane's audit trail");
        }
    }

    /// Records a command-line action in the control plane's chain (actor `cli`, the system
    /// user as its id). A failure is logged, never fails the command.
    pub fn record_cli(&self, mut e: Entry) {
        e.actor = "cli".into();
        if e.actor_id.is_none() {
            e.actor_id = std::env::var("USER").ok().filter(|u| !u.is_empty());
        }
        if e.outcome.is_none() {
            e.outcome = Some("success".into());
        }
        if e.at.is_empty() {
            e.at = self.identity.clock().now_text();
        }
        if let Err(err) = self.append_control(&e) {
            tracing::error!(error = %err, "could not write the control plane's audit trail");
        }
    }

    /// A workspace's audit trail (admins of its org, the operator).
    pub fn workspace_audit(
        &self,
        access: &WorkspaceAccess,
        f: &Filter,
        page: Page,
    ) -> Result<Vec<Entry>> {
        access.require(Action::AuditRead)?;
        let handle = self.registry.get(access.workspace_id())?;
        let conn = handle.conn();
        audit::list(&conn, Chain::Workspace, f, page)
    }

    /// An org's entries in the control plane's trail (admins of the org, the operator).
    pub fn org_audit(&self, access: &OrgAccess, f: &Filter, page: Page) -> Result<Vec<Entry>> {
        access.require(Action::AuditRead)?;
        let mut f = f.clone();
        f.org_id = Some(access.org_id());
        self.list_control(&f, page)
    }

    /// The operator's view of the control plane's trail: every org, or one (id or slug).
    /// The caller checked the operator token.
    pub fn operator_audit(
        &self,
        org: Option<&str>,
        mut filter: Filter,
        page: Page,
    ) -> Result<Vec<Entry>> {
        filter.org_id = self.org_id_of(org)?;
        self.list_control(&filter, page)
    }

    /// An org's usage report (admins of the org, the operator). A `workspace` must be the
    /// org's.
    pub fn org_usage(&self, access: &OrgAccess, mut q: usage::Query) -> Result<Vec<usage::Row>> {
        access.require(Action::UsageRead)?;
        if let Some(ws) = q.workspace {
            let rec = self.control.get_workspace(ws)?;
            if rec.org_id != access.org_id() {
                return Err(Error::NotFound(Resource::Workspace));
            }
        }
        q.org = Some(access.org_id());
        self.report(&q)
    }

    /// The operator's usage report: every org, or one (id or slug). The caller checked the
    /// operator token.
    pub fn operator_usage(
        &self,
        org: Option<&str>,
        mut q: usage::Query,
    ) -> Result<Vec<usage::Row>> {
        q.org = self.org_id_of(org)?;
        self.report(&q)
    }

    /// An org named by id or slug.
    fn org_id_of(&self, org: Option<&str>) -> Result<Option<Uuid>> {
        Ok(match org {
            Some(o) => Some(match crate::ids::parse_uuid(o, "organization") {
                Ok(id) => id,
                Err(_) => self.control.get_org(o)?.id,
            }),
            None => None,
        })
    }

    /// Verifies the control plane's chain, or one workspace's.
    pub fn verify(&self, workspace: Option<Uuid>) -> Result<Verification> {
        match workspace {
            None => self.verify_control(),
            Some(ws) => {
                let handle = self.store_by_record(ws)?;
                let conn = handle.conn();
                audit::verify(&conn, Chain::Workspace)
            }
        }
    }
}

/// What the request middleware knows once a request is answered.
#[derive(Debug, Clone)]
pub struct Facts {
    pub method: String,
    /// The matched route template (`/v1/workspaces/{ws}/documents`), if any.
    pub route: Option<String>,
    /// The path, secret segments redacted.
    pub path: String,
    pub status: u16,
    pub took: Duration,
    pub request_id: String,
    pub client: Option<String>,
    /// The principal's kind and id, when one was authenticated.
    pub actor: Option<&'static str>,
    pub actor_id: Option<String>,
    /// The org and workspace the request was verified to reach (the auth extractors).
    pub org_id: Option<Uuid>,
    pub workspace_id: Option<Uuid>,
    pub verified_workspace: bool,
    /// Named by the handler (`document:<id>`), else derived from the path.
    pub target: Option<String>,
}

/// An audit entry to write, and where.
#[derive(Debug, Clone)]
pub struct PendingAudit {
    entry: Entry,
    /// The workspace whose trail takes it (else the control plane's).
    workspace: Option<(Uuid, Option<Uuid>)>,
}
