//! The knowledge operations of [`App`]: what HTTP handlers and CLI commands call.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::params;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::embedders::{EmbedderConfig, Embedders, Endpoint, Resolved};
use super::extract::{Format, Limits};
use super::filter::Filter;
use super::scheduler::{Outcome, Ticket};
use super::search::{SearchRequest, SearchResponse};
use super::status::{DocumentStatus, JobKind, JobPhase, JobStatus, UNFINISHED_JOBS_SQL};
use super::store::{self, Added, DocumentView, JobView, NewDocument};
use super::{ingest, vectors};
use crate::app::App;
use crate::control::{OrgStatus, WorkspaceRecord};
use crate::error::{Error, Resource, Result};
use crate::workspace::Handle;

/// How often [`App::wait_for_job`] looks at the job.
const JOB_POLL: Duration = Duration::from_millis(25);

/// How [`App::wait_for_job`] ended, with the job as last seen.
#[derive(Debug, Clone)]
pub enum JobWait {
    Succeeded(JobView),
    Failed(JobView),
    Cancelled(JobView),
    /// The deadline passed with the job unfinished.
    TimedOut(JobView),
    /// The server is shutting down; the job is unfinished (it runs after the restart).
    Draining(JobView),
}

/// A document as the API receives it.
#[derive(Debug, Clone, Default)]
pub struct DocumentInput {
    /// The content: the JSON body's `text`, or an uploaded file's bytes.
    pub bytes: Vec<u8>,
    /// Declared content type (multipart part type, or the JSON body's `content_type`).
    pub content_type: Option<String>,
    pub file_name: Option<String>,
    pub title: Option<String>,
    pub metadata: Option<Value>,
    pub external_id: Option<String>,
    pub embedding: Option<Vec<f32>>,
    /// True for JSON bodies: the content is text (plain unless `content_type` says Markdown
    /// or HTML).
    pub is_text: bool,
}

/// A workspace's embedder and, while it switches, the one being built.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedderView {
    pub active: SpaceView,
    pub building: Option<SpaceView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SpaceView {
    pub embedder: EmbedderConfig,
    pub dimension: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobView>,
}

const MAX_METADATA_BYTES: usize = 64 << 10;
const MAX_TITLE_CHARS: usize = 1000;
const MAX_EXTERNAL_ID_CHARS: usize = 512;

impl App {
    /// Opens a workspace for a knowledge operation: it must exist and its org be active.
    fn knowledge_workspace(&self, ws: Uuid) -> Result<(WorkspaceRecord, Handle)> {
        let (rec, handle) = self.open_workspace(ws)?;
        if rec.org_status == OrgStatus::Suspended {
            return Err(Error::Suspended);
        }
        Ok((rec, handle))
    }

    fn extract_limits(&self) -> Limits {
        Limits::default()
    }

