//! The work of ingestion jobs, in bounded quanta that the scheduler hands out:
//!
//! 1. **index**: up to a batch of queued documents are extracted, chunked and written to SQLite
//!    in one transaction (replacing the holder of their `external_id`), then to Tantivy in one
//!    commit. From then on they are `indexed` and searchable by full text.
//! 2. **embed**: a batch of chunks without vectors is embedded and stored.
//! 3. **re-embed**: while the workspace switches embedder, a batch of chunks is embedded into
//!    the new vector space; the last batch swaps the spaces.
//!
//! Every step is idempotent, so a crash in the middle is resumed by running it again.
//!
//! **A quantum is bounded in time, not only in items** ([`QUANTUM_BUDGET`]): the index step
//! stops taking documents once its budget is spent, and a document's extraction never holds
//! the worker past it. Small documents are extracted on the worker with the budget as their
//! deadline; a document over [`INLINE_MAX_BYTES`], or one that did not finish within the
//! budget, is extracted on a thread of [`Extractions`] (at most
//! [`MAX_BACKGROUND_EXTRACTIONS`] at a time, each within [`Limits::max_time`]) while the
//! worker serves other workspaces; a later quantum of its workspace picks the result up.
//! Cancelling the job or deleting the document raises its extraction's flag, and so does
//! stopping the scheduler: every extraction loop checks it ([`extract::Interrupt`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{params, OptionalExtension};
use serde_json::Value;
use tantivy::Term;

use super::chunk::{chunk_with, Chunk, ChunkConfig, MAX_CHUNK_CHARS};
use super::embedders::{EmbedderConfig, Embedders};
use super::extract::{self, Format, Interrupt, Limits};
use super::store;
use super::vectors::{self, Space};
use crate::db;
use crate::error::{Error, Result};
use crate::workspace::{repair, Workspace};
use uuid::Uuid;

/// Most documents indexed in one quantum.
const INDEX_BATCH_DOCS: usize = 64;
/// Stop adding documents to a quantum past this many chunks.
const INDEX_BATCH_CHUNKS: usize = 4000;
/// Attempts at embedding a chunk before giving up on it.
const MAX_EMBED_ATTEMPTS: i64 = 3;

/// Wall time a quantum spends before it hands the worker back (a batch of index writes or an
/// embedding batch already started finishes; extraction never holds the worker past it).
pub const QUANTUM_BUDGET: Duration = Duration::from_secs(1);
/// Documents up to this size are extracted on the worker first (within the quantum's budget);
/// larger ones go straight to a background extraction.
pub const INLINE_MAX_BYTES: usize = 1 << 20;
/// Longest title taken from a document's content (`<title>`, a first heading, PDF metadata),
/// in characters: the API's limit on titles.
const MAX_EXTRACTED_TITLE_CHARS: usize = 1000;
/// Most extractions running in the background at once (server-wide).
pub const MAX_BACKGROUND_EXTRACTIONS: usize = 2;
/// A finished background extraction that no quantum claimed (its workspace was deleted) is
/// dropped after this long.
const UNCLAIMED_TTL: Duration = Duration::from_secs(600);

/// What one quantum did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quantum {
    /// Units of work done (chunks), for progress reports.
    pub chunks: usize,
    /// Whether anything was found to do (including extractions still running).
    pub worked: bool,
}

/// How quanta run: the time budget and, in a server (or CLI) with a scheduler, the
/// background extractions.
#[derive(Clone, Copy)]
pub struct Runtime<'a> {
    pub budget: Duration,
    pub background: Option<&'a Extractions>,
}

impl Runtime<'_> {
    /// No budget, no background: each document is extracted on the caller within its limits.
    pub fn inline() -> Runtime<'static> {
        Runtime {
            budget: Duration::MAX,
            background: None,
        }
    }
}

/// The result of extracting and chunking one document: its extracted title and chunks, or
/// the reason it failed.
type Extraction = std::result::Result<(Option<String>, Vec<Chunk>), String>;

