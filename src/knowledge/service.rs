//! [`Knowledge`], the knowledge service: documents, jobs, search and embedders of a
//! workspace, the job scheduler and workers. What HTTP handlers and CLI commands call.
//!
//! Every operation for a principal takes the verified [`WorkspaceAccess`] and checks its action
//! here (`ctx.require`); the context already carries the workspace, its org and the org's status
//! (decided through identity's status cache), so nothing here reads the control plane per
//! request. Knowledge needs one thing from another domain: an org's model provider with its key
//! opened, for embeddings: the [`OrgProviders`] trait, implemented by chat's provider keys.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::params;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::embedders::{EmbedderConfig, Embedders, Endpoint, Resolved};
use super::extract::{Format, Limits};
use super::scheduler::Scheduler;
use super::scheduler::{Outcome, Ticket};
use super::search::Fusion;
use super::search::{SearchRequest, SearchResponse};
use super::status::{DocumentStatus, JobKind, JobPhase, JobStatus, UNFINISHED_JOBS_SQL};
use super::store::{self, Added, DocumentView, JobView, NewDocument};
use super::{ingest, vectors};
use crate::config::Config;
use crate::control::{ControlPlane, OrgStatus, Page};
use crate::error::{Error, Resource, Result};
use crate::filter::Filter;
use crate::governance::quota::Counted;
use crate::governance::usage::Refusal;
use crate::governance::{Governance, QuantumWork};
use crate::identity::{Action, WorkspaceAccess};
use crate::task::Draining;
use crate::workspace::{Handle, Registry};

/// How often [`Knowledge::wait_for_job`] looks at the job.
const JOB_POLL: Duration = Duration::from_millis(25);

/// How [`Knowledge::wait_for_job`] ended, with the job as last seen.
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

/// Whether a document's vector fits the workspace's active space: one of `space.dim` finite
/// numbers when the embedder is user-provided, none otherwise.
/// The storage of spaces made under a `vector_storage` setting.
fn storage_of(setting: crate::config::VectorStorage) -> vectors::Storage {
    match setting {
        crate::config::VectorStorage::Int8 => vectors::Storage::Int8,
        crate::config::VectorStorage::F32 => vectors::Storage::Vec0,
    }
}