    /// Adds (or replaces, by `external_id`) a document; its ingestion runs as a job.
    pub fn add_document(&self, ws: Uuid, input: DocumentInput) -> Result<Added> {
        if input.bytes.len() as u64 > self.config.max_upload_bytes {
            return Err(Error::PayloadTooLarge(format!(
                "the document is over the limit of {} bytes",
                self.config.max_upload_bytes
            )));
        }
        let metadata = input
            .metadata
            .unwrap_or_else(|| Value::Object(Default::default()));
        if !metadata.is_object() {
            return Err(Error::invalid("metadata must be a JSON object"));
        }
        if metadata.to_string().len() > MAX_METADATA_BYTES {
            return Err(Error::invalid("metadata is too large (at most 64 KiB)"));
        }
        let title = input
            .title
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        if title
            .as_ref()
            .is_some_and(|t| t.chars().count() > MAX_TITLE_CHARS)
        {
            return Err(Error::invalid(
                "title is too long (at most 1000 characters)",
            ));
        }
        if let Some(ext) = &input.external_id {
            if ext.is_empty()
                || ext.chars().count() > MAX_EXTERNAL_ID_CHARS
                || ext.chars().any(char::is_control)
            {
                return Err(Error::invalid(
                    "external_id must be 1 to 512 characters without control characters",
                ));
            }
        }
        let format = if input.is_text {
            match input.content_type.as_deref() {
                None => Format::Text,
                Some(ct) => match Format::from_mime(ct) {
                    Some(f @ (Format::Text | Format::Markdown | Format::Html)) => f,
                    _ => {
                        return Err(Error::invalid(
                            "content_type must be text/plain, text/markdown or text/html",
                        ))
                    }
                },
            }
        } else {
            let head = &input.bytes[..input.bytes.len().min(512)];
            Format::detect(input.content_type.as_deref(), input.file_name.as_deref(), head)
                .ok_or_else(|| {
                    Error::UnsupportedMediaType(
                        "unsupported file type: Enclave ingests plain text, Markdown, HTML, PDF, DOCX, CSV and JSON"
                            .into(),
                    )
                })?
        };
        if input.is_text
            && input.bytes.iter().all(u8::is_ascii_whitespace)
            && input.embedding.is_none()
        {
            return Err(Error::invalid("text must not be empty"));
        }
        let (rec, handle) = self.knowledge_workspace(ws)?;
        let space = vectors::active(&handle.conn())?;
        match (&input.embedding, space.config.is_user_provided()) {
            (Some(v), true) => {
                if v.len() != space.dim || v.iter().any(|x| !x.is_finite()) {
                    return Err(Error::invalid(format!(
                        "embedding must be {} finite numbers",
                        space.dim
                    )));
                }
            }
            (None, true) => {
                return Err(Error::invalid(
                    "this workspace's embedder is user-provided: send the document's embedding",
                ))
            }
            (Some(_), false) => {
                return Err(Error::invalid(
                    "embedding is only accepted by workspaces whose embedder is user-provided",
                ))
            }
            (None, false) => {}
        }
        let new = NewDocument {
            bytes: input.bytes,
            format,
            title,
            metadata,
            external_id: input.external_id,
            source_name: input.file_name,
            embedding: input.embedding,
        };
        // Governance hook: the plan's upload size, documents and storage quotas, checked and
        // reserved before anything is stored (a document already there is no new one).
        let room = match crate::governance::reserve_document(
            self,
            rec.org_id,
            new.bytes.len() as u64,
            new.external_id.is_some(),
        ) {
            Ok(room) => room,
            Err(e @ Error::QuotaExceeded { .. }) => {
                return store::duplicate_of(&handle, &new)?.ok_or(e);
            }
            Err(e) => return Err(e),
        };
        // The marker first: a crash after the job is written still finds it on restart.
        self.scheduler.mark(ws)?;
        let added = store::add(&handle, new)?;
        if !added.duplicate {
            room.commit();
        }
        self.wake_scheduler(ws, rec.org_id);
        Ok(added)
    }

    pub(crate) fn wake_scheduler(&self, ws: Uuid, org: Uuid) {
        let priority = self.control.org_priority(org).unwrap_or(1.0);
        self.scheduler.notify(ws, org, priority);
    }

    pub fn get_document(&self, ws: Uuid, id: &str) -> Result<DocumentView> {
        let (_, handle) = self.knowledge_workspace(ws)?;
        let conn = handle.conn();
        store::get(&conn, id)
    }

    pub fn list_documents(
        &self,
        ws: Uuid,
        page: crate::control::Page,
        status: Option<&str>,
    ) -> Result<Vec<DocumentView>> {
        let status = status
            .map(|s| {
                DocumentStatus::parse(s).ok_or_else(|| {
                    Error::invalid("status must be pending, indexing, indexed or failed")
                })
            })
            .transpose()?;
        let (_, handle) = self.knowledge_workspace(ws)?;
        let conn = handle.conn();
        store::list(&conn, page.limit, page.offset, status)
    }

    pub fn delete_document(&self, ws: Uuid, id: &str) -> Result<()> {
        let (rec, handle) = self.knowledge_workspace(ws)?;
        store::delete(&handle, id)?;
        self.scheduler.extractions.cancel(ws, id);
        // Governance hook: the org's documents and storage are counted again.
        crate::governance::freed(
            self,
            rec.org_id,
            &[
                crate::governance::quota::Counted::Documents,
                crate::governance::quota::Counted::StorageBytes,
            ],
        );
        Ok(())
    }

    pub fn get_job(&self, ws: Uuid, id: &str) -> Result<JobView> {
        let (_, handle) = self.knowledge_workspace(ws)?;
        let conn = handle.conn();
        store::get_job(&conn, id)
    }

    pub fn list_jobs(&self, ws: Uuid, page: crate::control::Page) -> Result<Vec<JobView>> {
        let (_, handle) = self.knowledge_workspace(ws)?;
        let conn = handle.conn();
        store::list_jobs(&conn, page.limit, page.offset)
    }