/// Extracts and chunks `bytes`, stopping when `stop` says so.
fn extract_and_chunk(
    format: Format,
    bytes: &[u8],
    limits: &Limits,
    stop: &Interrupt,
) -> Extraction {
    let extracted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        extract::extract_with(format, bytes, limits, stop)
    }))
    .map_err(|_| "the file could not be read (the extractor failed)".to_string())?
    .map_err(|e| e.0)?;
    let chunks = chunk_with(&extracted.blocks, &ChunkConfig::default(), stop).map_err(|e| e.0)?;
    Ok((extracted.title, chunks))
}

type Key = (Uuid, String);

struct Entry {
    cancel: Arc<AtomicBool>,
    result: Option<Extraction>,
    finished: Option<Instant>,
}

#[derive(Default)]
struct ExState {
    entries: HashMap<Key, Entry>,
    running: usize,
}

/// The server's background extractions, keyed by workspace and document.
pub struct Extractions {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<ExState>,
    cv: Condvar,
    stop: Arc<AtomicBool>,
    max_running: usize,
}

enum Poll {
    Absent,
    Pending,
    Done(Extraction),
}

impl Default for Extractions {
    fn default() -> Self {
        Extractions::new(MAX_BACKGROUND_EXTRACTIONS)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, ExState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Waits on the condition variable until `until` (`None`: a second at a time).
    fn wait<'a>(
        &self,
        st: MutexGuard<'a, ExState>,
        until: Option<Instant>,
    ) -> MutexGuard<'a, ExState> {
        let left = until.map_or(Duration::from_secs(1), |u| {
            u.saturating_duration_since(Instant::now())
        });
        self.cv
            .wait_timeout(st, left)
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    /// Records a finished extraction, unless it was cancelled (its entry is gone) or
    /// interrupted by the shutdown (nothing to keep).
    fn finish(&self, key: &Key, cancel: &Arc<AtomicBool>, result: Extraction) {
        let mut st = self.lock();
        st.running = st.running.saturating_sub(1);
        let interrupted = matches!(&result, Err(m) if m == extract::INTERRUPTED);
        if let Some(e) = st.entries.get_mut(key) {
            if Arc::ptr_eq(&e.cancel, cancel) {
                if interrupted {
                    st.entries.remove(key);
                } else {
                    e.result = Some(result);
                    e.finished = Some(Instant::now());
                }
            }
        }
        drop(st);
        self.cv.notify_all();
    }
}

impl Extractions {
    pub fn new(max_running: usize) -> Self {
        Extractions {
            inner: Arc::new(Inner {
                state: Mutex::new(ExState::default()),
                cv: Condvar::new(),
                stop: Arc::new(AtomicBool::new(false)),
                max_running: max_running.max(1),
            }),
        }
    }