pub(super) fn check_embedding(new: &NewDocument, space: &vectors::Space) -> Result<()> {
    match (&new.embedding, space.config.is_user_provided()) {
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
    Ok(())
}

/// A document or job id from a request, parsed (`400` when it is none), hyphenated as stored.
fn parse_id(text: &str, what: &str) -> Result<String> {
    Ok(crate::ids::parse_uuid(text, what)?.hyphenated().to_string())
}

/// A workspace's embedder and, while it switches, the one being built.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EmbedderView {
    pub active: SpaceView,
    pub building: Option<SpaceView>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SpaceView {
    pub embedder: EmbedderConfig,
    pub dimension: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobView>,
}

const MAX_METADATA_BYTES: usize = 64 << 10;
const MAX_TITLE_CHARS: usize = 1000;
const MAX_EXTERNAL_ID_CHARS: usize = 512;

/// An org's model provider with its key opened, for embeddings. Implemented by whoever holds
/// the sealed keys and the master key (chat's `ProviderKeys`); `org` is always the workspace's
/// own org, so another org's provider is never looked up.
pub trait OrgProviders: Send + Sync {
    /// The provider `name` of `org`, its key opened; `None` when the org has none.
    /// A key that does not open is `Error::Provider`.
    fn open_provider(&self, org: Uuid, name: &str) -> Result<Option<Endpoint>>;
}

/// The knowledge service. Private fields: reach it through `App::knowledge`.
pub struct Knowledge {
    control: Arc<ControlPlane>,
    registry: Registry,
    scheduler: Scheduler,
    /// Embedding models, shared by all workspaces.
    embedders: Embedders,
    /// Hybrid-search fusion parameters.
    fusion: std::sync::RwLock<Fusion>,
    providers: Arc<dyn OrgProviders>,
    draining: Draining,
    max_upload_bytes: u64,
    max_batch_documents: usize,
    ingest_workers: usize,
    /// How vector spaces made from now on store their vectors.
    vector_storage: crate::config::VectorStorage,
    /// Usage metering: ingested bytes, embedding work.
    governance: Arc<Governance>,
}

/// Proof that a context may ingest into its workspace (from [`Knowledge::ingest_permit`]),
/// taken before a handler reads an upload, so a refused principal's body is never read.
pub struct IngestPermit {
    ctx: WorkspaceAccess,
}

impl Knowledge {
    pub fn new(
        config: &Config,
        control: Arc<ControlPlane>,
        registry: Registry,
        providers: Arc<dyn OrgProviders>,
        draining: Draining,
        governance: Arc<Governance>,
    ) -> Knowledge {
        Knowledge {
            control,
            registry,
            scheduler: Scheduler::new(&config.data_dir),
            embedders: Default::default(),
            fusion: Default::default(),
            providers,
            draining,
            max_upload_bytes: config.max_upload_bytes,
            max_batch_documents: config.max_batch_documents,
            ingest_workers: config.ingest_workers,
            vector_storage: config.vector_storage,
            governance,
        }
    }

    /// The server-wide job scheduler.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// The shared embedding models.
    pub fn embedders(&self) -> &Embedders {
        &self.embedders
    }

    /// Hybrid-search fusion parameters (tuned by `enclave eval`).
    pub fn fusion(&self) -> &std::sync::RwLock<Fusion> {
        &self.fusion
    }

    /// The store of the context's workspace for a knowledge operation. The context decided
    /// existence and status (through identity's status cache): no control-plane read here. A
    /// suspended org's data is refused even to the operator. A workspace deleted since the
    /// context was built is `NotFound` (the registry never reopens a removed store).
    fn store(&self, ctx: &WorkspaceAccess) -> Result<Handle> {
        if ctx.org_status() == OrgStatus::Suspended {
            return Err(Error::Suspended);
        }
        self.registry.get(ctx.workspace_id())
    }

    /// A workspace's record and store, the record checked first (so a deleted workspace is
    /// never reopened): for the job workers, which act for no principal.
    fn store_by_record(&self, ws: Uuid) -> Result<(crate::control::WorkspaceRecord, Handle)> {
        let record = self.control.get_workspace(ws)?;
        let handle = self.registry.get(ws)?;
        Ok((record, handle))
    }

    fn extract_limits(&self) -> Limits {
        Limits::default()
    }

    /// Checks that the context may ingest (`Ingest`): call before reading an upload.
    pub fn ingest_permit(&self, ctx: &WorkspaceAccess) -> Result<IngestPermit> {
        ctx.require(Action::Ingest)?;
        Ok(IngestPermit { ctx: ctx.clone() })
    }

    /// Adds (or replaces, by `external_id`) a document; its ingestion runs as a job.
    pub fn add_document(&self, permit: &IngestPermit, input: DocumentInput) -> Result<Added> {
        let ctx = &permit.ctx;
        let new = self.new_document(input)?;
        let handle = self.store(ctx)?;
        let ws = ctx.workspace_id();
        let space = vectors::active(&handle.conn())?;
        check_embedding(&new, &space)?;
        // Governance hook: the plan's upload size, documents and storage quotas, checked and
        // reserved before anything is stored (a document already there is no new one).
        let bytes = new.bytes.len() as u64;
        let room = match self
            .governance
            .reserve_document(ctx, bytes, new.external_id.is_some())
        {
            Ok(room) => room,
            Err(e @ Error::QuotaExceeded { .. }) => {
                return match store::duplicate_of(&handle, &new)? {
                    // Nothing new: answered as the duplicate (counted as such by metering).
                    Some(added) => Ok(added),
                    None => {
                        self.governance
                            .record_refusal(ctx.org_id(), Some(ws), Refusal::Quota);
                        Err(e)
                    }
                };
            }
            Err(e) => return Err(e),
        };
        // The marker first: a crash after the job is written still finds it on restart.
        self.scheduler.mark(ws)?;
        let added = store::add(&handle, new)?;
        if !added.duplicate {
            room.commit();
        }
        self.wake_scheduler(ws, ctx.org_id());
        self.governance
            .ingested(ctx.org_id(), ws, bytes, !added.duplicate);
        Ok(added)
    }

    /// Adds a batch of documents to the permit's workspace, written together and indexed
    /// before it answers ([`super::bulk`]): each item checked like a single add, deduplicated
    /// the same way, its `external_id` replacing the holder's. Atomic: an item refused refuses
    /// the batch (`Error::BatchItem` names its index) and nothing is written; the quotas are
    /// reserved for the whole batch at once. At most `max_batch_documents` items.
    pub fn add_documents(
        &self,
        permit: &IngestPermit,
        inputs: Vec<DocumentInput>,
    ) -> Result<super::bulk::BatchAdded> {
        let ctx = &permit.ctx;
        if inputs.is_empty() {
            return Err(Error::invalid(
                "the batch is empty: send at least one document",
            ));
        }
        if inputs.len() > self.max_batch_documents {
            return Err(Error::PayloadTooLarge(format!(
                "the batch holds {} documents; at most {} are taken in one request: split it",
                inputs.len(),
                self.max_batch_documents
            )));
        }
        let mut news = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.into_iter().enumerate() {
            news.push(self.new_document(input).map_err(|e| e.at_item(i))?);
        }
        let handle = self.store(ctx)?;
        let ws = ctx.workspace_id();
        let space = vectors::active(&handle.conn())?;
        let user_provided = space.config.is_user_provided();
        let limits = self.extract_limits();
        let mut ready = Vec::with_capacity(news.len());
        let mut sizes = Vec::with_capacity(news.len());
        for (i, new) in news.into_iter().enumerate() {
            check_embedding(&new, &space).map_err(|e| e.at_item(i))?;
            sizes.push(new.bytes.len() as u64);
            let one_chunk = user_provided || new.embedding.is_some();
            ready.push(super::bulk::prepare(i, new, one_chunk, &limits)?);
        }
        let plan = super::bulk::Plan::new(&handle, ready)?;
        // Governance hook: upload size per item, then room for the batch's new documents and
        // bytes, reserved together (a batch over a quota is refused whole).
        let new_bytes: u64 = plan.write.iter().map(|r| r.new.bytes.len() as u64).sum();
        let replaces = plan.write.iter().any(|r| r.new.external_id.is_some());
        let room = match self.governance.reserve_documents(
            ctx,
            &sizes,
            plan.write.len() as u64,
            new_bytes,
            replaces,
        ) {
            Ok(room) => room,
            Err(e @ Error::QuotaExceeded { .. }) if !plan.write.is_empty() => {
                self.governance
                    .record_refusal(ctx.org_id(), Some(ws), Refusal::Quota);
                return Err(e);
            }
            // Nothing new to store: answered with what is there, as a single add is.
            Err(Error::QuotaExceeded { .. }) => return Ok(plan.finish(Vec::new())),
            Err(e) => return Err(e),
        };
        let embed_jobs = !user_provided && !plan.write.is_empty();
        if embed_jobs {
            // The marker first: a crash after the jobs are written still finds them.
            self.scheduler.mark(ws)?;
        }
        let (written, indexed) = super::bulk::write(&handle, &plan.write, embed_jobs)?;
        room.commit();
        for r in &plan.write {
            self.governance
                .ingested(ctx.org_id(), ws, r.new.bytes.len() as u64, true);
        }
        if let Err(e) = &indexed {
            tracing::warn!(workspace_id = %ws, error = %e,
                "batch stored; the full-text index follows when it is reconciled");
        }
        if embed_jobs || indexed.is_err() {
            self.wake_scheduler(ws, ctx.org_id());
        }
        Ok(plan.finish(written))
    }

    /// The checks of a document as the API receives it, the same for single and batch adds
    /// (size, metadata, title, external id, type, empty text): the document to store. Its
    /// vector is checked against the workspace's space by [`check_embedding`].
    pub(super) fn new_document(&self, input: DocumentInput) -> Result<NewDocument> {
        if input.bytes.len() as u64 > self.max_upload_bytes {
            return Err(Error::PayloadTooLarge(format!(
                "the document is over the limit of {} bytes",
                self.max_upload_bytes
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
        Ok(NewDocument {
            bytes: input.bytes,
            format,
            title,
            metadata,
            external_id: input.external_id,
            source_name: input.file_name,
            embedding: input.embedding,
            is_text: input.is_text,
        })
    }

    pub(crate) fn wake_scheduler(&self, ws: Uuid, org: Uuid) {
        let priority = self.control.org_priority(org).unwrap_or(1.0);
        self.scheduler.notify(ws, org, priority);
    }

    /// A document (`DocumentsRead`); `id` is parsed here (`400` when it is no id).
    pub fn get_document(&self, ctx: &WorkspaceAccess, id: &str) -> Result<DocumentView> {
        ctx.require(Action::DocumentsRead)?;
        let id = parse_id(id, "document")?;
        let handle = self.store(ctx)?;
        let conn = handle.conn();
        store::get(&conn, &id)
    }

    pub fn list_documents(
        &self,
        ctx: &WorkspaceAccess,
        page: Page,
        status: Option<&str>,
    ) -> Result<Vec<DocumentView>> {
        ctx.require(Action::DocumentsRead)?;
        let status = status
            .map(|s| {
                DocumentStatus::parse(s).ok_or_else(|| {
                    Error::invalid("status must be pending, indexing, indexed or failed")
                })
            })
            .transpose()?;
        let handle = self.store(ctx)?;
        let conn = handle.conn();
        store::list(&conn, page.limit, page.offset, status)
    }

    /// Deletes a document (`Ingest`); a running extraction of it stops within a moment.
    pub fn delete_document(&self, ctx: &WorkspaceAccess, id: &str) -> Result<()> {
        ctx.require(Action::Ingest)?;
        let id = parse_id(id, "document")?;
        let handle = self.store(ctx)?;
        store::delete(&handle, &id)?;
        self.scheduler.extractions.cancel(ctx.workspace_id(), &id);
        // Governance hook: the org's documents and storage are counted again.
        self.governance
            .freed(ctx.org_id(), &[Counted::Documents, Counted::StorageBytes]);
        Ok(())
    }

    /// A job (`DocumentsRead`); `id` is parsed here.
    pub fn get_job(&self, ctx: &WorkspaceAccess, id: &str) -> Result<JobView> {
        ctx.require(Action::DocumentsRead)?;
        let id = parse_id(id, "job")?;
        let handle = self.store(ctx)?;
        let conn = handle.conn();
        store::get_job(&conn, &id)
    }

    pub fn list_jobs(&self, ctx: &WorkspaceAccess, page: Page) -> Result<Vec<JobView>> {
        ctx.require(Action::DocumentsRead)?;
        let handle = self.store(ctx)?;
        let conn = handle.conn();
        store::list_jobs(&conn, page.limit, page.offset)
    }

    /// Waits until a job ends, the `deadline` passes or the server starts draining, polling
    /// the job (a waiter never holds a shutdown: the job stays queued and runs after a restart).
    pub async fn wait_for_job(
        self: &Arc<Self>,
        ctx: &WorkspaceAccess,
        job_id: &str,
        deadline: Instant,
    ) -> Result<JobWait> {
        loop {
            let job = crate::task::blocking({
                let (k, ctx, job_id) = (self.clone(), ctx.clone(), job_id.to_string());
                move || k.get_job(&ctx, &job_id)
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
            if self.draining.is_draining() {
                return Ok(JobWait::Draining(job));
            }
            tokio::time::sleep(JOB_POLL).await;
        }
    }

    /// Cancels a job (`Ingest`); a running extraction of its document stops within a moment.
    pub fn cancel_job(&self, ctx: &WorkspaceAccess, id: &str) -> Result<JobView> {
        ctx.require(Action::Ingest)?;
        let id = parse_id(id, "job")?;
        let handle = self.store(ctx)?;
        let job = store::cancel_job(&handle, &id)?;
        if let Some(doc) = &job.document_id {
            self.scheduler.extractions.cancel(ctx.workspace_id(), doc);
        }
        Ok(job)
    }

    /// Searches the context's workspace (`Search`). The tenant token's filter, if any, is
    /// ANDed with the request's: a request can narrow it, never widen it.
    pub fn search(&self, ctx: &WorkspaceAccess, req: &SearchRequest) -> Result<SearchResponse> {
        ctx.require(Action::Search)?;
        let token_filter = ctx.filter_with(&[])?;
        self.run_search(ctx, req, token_filter.as_ref())
    }

    /// Retrieval for chat, its tools and MCP (`Search` or `Chat`: a chat's retrieval is part
    /// of the chat): the same search, with the context's token filter AND `extra`.
    pub fn retrieve(
        &self,
        ctx: &WorkspaceAccess,
        req: &SearchRequest,
        extra: Option<Filter>,
    ) -> Result<SearchResponse> {
        if ctx.require(Action::Search).is_err() {
            ctx.require(Action::Chat)?;
        }
        let filter = Filter::and(ctx.filter_with(&[])?, extra);
        self.run_search(ctx, req, filter.as_ref())
    }

    fn run_search(
        &self,
        ctx: &WorkspaceAccess,
        req: &SearchRequest,
        filter: Option<&Filter>,
    ) -> Result<SearchResponse> {
        let handle = self.store(ctx)?;
        let spaces = space_configs(&handle)?;
        let embedders = self.embedders_of(ctx.org_id(), &spaces.all);
        let fusion = *self.fusion.read().unwrap_or_else(|p| p.into_inner());
        super::search::search_with(
            &handle,
            &embedders,
            req,
            filter,
            &fusion,
            spaces.active.as_ref(),
        )
    }

    /// The workspace's embedder (`DocumentsRead`).
    pub fn get_embedder(&self, ctx: &WorkspaceAccess) -> Result<EmbedderView> {
        ctx.require(Action::DocumentsRead)?;
        let handle = self.store(ctx)?;
        scrub_legacy_embedders(&handle)?;
        embedder_view(&handle)
    }

    /// Switches a workspace's embedder. An empty workspace switches at once; otherwise a
    /// re-embedding job fills a new vector space while search keeps using the current one.
    /// (`WorkspaceUpdate`)
    pub fn set_embedder(&self, ctx: &WorkspaceAccess, cfg: EmbedderConfig) -> Result<EmbedderView> {
        ctx.require(Action::WorkspaceUpdate)?;
        cfg.validate()?;
        let dim = self.embedders.dim(&cfg)?;
        let handle = self.store(ctx)?;
        let ws = ctx.workspace_id();
        if let Some(name) = cfg.provider() {
            // Only a provider of the workspace's own org: another org's is never reachable.
            if self.control.get_provider(ctx.org_id(), name)?.is_none() {
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
            let chunks: i64 = tx.query_row("SELECT count(*) FROM chunks", [], |r| r.get(0))?;
            // An empty workspace's space also takes the server's vector storage (its default
            // space was made int8 by its migration, whatever the setting).
            let convert = chunks == 0 && active.storage != storage_of(self.vector_storage);
            if active.config != cfg || convert {
                if chunks == 0 {
                    vectors::drop_space(&tx, &active)?;
                    vectors::create_space(&tx, &cfg, dim, "active", self.vector_storage)?;
                } else if cfg.is_user_provided() {
                    return Err(Error::invalid(
                        "a workspace with documents cannot switch to user-provided vectors",
                    ));
                } else {
                    vectors::create_space(&tx, &cfg, dim, "building", self.vector_storage)?;
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
            self.wake_scheduler(ws, ctx.org_id());
        }
        embedder_view(&handle)
    }

    /// Starts the server's job workers.
    pub fn start_job_workers(self: &Arc<Self>) -> Vec<std::thread::JoinHandle<()>> {
        (0..self.ingest_workers)
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
    pub fn wake_org_jobs(&self, org: Uuid) {
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

    /// Requeues the unfinished jobs of a restored workspace (its scheduler marker went when it
    /// was deleted). Called by tenancy after a restore.
    pub fn resume_workspace_jobs(&self, ws: Uuid, org: Uuid) {
        let pending = self.store_by_record(ws).and_then(|(_, h)| {
            let n: i64 = h.conn().query_row(
                &format!("SELECT count(*) FROM jobs WHERE status IN {UNFINISHED_JOBS_SQL}"),
                [],
                |r| r.get(0),
            )?;
            Ok(n)
        });
        match pending {
            Ok(0) => {}
            Ok(_) => {
                if let Err(e) = self.scheduler.mark(ws) {
                    tracing::warn!(workspace_id = %ws, error = %e, "cannot mark restored jobs");
                }
                self.wake_scheduler(ws, org);
            }
            Err(e) => tracing::warn!(workspace_id = %ws, error = %e, "cannot resume restored jobs"),
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
        let outcome = match self.store_by_record(t.workspace) {
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
                    })
                    .inspect(|q| {
                        let work = QuantumWork {
                            indexed: q.indexed as u64,
                            embedded: q.embedded as u64,
                            embedded_tokens: q.embedded_tokens,
                        };
                        self.governance.quantum(rec.org_id, &handle, work)
                    }) {
                    // (Embedded chunks count against the org's monthly allowance through the
                    // metering above: `governance::monthly`.)
                    Ok(q) if q.worked => Outcome::More,
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

impl Knowledge {
    /// The server's embedders bound to the org providers the workspace's embedders name (the
    /// active one and any being built), resolved now in the workspace's own org, keys opened.
    /// A provider that cannot be used becomes a `provider_error` only when an embedding is
    /// needed. Legacy configurations with a plaintext key are rewritten first.
    fn workspace_embedders(&self, org: Uuid, handle: &Handle) -> Result<Embedders> {
        Ok(self.embedders_of(org, &space_configs(handle)?.all))
    }

    /// The embedders of `configs`, bound to the org's providers they use.
    fn embedders_of(&self, org: Uuid, configs: &[EmbedderConfig]) -> Embedders {
        let mut providers: HashMap<String, Resolved> = HashMap::new();
        for name in configs.iter().filter_map(EmbedderConfig::provider) {
            if !providers.contains_key(name) {
                providers.insert(name.to_string(), self.resolve_provider(org, name));
            }
        }
        if providers.is_empty() {
            return self.embedders.clone();
        }
        self.embedders.bind(providers)
    }

    fn resolve_provider(&self, org: Uuid, name: &str) -> Resolved {
        match self.providers.open_provider(org, name) {
            Ok(Some(p)) => Ok(p),
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

/// The embedder configurations of a workspace, through its cache (`caches::SpacesCache`): read
/// (and scrubbed, [`scrub_legacy_embedders`]) once per change of its vector spaces.
fn space_configs(handle: &Handle) -> Result<Arc<super::caches::SpaceConfigs>> {
    super::caches::of(handle).spaces.get_or_load(handle, || {
        let all = scrub_legacy_embedders(handle)?;
        let active = vectors::active(&handle.conn())?;
        Ok(super::caches::SpaceConfigs {
            all,
            active: Some(active),
        })
    })
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