    /// Waits until a job ends, the `deadline` passes or the server starts draining, polling
    /// the job (a waiter never holds a shutdown: the job stays queued and runs after a restart).
    pub async fn wait_for_job(
        self: &Arc<Self>,
        ws: Uuid,
        job_id: &str,
        deadline: Instant,
    ) -> Result<JobWait> {
        loop {
            let job = crate::task::blocking({
                let (app, job_id) = (self.clone(), job_id.to_string());
                move || app.get_job(ws, &job_id)
            })
            .await?;
            match job.status {
                JobStatus::Succeeded => return Ok(JobWait::Succeeded(job)),
                JobStatus::Failed => return Ok(JobWait::Failed(job)),
                JobStatus::Cancelled => return Ok(JobWait::Cancelled(job)),
                JobStatus::Queued | JobStatus::Running => {}
            }
            if Instant::now() > deadline {
                return Ok(JobWait::TimedOut(job));
            }
            if self.is_draining() {
                return Ok(JobWait::Draining(job));
            }
            tokio::time::sleep(JOB_POLL).await;
        }
    }

    /// Cancels a job; a running extraction of its document stops within a moment.
    pub fn cancel_job(&self, ws: Uuid, id: &str) -> Result<JobView> {
        let (_, handle) = self.knowledge_workspace(ws)?;
        let job = store::cancel_job(&handle, id)?;
        if let Some(doc) = &job.document_id {
            self.scheduler.extractions.cancel(ws, doc);
        }
        Ok(job)
    }

    /// Searches a workspace. `extra` is ANDed with the request's filter: a tenant token's
    /// filter goes there.
    pub fn search(
        &self,
        ws: Uuid,
        req: &SearchRequest,
        extra: Option<&Filter>,
    ) -> Result<SearchResponse> {
        let (rec, handle) = self.knowledge_workspace(ws)?;
        let embedders = self.workspace_embedders(rec.org_id, &handle)?;
        let fusion = *self.fusion.read().unwrap_or_else(|p| p.into_inner());
        super::search::search(&handle, &embedders, req, extra, &fusion)
    }

    pub fn get_embedder(&self, ws: Uuid) -> Result<EmbedderView> {
        let (_, handle) = self.knowledge_workspace(ws)?;
        scrub_legacy_embedders(&handle)?;
        embedder_view(&handle)
    }

    /// Switches a workspace's embedder. An empty workspace switches at once; otherwise a
    /// re-embedding job fills a new vector space while search keeps using the current one.
    pub fn set_embedder(&self, ws: Uuid, cfg: EmbedderConfig) -> Result<EmbedderView> {
        cfg.validate()?;
        let dim = self.embedders.dim(&cfg)?;
        let (rec, handle) = self.knowledge_workspace(ws)?;
        if let Some(name) = cfg.provider() {
            // Only a provider of the workspace's own org: another org's is never reachable.
            if self.control.get_provider(rec.org_id, name)?.is_none() {
                return Err(Error::NotFound(Resource::Provider));
            }
        }
        scrub_legacy_embedders(&handle)?;
        let mut enqueue = false;
        {
            let mut conn = handle.conn();
            let tx = conn.transaction()?;
            let active = vectors::active(&tx)?;
            let building = vectors::building(&tx)?;
            let now = crate::db::now();
            if let Some(b) = building {
                vectors::drop_space(&tx, &b)?;
                tx.execute(
                    &format!(
                        "UPDATE jobs SET status = 'cancelled', finished_at = ?1,
                            error = 'superseded by another embedder change'
                         WHERE kind = 'reembed' AND status IN {UNFINISHED_JOBS_SQL}"
                    ),
                    [&now],
                )?;
            }
            if active.config != cfg {
                let chunks: i64 = tx.query_row("SELECT count(*) FROM chunks", [], |r| r.get(0))?;
                if chunks == 0 {
                    vectors::drop_space(&tx, &active)?;
                    vectors::create_space(&tx, &cfg, dim, "active")?;
                } else if cfg.is_user_provided() {
                    return Err(Error::invalid(
                        "a workspace with documents cannot switch to user-provided vectors",
                    ));
                } else {
                    vectors::create_space(&tx, &cfg, dim, "building")?;
                    tx.execute(
                        "INSERT INTO jobs (id, kind, status, phase, payload, created_at)
                         VALUES (?1, ?3, ?4, ?5, '{}', ?2)",
                        params![
                            crate::ids::new_id().to_string(),
                            now,
                            JobKind::Reembed,
                            JobStatus::Queued,
                            JobPhase::Queued,
                        ],
                    )?;
                    enqueue = true;
                }
            }
            tx.commit()?;
        }
        if enqueue {
            self.scheduler.mark(ws)?;
            self.wake_scheduler(ws, rec.org_id);
        }
        embedder_view(&handle)
    }