    /// Interrupts every extraction (background and on workers) and starts no more.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Release);
        let st = self.inner.lock();
        for e in st.entries.values() {
            e.cancel.store(true, Ordering::Release);
        }
        drop(st);
        self.inner.cv.notify_all();
    }

    /// The flag [`Extractions::stop`] raises.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.inner.stop.clone()
    }

    /// Interrupts the extraction of a document (its job was cancelled, it was deleted).
    pub fn cancel(&self, ws: Uuid, document_id: &str) {
        let mut st = self.inner.lock();
        if let Some(e) = st.entries.remove(&(ws, document_id.to_string())) {
            e.cancel.store(true, Ordering::Release);
        }
        drop(st);
        self.inner.cv.notify_all();
    }

    /// Background extractions running now.
    pub fn running(&self) -> usize {
        self.inner.lock().running
    }

    /// The state of `key`'s extraction; a finished one is handed over (once).
    fn poll(&self, key: &Key) -> Poll {
        let mut st = self.inner.lock();
        match st.entries.get_mut(key) {
            None => Poll::Absent,
            Some(e) => match e.result.take() {
                None => Poll::Pending,
                Some(r) => {
                    st.entries.remove(key);
                    Poll::Done(r)
                }
            },
        }
    }

    /// Waits up to `wait` for any extraction to end (or the scheduler to stop).
    fn wait_any(&self, wait: Duration) {
        let until = Instant::now().checked_add(wait);
        let st = self.inner.lock();
        if !self.inner.stopping() && !wait.is_zero() {
            drop(self.inner.wait(st, until));
        }
    }

    /// Starts extracting `bytes` in the background, waiting up to `wait` for a free slot.
    /// False: no slot (or the scheduler is stopping); try again in a later quantum.
    fn start(
        &self,
        key: Key,
        wait: Duration,
        format: Format,
        bytes: Vec<u8>,
        limits: Limits,
    ) -> bool {
        let until = Instant::now().checked_add(wait);
        let mut st = self.inner.lock();
        let now = Instant::now();
        st.entries.retain(|_, e| {
            e.finished
                .is_none_or(|f| now.duration_since(f) < UNCLAIMED_TTL)
        });
        while st.running >= self.inner.max_running {
            if until.is_some_and(|u| Instant::now() >= u) || self.inner.stopping() {
                return false;
            }
            st = self.inner.wait(st, until);
        }
        if self.inner.stopping() {
            return false;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = Interrupt::within(limits.max_time)
            .with_flag(cancel.clone())
            .with_flag(self.inner.stop.clone());
        st.entries.insert(
            key.clone(),
            Entry {
                cancel: cancel.clone(),
                result: None,
                finished: None,
            },
        );
        st.running += 1;
        drop(st);
        let inner = self.inner.clone();
        let thread_key = key.clone();
        let spawned = std::thread::Builder::new()
            .name("enclave-extract".into())
            .spawn(move || {
                let result = extract_and_chunk(format, &bytes, &limits, &stop);
                inner.finish(&thread_key, &cancel, result);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a background extraction");
            let mut st = self.inner.lock();
            st.running = st.running.saturating_sub(1);
            st.entries.remove(&key);
            return false;
        }
        true
    }
}

/// Runs one quantum of the workspace's pending work, most urgent first, each document
/// extracted on the caller within its limits (tests, tools).
pub fn run_quantum(ws: &Workspace, embedders: &Embedders, limits: &Limits) -> Result<Quantum> {
    run_quantum_in(ws, embedders, limits, &Runtime::inline())
}

/// Runs one quantum of the workspace's pending work, most urgent first, within `rt`.
pub fn run_quantum_in(
    ws: &Workspace,
    embedders: &Embedders,
    limits: &Limits,
    rt: &Runtime<'_>,
) -> Result<Quantum> {
    // Index work waits for a rebuild of the index, and a failed index change is reconciled
    // before anything else is indexed (and before its documents' jobs are acknowledged).
    ws.require_index()?;
    if ws.needs_reconcile() {
        let report = repair::reconcile(ws)?;
        tracing::info!(workspace_id = %ws.id(), added = report.added, removed = report.removed,
            "full-text index reconciled after a failed change");
        complete_fulltext_jobs(ws)?;
        return Ok(Quantum {
            chunks: report.added + report.removed,
            worked: true,
        });
    }
    complete_fulltext_jobs(ws)?;
    let step = index_batch(ws, limits, rt)?;
    if let Some(n) = step.done {
        return Ok(Quantum {
            chunks: n,
            worked: true,
        });
    }
    if let Some(n) = embed_batch(ws, embedders)? {
        return Ok(Quantum {
            chunks: n,
            worked: true,
        });
    }
    if let Some(n) = reembed_batch(ws, embedders)? {
        return Ok(Quantum {
            chunks: n,
            worked: true,
        });
    }
    // Extractions still running keep the workspace in the scheduler.
    Ok(Quantum {
        chunks: 0,
        worked: step.pending,
    })
}

/// What the index step did: documents written or failed (chunks), and whether some are still
/// being extracted.
struct IndexStep {
    done: Option<usize>,
    pending: bool,
}

struct Prepared {
    job_id: String,
    doc_id: String,
    title: String,
    pending_external_id: Option<String>,
    chunks: Vec<Chunk>,
    embedding: Option<Vec<f32>>,
}

/// Text handed to the embedder for a chunk: its title and heading path give it context.
pub fn embedding_text(title: &str, headings: &str, text: &str) -> String {
    let mut s = String::with_capacity(title.len() + headings.len() + text.len() + 2);
    for part in [title, headings] {
        if !part.is_empty() {
            s.push_str(part);
            s.push('\n');
        }
    }
    s.push_str(text);
    s
}

fn fail_job(ws: &Workspace, job_id: &str, doc_id: &str, msg: &str) -> Result<()> {
    let now = db::now();
    let conn = ws.conn();
    conn.execute(
        "UPDATE jobs SET status = 'failed', error = ?2, finished_at = ?3 WHERE id = ?1",
        params![job_id, msg, now],
    )?;
    conn.execute(
        "UPDATE documents SET status = 'failed', error = ?2, updated_at = ?3,
            pending_external_id = NULL WHERE id = ?1",
        params![doc_id, msg, now],
    )?;
    Ok(())
}

fn index_batch(ws: &Workspace, limits: &Limits, rt: &Runtime<'_>) -> Result<IndexStep> {
    type JobRow = (
        String,
        String,
        String,
        String,
        String,
        Option<String>,
        String,
    );
    let started = Instant::now();
    let end = started.checked_add(rt.budget);
    let left = || {
        end.map_or(Duration::MAX, |e| {
            e.saturating_duration_since(Instant::now())
        })
    };
    let jobs: Vec<JobRow> = {
        let conn = ws.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT j.id, j.document_id, j.payload, d.mime_type, d.content_hash,
                    d.pending_external_id, d.title
             FROM jobs j JOIN documents d ON d.id = j.document_id
             WHERE j.kind = 'ingest' AND j.status IN ('queued', 'running') AND j.phase = 'queued'
             ORDER BY j.id LIMIT ?1",
        )?;
        let rows = stmt.query_map([INDEX_BATCH_DOCS as i64], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    if jobs.is_empty() {
        // Jobs whose document vanished cannot run: close them.
        ws.conn().execute(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?1, error = 'the document was deleted'
             WHERE kind = 'ingest' AND status IN ('queued', 'running') AND phase = 'queued'
               AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.id = jobs.document_id)",
            [db::now()],
        )?;
        return Ok(IndexStep {
            done: None,
            pending: false,
        });
    }
    let active = vectors::active(&ws.conn())?;
    let stop_flag = rt.background.map(Extractions::stop_flag);
    let mut prepared = Vec::new();
    let mut total = 0usize;
    let mut handled = 0usize;
    let mut pending = false;
    for (job_id, doc_id, payload, mime, hash, pending_ext, title) in jobs {
        // The budget bounds the quantum: once spent (and something was done), the rest waits.
        if total >= INDEX_BATCH_CHUNKS || left().is_zero() {
            break;
        }
        let key = (ws.id(), doc_id.clone());
        let mut outcome: Option<Extraction> = None;
        if let Some(bg) = rt.background {
            match bg.poll(&key) {
                Poll::Done(r) => outcome = Some(r),
                Poll::Pending => {
                    pending = true;
                    continue;
                }
                Poll::Absent => {}
            }
        }
        let outcome = match outcome {
            Some(r) => r,
            None => {
                ws.conn().execute(
                    "UPDATE jobs SET attempts = attempts + (status = 'queued'), status = 'running',
                        started_at = coalesce(started_at, ?2) WHERE id = ?1",
                    params![job_id, db::now()],
                )?;
                let input = Format::from_mime(&mime)
                    .ok_or_else(|| format!("unsupported type {mime}"))
                    .and_then(|format| {
                        store::read_blob(ws, &hash)
                            .map(|bytes| (format, bytes))
                            .map_err(|e| format!("cannot read the original: {e}"))
                    });
                match input {
                    Err(msg) => Err(msg),
                    Ok((format, bytes)) => match rt.background {
                        Some(bg) if bytes.len() > INLINE_MAX_BYTES => {
                            bg.start(key, left(), format, bytes, *limits);
                            pending = true;
                            continue;
                        }
                        _ => {
                            // On the worker, within the budget (and the document's own limit).
                            let budget_cut = left() < limits.max_time;
                            let mut stop = if budget_cut {
                                Interrupt::within(left())
                            } else {
                                Interrupt::within(limits.max_time)
                            };
                            if let Some(f) = &stop_flag {
                                stop = stop.with_flag(f.clone());
                            }
                            let r = extract_and_chunk(format, &bytes, limits, &stop);
                            if r.is_err() && (stop.raised() || (budget_cut && stop.timed_out())) {
                                // Out of budget (or stopping): not the document's fault. It
                                // continues in the background, or in a later quantum.
                                if let (Some(bg), false) = (rt.background, stop.raised()) {
                                    bg.start(key, Duration::ZERO, format, bytes, *limits);
                                }
                                pending = true;
                                continue;
                            }
                            r
                        }
                    },
                }
            }
        };
        handled += 1;
        let outcome = outcome.map(|(extracted_title, chunks)| {
            let t = if title.is_empty() {
                // An extracted title is held to the API's limit on titles.
                let mut t = extracted_title.unwrap_or_default();
                if let Some((at, _)) = t.char_indices().nth(MAX_EXTRACTED_TITLE_CHARS) {
                    t.truncate(at);
                }
                t
            } else {
                title.clone()
            };
            (t, chunks)
        });
        let payload: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
        let embedding: Option<Vec<f32>> = payload
            .get("embedding")
            .and_then(|e| serde_json::from_value(e.clone()).ok());
        let outcome = outcome.and_then(|(title, mut chunks)| {
            if embedding.is_some() || active.config.is_user_provided() {
                // A document with its own vector is one chunk, within the chunk limit.
                if chunks.len() > 1 {
                    let text = chunks
                        .iter()
                        .map(|c| c.text.as_str())
                        .collect::<Vec<_>>()
                        .join("\n");
                    let words = chunks.iter().map(|c| c.words).sum();
                    chunks = vec![Chunk {
                        heading_path: String::new(),
                        text,
                        words,
                    }];
                }
                if chunks
                    .iter()
                    .any(|c| c.text.chars().count() > MAX_CHUNK_CHARS)
                {
                    return Err(format!(
                        "a document with its own embedding is one chunk, and its text is over the \
                         limit of {MAX_CHUNK_CHARS} characters"
                    ));
                }
            }
            Ok((title, chunks))
        });
        match outcome {
            Ok((title, chunks)) => {
                total += chunks.len().max(1);
                prepared.push(Prepared {
                    job_id,
                    doc_id,
                    title,
                    pending_external_id: pending_ext,
                    chunks,
                    embedding,
                });
            }
            Err(msg) => {
                tracing::info!(workspace_id = %ws.id(), document_id = %doc_id, error = %msg, "ingestion failed");
                fail_job(ws, &job_id, &doc_id, &msg)?;
                total += 1;
            }
        }
    }
    if let (Some(bg), 0, true) = (rt.background, handled, pending) {
        // Only extractions still running: wait (within the budget) for one to end rather than
        // come back at once.
        bg.wait_any(left());
    }
    let step = |n: usize| IndexStep {
        done: (handled > 0).then_some(n),
        pending,
    };
    if prepared.is_empty() {
        return Ok(step(total));
    }
    let f = ws.fields();
    let (done, indexed) = ws.index_transaction(
        || {
            let mut conn = ws.conn();
            let tx = conn.transaction()?;
            let now = db::now();
            let mut replaced: Vec<(String, String)> = Vec::new();
            let mut adds: Vec<(usize, Vec<i64>)> = Vec::new();
            for (pi, p) in prepared.iter().enumerate() {
                // Still wanted? (deleted or cancelled meanwhile)
                let alive = tx
                    .query_row("SELECT 1 FROM documents WHERE id = ?1", [&p.doc_id], |_| Ok(()))
                    .optional()?
                    .is_some();
                if !alive {
                    continue;
                }
                if let Some(ext) = &p.pending_external_id {
                    let holder: Option<(String, String)> = tx
                        .query_row(
                            "SELECT id, content_hash FROM documents WHERE external_id = ?1",
                            [ext],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .optional()?;
                    if let Some((hid, hhash)) = holder {
                        store::remove_document_rows(&tx, &hid)?;
                        tx.execute(
                            "UPDATE jobs SET status = 'cancelled', finished_at = ?2,
                                error = 'the document was replaced'
                             WHERE document_id = ?1 AND status IN ('queued', 'running')",
                            params![hid, now],
                        )?;
                        replaced.push((hid, hhash));
                    }
                    tx.execute(
                        "UPDATE documents SET external_id = ?2, pending_external_id = NULL WHERE id = ?1",
                        params![p.doc_id, ext],
                    )?;
                }
                let user_vector = p.embedding.as_ref().filter(|v| v.len() == active.dim);
                let mut ids = Vec::with_capacity(p.chunks.len());
                {
                    let mut ins = tx.prepare_cached(
                        "INSERT INTO chunks (document_id, ordinal, heading_path, text, token_count, embedded)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?;
                    for (i, c) in p.chunks.iter().enumerate() {
                        let embedded = i64::from(user_vector.is_some());
                        ins.execute(params![p.doc_id, i as i64, c.heading_path, c.text, c.words as i64, embedded])?;
                        ids.push(tx.last_insert_rowid());
                    }
                }
                if let (Some(v), Some(first)) = (user_vector, ids.first()) {
                    vectors::put(&tx, &active, *first, &super::embedders::normalize(v.clone()))?;
                }
                tx.execute(
                    "UPDATE documents SET status = 'indexed', title = ?2, chunk_count = ?3,
                        error = NULL, updated_at = ?4 WHERE id = ?1",
                    params![p.doc_id, p.title, p.chunks.len() as i64, now],
                )?;
                // Not acknowledged yet: the job leaves this phase once the full-text commit
                // below succeeded (`complete_fulltext_jobs`), so a job never succeeds with a
                // document that full-text search cannot find.
                tx.execute(
                    "UPDATE jobs SET phase = ?2, progress = 0.5 WHERE id = ?1",
                    params![p.job_id, FULLTEXT_PHASE],
                )?;
                adds.push((pi, ids));
            }
            let gen = repair::bump_generation(&tx)?;
            tx.commit()?;
            Ok(((replaced, adds), gen))
        },
        |w, (replaced, adds)| {
            for (hid, _) in replaced {
                w.delete_term(Term::from_field_text(f.document_id, hid));
            }
            for (pi, ids) in adds {
                let p = &prepared[*pi];
                for (c, id) in p.chunks.iter().zip(ids) {
                    w.add_document(repair::chunk_document(
                        &f,
                        *id as u64,
                        &p.doc_id,
                        &p.title,
                        &c.heading_path,
                        &c.text,
                    ))?;
                }
            }
            Ok(())
        },
    )?;
    let (replaced, _) = done;
    // On failure the documents are in SQLite, the index is marked for reconciliation, and
    // their jobs wait in the full-text phase until it is done (the scheduler retries).
    indexed?;
    complete_fulltext_jobs(ws)?;
    let hashes: Vec<String> = replaced.into_iter().map(|(_, h)| h).collect();
    store::collect_blobs(ws, &hashes);
    Ok(step(total))
}

/// The job phase of documents written to SQLite whose full-text commit has not succeeded yet.
const FULLTEXT_PHASE: &str = "fulltext";

/// Moves the jobs whose documents the index now holds past the full-text phase: to embedding,
/// or done when their chunks need no vectors. Only call it when the index is in sync.
fn complete_fulltext_jobs(ws: &Workspace) -> Result<()> {
    let mut conn = ws.conn();
    let pending = conn
        .query_row(
            "SELECT 1 FROM jobs WHERE status = 'running' AND phase = ?1 LIMIT 1",
            [FULLTEXT_PHASE],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !pending {
        return Ok(());
    }
    let tx = conn.transaction()?;
    tx.execute(
        "UPDATE jobs SET phase = 'embedding', progress = 0.5 WHERE status = 'running' AND phase = ?1",
        [FULLTEXT_PHASE],
    )?;
    tx.execute(
        "UPDATE jobs SET status = 'succeeded', phase = 'done', progress = 1, finished_at = ?1
         WHERE status = 'running' AND phase = 'embedding'
           AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.document_id = jobs.document_id AND c.embedded = 0)",
        [db::now()],
    )?;
    tx.commit().map_err(Error::from)
}

type ChunkRow = (i64, String, String, String, String);

fn unembedded(ws: &Workspace, limit: usize) -> Result<Vec<ChunkRow>> {
    let conn = ws.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT c.id, c.document_id, d.title, c.heading_path, c.text
         FROM chunks c JOIN documents d ON d.id = c.document_id
         WHERE c.embedded = 0 ORDER BY c.id LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn embed_rows(
    embedders: &Embedders,
    cfg: &EmbedderConfig,
    rows: &[ChunkRow],
) -> Result<Vec<Vec<f32>>> {
    let e = embedders
        .get(cfg)?
        .ok_or_else(|| Error::internal("no embedder for user-provided vectors"))?;
    let texts: Vec<String> = rows
        .iter()
        .map(|(_, _, title, h, text)| embedding_text(title, h, text))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vs = e.embed(&refs)?;
    if vs.len() != rows.len() {
        return Err(Error::Provider(
            "the embedder returned the wrong number of vectors".into(),
        ));
    }
    Ok(vs)
}

fn embed_batch(ws: &Workspace, embedders: &Embedders) -> Result<Option<usize>> {
    let (active, building) = {
        let conn = ws.conn();
        (vectors::active(&conn)?, vectors::building(&conn)?)
    };
    if active.config.is_user_provided() {
        return Ok(None);
    }
    let rows = unembedded(ws, active.config.batch_size())?;
    if rows.is_empty() {
        finish_embedding_jobs(ws, None)?;
        return Ok(None);
    }
    let result = embed_rows(embedders, &active.config, &rows).and_then(|a| {
        let b = match &building {
            Some(s) if !s.config.is_user_provided() => {
                Some(embed_rows(embedders, &s.config, &rows)?)
            }
            _ => None,
        };
        Ok((a, b))
    });
    let (vs, building_vs) = match result {
        Ok(v) => v,
        Err(e) => {
            give_up_or_retry(ws, &rows, &e)?;
            return Err(e);
        }
    };
    {
        let mut conn = ws.conn();
        let tx = conn.transaction()?;
        for (i, (id, ..)) in rows.iter().enumerate() {
            let exists = tx
                .query_row("SELECT 1 FROM chunks WHERE id = ?1", [id], |_| Ok(()))
                .optional()?
                .is_some();
            if !exists {
                continue;
            }
            check_dim(&active, &vs[i])?;
            vectors::put(&tx, &active, *id, &vs[i])?;
            if let (Some(space), Some(bv)) = (&building, &building_vs) {
                check_dim(space, &bv[i])?;
                vectors::put(&tx, space, *id, &bv[i])?;
            }
            tx.execute("UPDATE chunks SET embedded = 1 WHERE id = ?1", [id])?;
        }
        tx.commit()?;
    }
    let mut docs: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    docs.sort_unstable();
    docs.dedup();
    finish_embedding_jobs(ws, Some(&docs))?;
    Ok(Some(rows.len()))
}

fn check_dim(space: &Space, v: &[f32]) -> Result<()> {
    if v.len() != space.dim {
        return Err(Error::Provider(format!(
            "the embedder returned {} dimensions; the workspace's vectors have {}",
            v.len(),
            space.dim
        )));
    }
    Ok(())
}

/// Counts a failed embedding attempt on the jobs of the chunks' documents; after
/// [`MAX_EMBED_ATTEMPTS`] their chunks are given up (the documents stay searchable by full
/// text) and the jobs fail with the provider's error.
fn give_up_or_retry(ws: &Workspace, rows: &[ChunkRow], err: &Error) -> Result<()> {
    let msg = format!("embedding failed: {err}");
    let mut docs: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    docs.sort_unstable();
    docs.dedup();
    let mut conn = ws.conn();
    let tx = conn.transaction()?;
    let now = db::now();
    for d in docs {
        tx.execute(
            "UPDATE jobs SET attempts = attempts + 1, error = ?2
             WHERE document_id = ?1 AND status = 'running' AND phase = 'embedding'",
            params![d, msg],
        )?;
        let attempts: i64 = tx
            .query_row(
                "SELECT coalesce(max(attempts), 0) FROM jobs WHERE document_id = ?1 AND phase = 'embedding'",
                [d],
                |r| r.get(0),
            )?;
        if attempts > MAX_EMBED_ATTEMPTS {
            tx.execute(
                "UPDATE chunks SET embedded = 2 WHERE document_id = ?1 AND embedded = 0",
                [d],
            )?;
            tx.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?2
                 WHERE document_id = ?1 AND status = 'running' AND phase = 'embedding'",
                params![d, now],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Jobs in the embedding phase whose documents have all their vectors are done: those of
/// `docs` (the documents a batch touched), or all of them.
fn finish_embedding_jobs(ws: &Workspace, docs: Option<&[&str]>) -> Result<()> {
    let conn = ws.conn();
    let now = db::now();
    match docs {
        None => {
            conn.execute(
                "UPDATE jobs SET status = 'succeeded', phase = 'done', progress = 1, finished_at = ?1
                 WHERE status = 'running' AND phase = 'embedding'
                   AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.document_id = jobs.document_id AND c.embedded = 0)",
                [&now],
            )?;
        }
        Some(docs) => {
            let mut stmt = conn.prepare_cached(
                "UPDATE jobs SET status = 'succeeded', phase = 'done', progress = 1, finished_at = ?1
                 WHERE document_id = ?2 AND status = 'running' AND phase = 'embedding'
                   AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.document_id = ?2 AND c.embedded = 0)",
            )?;
            for d in docs {
                stmt.execute(params![now, d])?;
            }
        }
    }
    Ok(())
}

fn reembed_batch(ws: &Workspace, embedders: &Embedders) -> Result<Option<usize>> {
    let (job, building) = {
        let conn = ws.conn();
        let job: Option<(String, String)> = conn
            .query_row(
                "SELECT id, payload FROM jobs WHERE kind = 'reembed' AND status IN ('queued', 'running')
                 ORDER BY id LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        (job, vectors::building(&conn)?)
    };
    let Some((job_id, payload)) = job else {
        return Ok(None);
    };
    let Some(space) = building else {
        ws.conn().execute(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?2, error = 'nothing to re-embed'
             WHERE id = ?1",
            params![job_id, db::now()],
        )?;
        return Ok(Some(0));
    };
    let payload: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
    let cursor = payload.get("cursor").and_then(Value::as_i64).unwrap_or(0);
    let started = Instant::now();
    let rows: Vec<ChunkRow> = {
        let conn = ws.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT c.id, c.document_id, d.title, c.heading_path, c.text
             FROM chunks c JOIN documents d ON d.id = c.document_id
             WHERE c.id > ?1 ORDER BY c.id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![cursor, space.config.batch_size() as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let now = db::now();
    if rows.is_empty() {
        // Every chunk has its vector in the new space: swap atomically.
        let mut conn = ws.conn();
        let tx = conn.transaction()?;
        let old = vectors::active(&tx)?;
        vectors::drop_space(&tx, &old)?;
        tx.execute(
            "UPDATE vector_spaces SET state = 'active' WHERE id = ?1",
            [space.id],
        )?;
        tx.execute("UPDATE chunks SET embedded = 1 WHERE embedded <> 1", [])?;
        tx.execute(
            "UPDATE jobs SET status = 'succeeded', phase = 'done', progress = 1, finished_at = ?2
             WHERE id = ?1",
            params![job_id, now],
        )?;
        tx.commit()?;
        tracing::info!(workspace_id = %ws.id(), elapsed_ms = started.elapsed().as_millis() as u64, "re-embedding finished");
        return Ok(Some(0));
    }
    let vs = match embed_rows(embedders, &space.config, &rows) {
        Ok(vs) => vs,
        Err(e) => {
            let conn = ws.conn();
            conn.execute(
                "UPDATE jobs SET attempts = attempts + 1, error = ?2, status = 'running' WHERE id = ?1",
                params![job_id, format!("embedding failed: {e}")],
            )?;
            return Err(e);
        }
    };
    let total: i64 = ws
        .conn()
        .query_row("SELECT count(*) FROM chunks", [], |r| r.get(0))?;
    let last = rows.last().map(|r| r.0).unwrap_or(cursor);
    let mut conn = ws.conn();
    let tx = conn.transaction()?;
    for (row, v) in rows.iter().zip(&vs) {
        check_dim(&space, v)?;
        vectors::put(&tx, &space, row.0, v)?;
    }
    let done: i64 = tx.query_row("SELECT count(*) FROM chunks WHERE id <= ?1", [last], |r| {
        r.get(0)
    })?;
    tx.execute(
        "UPDATE jobs SET status = 'running', started_at = coalesce(started_at, ?3), payload = ?2,
            progress = ?4 WHERE id = ?1",
        params![
            job_id,
            serde_json::json!({ "cursor": last }).to_string(),
            now,
            if total > 0 {
                done as f64 / total as f64
            } else {
                1.0
            }
        ],
    )?;
    tx.commit()?;
    Ok(Some(rows.len()))
}