    /// Starts the server's job workers.
    pub fn start_job_workers(self: &Arc<Self>) -> Vec<std::thread::JoinHandle<()>> {
        (0..self.config.ingest_workers)
            .filter_map(|i| {
                let app = self.clone();
                std::thread::Builder::new()
                    .name(format!("enclave-jobs-{i}"))
                    .spawn(move || {
                        while let Some(t) = app.scheduler.next() {
                            app.run_ticket(t);
                        }
                    })
                    .ok()
            })
            .collect()
    }

    /// Re-queues the workspaces that had pending jobs when the server stopped.
    pub fn recover_jobs(&self) {
        for ws in self.scheduler.marked() {
            match self.control.get_workspace(ws) {
                // A suspended org's work waits (marker kept) for `set_org_status(Active)`.
                Ok(rec) if rec.org_status == OrgStatus::Suspended => {}
                Ok(rec) => self.wake_scheduler(ws, rec.org_id),
                Err(Error::NotFound(_)) => self.scheduler.unmark(ws),
                Err(e) => tracing::warn!(workspace_id = %ws, error = %e, "cannot recover jobs"),
            }
        }
    }

    /// Wakes the workspaces of `org` that have pending work (after the org is reactivated).
    pub(crate) fn wake_org_jobs(&self, org: Uuid) {
        for ws in self.scheduler.marked() {
            match self.control.get_workspace(ws) {
                Ok(rec) if rec.org_id == org && rec.org_status == OrgStatus::Active => {
                    self.wake_scheduler(ws, org)
                }
                Ok(_) => {}
                Err(Error::NotFound(_)) => self.scheduler.unmark(ws),
                Err(e) => tracing::warn!(workspace_id = %ws, error = %e, "cannot wake jobs"),
            }
        }
    }

    /// Runs jobs in the calling thread until none is left (CLI commands, evaluation).
    pub fn run_jobs_until_idle(&self, mut progress: impl FnMut()) {
        loop {
            match self.scheduler.try_next() {
                Some(t) => {
                    self.run_ticket(t);
                    progress();
                }
                None if self.scheduler.is_idle() => return,
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn run_ticket(&self, t: Ticket) {
        let started = Instant::now();
        let outcome = match self.open_workspace(t.workspace) {
            Err(Error::NotFound(_)) => Outcome::Gone,
            Err(e) => {
                tracing::warn!(workspace_id = %t.workspace, error = %e, "cannot open workspace for its jobs");
                Outcome::Retry(Duration::from_secs(5))
            }
            // The API refuses a suspended org's requests; its queued jobs wait too.
            Ok((rec, _)) if rec.org_status == OrgStatus::Suspended => Outcome::Suspended,
            Ok((rec, handle)) => {
                let limits = self.extract_limits();
                match self
                    .workspace_embedders(rec.org_id, &handle)
                    .and_then(|embedders| {
                        let rt = ingest::Runtime {
                            budget: ingest::QUANTUM_BUDGET,
                            background: Some(&self.scheduler.extractions),
                            org: t.org,
                        };
                        ingest::run_quantum_in(&handle, &embedders, &limits, &rt)
                    }) {
                    Ok(q) if q.worked => {
                        // Governance hook: embedded chunks count against the org's monthly
                        // allowance.
                        if q.embedded > 0 {
                            self.governance().usage().record(
                                rec.org_id,
                                crate::governance::usage::Monthly::EmbeddingChunks,
                                q.embedded as u64,
                            );
                        }
                        Outcome::More
                    }
                    Ok(_) => Outcome::Idle,
                    // The index is rebuilt in the background; the jobs wait for it.
                    Err(Error::IndexUnavailable(_)) => Outcome::Retry(Duration::from_secs(1)),
                    Err(e) => {
                        tracing::warn!(workspace_id = %t.workspace, error = %e, "job step failed; will retry");
                        Outcome::Retry(Duration::from_secs(2))
                    }
                }
            }
        };
        self.scheduler.done(t, started.elapsed(), outcome);
    }
}

impl App {
    /// The server's embedders bound to the org providers the workspace's embedders name (the
    /// active one and any being built), resolved now in the workspace's own org, keys opened.
    /// A provider that cannot be used becomes a `provider_error` only when an embedding is
    /// needed. Legacy configurations with a plaintext key are rewritten first.
    fn workspace_embedders(&self, org: Uuid, handle: &Handle) -> Result<Embedders> {
        let configs = scrub_legacy_embedders(handle)?;
        let mut providers: HashMap<String, Resolved> = HashMap::new();
        for name in configs.iter().filter_map(EmbedderConfig::provider) {
            if !providers.contains_key(name) {
                providers.insert(name.to_string(), self.resolve_provider(org, name));
            }
        }
        if providers.is_empty() {
            return Ok(self.embedders.clone());
        }
        Ok(self.embedders.bind(providers))
    }

    fn resolve_provider(&self, org: Uuid, name: &str) -> Resolved {
        match self.open_org_provider(org, name) {
            Ok(Some(p)) => Ok(Endpoint {
                org,
                base_url: p.base_url,
                api_key: p.api_key,
            }),
            Ok(None) => Err(format!(
                "the workspace's embedder uses the organization's {name:?} provider, which is not set \
                 (PUT /v1/orgs/{{org}}/providers/{name})"
            )),
            Err(Error::Provider(m)) => Err(m),
            Err(e) => {
                tracing::warn!(org_id = %org, error = %e, "cannot resolve the embedding provider");
                Err("the organization's provider cannot be read right now".into())
            }
        }
    }
}

/// The embedder configurations of a workspace (active and building). Rows stored before org
/// providers (with their own `base_url` and a plaintext `api_key`) are rewritten to use the
/// org's provider, with `secure_delete` so the key's bytes are overwritten, and the WAL is
/// checkpointed and truncated.
fn scrub_legacy_embedders(handle: &Handle) -> Result<Vec<EmbedderConfig>> {
    let rows: Vec<(i64, String)> = {
        let conn = handle.conn();
        let mut stmt = conn.prepare_cached("SELECT id, embedder FROM vector_spaces")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut configs = Vec::with_capacity(rows.len());
    let mut legacy = Vec::new();
    for (id, text) in rows {
        let cfg: EmbedderConfig = serde_json::from_str(&text)
            .map_err(|e| Error::internal(format!("corrupt embedder configuration: {e}")))?;
        if cfg.is_legacy() {
            legacy.push((id, cfg.redacted()));
        }
        configs.push(cfg.redacted());
    }
    if !legacy.is_empty() {
        let conn = handle.conn();
        let before: i64 = conn.pragma_query_value(None, "secure_delete", |r| r.get(0))?;
        conn.pragma_update(None, "secure_delete", 1)?;
        let result = (|| -> Result<()> {
            for (id, cfg) in &legacy {
                let text =
                    serde_json::to_string(cfg).map_err(|e| Error::internal(e.to_string()))?;
                conn.execute(
                    "UPDATE vector_spaces SET embedder = ?2 WHERE id = ?1",
                    params![id, text],
                )?;
            }
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })();
        conn.pragma_update(None, "secure_delete", before)?;
        result?;
        tracing::info!(
            "moved a legacy openai embedder to the organization's provider; its plaintext key was removed"
        );
    }
    Ok(configs)
}

fn embedder_view(handle: &Handle) -> Result<EmbedderView> {
    let conn = handle.conn();
    let active = vectors::active(&conn)?;
    let building = vectors::building(&conn)?;
    let job = match &building {
        Some(_) => {
            let id: Option<String> = rusqlite::OptionalExtension::optional(conn.query_row(
                &format!(
                    "SELECT id FROM jobs WHERE kind = 'reembed' AND status IN {UNFINISHED_JOBS_SQL}
                     ORDER BY id DESC LIMIT 1"
                ),
                [],
                |r| r.get(0),
            ))?;
            id.map(|id| store::get_job(&conn, &id)).transpose()?
        }
        None => None,
    };
    Ok(EmbedderView {
        active: SpaceView {
            embedder: active.config.redacted(),
            dimension: active.dim,
            job: None,
        },
        building: building.map(|b| SpaceView {
            embedder: b.config.redacted(),
            dimension: b.dim,
            job,
        }),
    })
}
