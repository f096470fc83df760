//! The work of ingestion jobs, in bounded quanta that the scheduler hands out:
//!
//! 1. **index**: up to a batch of queued documents are extracted, chunked and written in
//!    pieces ([`INDEX_BATCH_CHUNKS`], [`INDEX_BATCH_BYTES`]), each one SQLite transaction and one
//!    Tantivy commit. A document's last piece replaces the holder of its `external_id` and
//!    makes it `indexed`, searchable by full text; a long document is written over several
//!    quanta and stays `indexing` until then.
//! 2. **embed**: a batch of chunks without vectors is embedded (in calls sized to the time
//!    left) and stored.
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
//! [`MAX_BACKGROUND_EXTRACTIONS`] at a time, shared fairly by org, each within
//! [`Limits::max_time`]) while the worker serves other workspaces; a later quantum of its
//! workspace picks the result up.
//! Cancelling the job or deleting the document raises its extraction's flag, and so does
//! stopping the scheduler: every extraction loop checks it ([`extract::Interrupt`]).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{params, OptionalExtension};
use serde_json::Value;
use tantivy::Term;

use super::chunk::{chunk_with, Chunk, ChunkConfig, MAX_CHUNK_CHARS};
use super::embedders::{EmbedderConfig, Embedders};
use super::extract::{self, Format, Interrupt, Limits};
use super::status::{JobPhase, UNFINISHED_JOBS_SQL};
use super::store;
use super::vectors::{self, Space};
use crate::db;
use crate::error::{Error, Result};
use crate::workspace::{repair, Workspace};
use uuid::Uuid;

/// Most documents indexed in one quantum.
const INDEX_BATCH_DOCS: usize = 64;
/// Stop adding documents to a quantum past this many chunks; a piece written in one
/// transaction and one full-text commit holds at most this many.
pub const INDEX_BATCH_CHUNKS: usize = 4000;
/// Stop adding documents to a quantum past this much chunk text (bytes); a piece holds at most
/// this much. Writing (SQLite and Tantivy) runs at ≈ 5 MB/s in a dev build: ≈ 0.4 s a piece.
pub const INDEX_BATCH_BYTES: usize = 2 << 20;
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
    /// Chunks written to the index (or of documents that failed) by this quantum.
    pub indexed: usize,
    /// Chunks embedded (first embedding or re-embedding) by this quantum.
    pub embedded: usize,
    /// Estimated tokens of the texts embedded (4 characters a token, as chat estimates).
    pub embedded_tokens: u64,
}

/// How quanta run: the time budget and, in a server (or CLI) with a scheduler, the
/// background extractions.
#[derive(Clone, Copy)]
pub struct Runtime<'a> {
    pub budget: Duration,
    pub background: Option<&'a Extractions>,
    /// The org whose quantum this is: background extractions are shared fairly by org.
    pub org: Uuid,
}

impl Runtime<'_> {
    /// No budget, no background: each document is extracted on the caller within its limits.
    pub fn inline() -> Runtime<'static> {
        Runtime {
            budget: Duration::MAX,
            background: None,
            org: Uuid::nil(),
        }
    }
}

/// The result of extracting and chunking one document: its extracted title and chunks, or
/// the reason it failed.
pub(super) type Extraction = std::result::Result<(Option<String>, Vec<Chunk>), String>;

/// Extracts and chunks `bytes`, stopping when `stop` says so.
pub(super) fn extract_and_chunk(
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

/// What a queued extraction reads: the document's original and how to read it.
#[derive(Clone)]
struct Request {
    format: Format,
    path: PathBuf,
    limits: Limits,
}

enum Stage {
    /// Waiting for a slot (its key is in [`ExState::queue`]).
    Queued,
    /// On a thread (started at `tick`); raising `preempt` makes it give its slot back to an
    /// org with fewer extractions running, and queue again.
    Running { preempt: Arc<AtomicBool>, tick: u64 },
    /// Extracted (and `written` of its chunks already stored, for a document written over
    /// several quanta): a quantum of its workspace claims it.
    Done {
        result: Extraction,
        written: usize,
        at: Instant,
    },
}

struct Entry {
    org: Uuid,
    cancel: Arc<AtomicBool>,
    /// How to extract it again (after a preemption); `None` for a parked write.
    request: Option<Request>,
    stage: Stage,
}

#[derive(Default)]
struct ExState {
    entries: HashMap<Key, Entry>,
    /// Extractions waiting for a slot, oldest first.
    queue: VecDeque<Key>,
    /// Threads running.
    running: usize,
    /// When an org, and a workspace, last got a slot (ticks), for round-robin.
    served: HashMap<Uuid, u64>,
    tick: u64,
}

/// The server's background extractions, keyed by workspace and document, and the documents
/// written over several quanta between two of them.
///
/// At most `max_running` run at once. A request never waits for a slot: it is queued, and a
/// free slot goes to the org with the fewest extractions running (ties: the org, then the
/// workspace, served least recently), so one org uploading many large documents cannot make
/// another org's wait for all of them. When every slot is taken and a queued org runs at least
/// two fewer than another, that other org's youngest extraction is interrupted and queued
/// again (it restarts later): an org holds more than its share of the slots only while no
/// other org waits.
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
    /// The extraction, and how many of its chunks are already stored.
    Done(Extraction, usize),
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

    /// Extractions running per org, not counting those asked to yield.
    fn holdings(st: &ExState) -> HashMap<Uuid, usize> {
        let mut h = HashMap::new();
        for e in st.entries.values() {
            if matches!(&e.stage, Stage::Running { preempt, .. } if !preempt.load(Ordering::Relaxed))
            {
                *h.entry(e.org).or_insert(0) += 1;
            }
        }
        h
    }

    /// Starts queued extractions while slots are free, fairest first; when none is free and a
    /// waiting org holds at least two fewer slots than another, asks that other org's youngest
    /// extraction to yield.
    fn dispatch(self: &Arc<Self>, st: &mut ExState) {
        while !self.stopping() && !st.queue.is_empty() {
            let holding = Self::holdings(st);
            let held = |org: &Uuid| holding.get(org).copied().unwrap_or(0);
            if st.running >= self.max_running {
                self.preempt_for_waiting(st, &held);
                return;
            }
            // The queued extraction whose org holds the fewest slots, then whose org and
            // workspace were served least recently, then the oldest.
            let mut best: Option<(usize, (usize, u64, u64))> = None;
            for (i, key) in st.queue.iter().enumerate() {
                let Some(e) = st.entries.get(key) else {
                    continue;
                };
                let rank = (
                    held(&e.org),
                    st.served.get(&e.org).copied().unwrap_or(0),
                    st.served.get(&key.0).copied().unwrap_or(0),
                );
                if best.is_none_or(|(_, r)| rank < r) {
                    best = Some((i, rank));
                }
            }
            let Some((i, _)) = best else {
                st.queue.clear();
                return;
            };
            let Some(key) = st.queue.remove(i) else {
                return;
            };
            self.spawn(st, key);
        }
    }

    fn preempt_for_waiting(&self, st: &ExState, held: &dyn Fn(&Uuid) -> usize) {
        let Some(waiting) = st
            .queue
            .iter()
            .filter_map(|k| st.entries.get(k))
            .map(|e| held(&e.org))
            .min()
        else {
            return;
        };
        let youngest = st
            .entries
            .values()
            .filter(|e| held(&e.org) >= waiting + 2)
            .filter_map(|e| match &e.stage {
                Stage::Running { preempt, tick } if !preempt.load(Ordering::Relaxed) => {
                    Some((*tick, preempt))
                }
                _ => None,
            })
            .max_by_key(|(tick, _)| *tick);
        if let Some((_, preempt)) = youngest {
            preempt.store(true, Ordering::Release);
        }
    }

    /// Starts the queued extraction `key` on a thread of its own.
    fn spawn(self: &Arc<Self>, st: &mut ExState, key: Key) {
        st.tick += 1;
        let tick = st.tick;
        let Some(e) = st.entries.get_mut(&key) else {
            return;
        };
        let Some(req) = e.request.clone() else {
            return;
        };
        let preempt = Arc::new(AtomicBool::new(false));
        e.stage = Stage::Running {
            preempt: preempt.clone(),
            tick,
        };
        let cancel = e.cancel.clone();
        let org = e.org;
        st.served.insert(org, tick);
        st.served.insert(key.0, tick);
        if st.served.len() > 4096 {
            let live: std::collections::HashSet<Uuid> =
                st.entries.iter().flat_map(|(k, e)| [k.0, e.org]).collect();
            st.served.retain(|id, _| live.contains(id));
        }
        st.running += 1;
        let stop = Interrupt::within(req.limits.max_time)
            .with_flag(cancel.clone())
            .with_flag(self.stop.clone())
            .with_flag(preempt.clone());
        let inner = self.clone();
        let thread_key = key.clone();
        let spawned = std::thread::Builder::new()
            .name("enclave-extract".into())
            .spawn(move || {
                let result = std::fs::read(&req.path)
                    .map_err(|e| format!("cannot read the original: {e}"))
                    .and_then(|bytes| extract_and_chunk(req.format, &bytes, &req.limits, &stop));
                inner.finish(&thread_key, &cancel, &preempt, result);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a background extraction");
            st.running = st.running.saturating_sub(1);
            // Queued again: a later finish or request retries it.
            if let Some(e) = st.entries.get_mut(&key) {
                e.stage = Stage::Queued;
                st.queue.push_front(key);
            }
        }
    }

    /// Records a finished extraction, unless it was cancelled (its entry is gone) or
    /// interrupted by the shutdown (nothing to keep); a preempted one is queued again, first
    /// in line.
    fn finish(
        self: &Arc<Self>,
        key: &Key,
        cancel: &Arc<AtomicBool>,
        preempt: &Arc<AtomicBool>,
        result: Extraction,
    ) {
        let mut st = self.lock();
        st.running = st.running.saturating_sub(1);
        let interrupted = matches!(&result, Err(m) if m == extract::INTERRUPTED);
        let ours = st
            .entries
            .get(key)
            .is_some_and(|e| Arc::ptr_eq(&e.cancel, cancel));
        if ours {
            let yielded = preempt.load(Ordering::Acquire)
                && !cancel.load(Ordering::Acquire)
                && !self.stopping();
            if yielded && interrupted {
                if let Some(e) = st.entries.get_mut(key) {
                    e.stage = Stage::Queued;
                }
                st.queue.push_front(key.clone());
            } else if interrupted {
                st.entries.remove(key);
            } else if let Some(e) = st.entries.get_mut(key) {
                e.stage = Stage::Done {
                    result,
                    written: 0,
                    at: Instant::now(),
                };
            }
        }
        self.dispatch(&mut st);
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
        let mut st = self.inner.lock();
        for e in st.entries.values() {
            e.cancel.store(true, Ordering::Release);
        }
        let queued = std::mem::take(&mut st.queue);
        for k in queued {
            st.entries.remove(&k);
        }
        drop(st);
        self.inner.cv.notify_all();
    }

    /// The flag [`Extractions::stop`] raises.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.inner.stop.clone()
    }

    /// Interrupts the extraction of a document (its job was cancelled, it was deleted), and
    /// forgets its queued request or parked write.
    pub fn cancel(&self, ws: Uuid, document_id: &str) {
        let key = (ws, document_id.to_string());
        let mut st = self.inner.lock();
        if let Some(e) = st.entries.remove(&key) {
            e.cancel.store(true, Ordering::Release);
            if matches!(e.stage, Stage::Queued) {
                st.queue.retain(|k| *k != key);
            }
        }
        drop(st);
        self.inner.cv.notify_all();
    }

    /// Background extractions running now.
    pub fn running(&self) -> usize {
        self.inner.lock().running
    }

    /// Background extractions waiting for a slot.
    pub fn queued(&self) -> usize {
        self.inner.lock().queue.len()
    }

    /// The state of `key`'s extraction; a finished one is handed over (once).
    fn poll(&self, key: &Key) -> Poll {
        let mut st = self.inner.lock();
        match st.entries.get(key).map(|e| &e.stage) {
            None => Poll::Absent,
            Some(Stage::Queued | Stage::Running { .. }) => Poll::Pending,
            Some(Stage::Done { .. }) => match st.entries.remove(key).map(|e| e.stage) {
                Some(Stage::Done {
                    result, written, ..
                }) => Poll::Done(result, written),
                _ => Poll::Absent,
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

    /// Drops finished work that no quantum claimed (its workspace was deleted).
    fn prune(st: &mut ExState) {
        let now = Instant::now();
        st.entries.retain(|_, e| match &e.stage {
            Stage::Done { at, .. } => now.duration_since(*at) < UNCLAIMED_TTL,
            _ => true,
        });
    }

    /// Queues the extraction of the original at `path` for `org`; it starts as soon as the
    /// fair order gives it a slot. False only when the scheduler is stopping (try again in a
    /// later quantum). Never waits.
    fn start(&self, org: Uuid, key: Key, format: Format, path: PathBuf, limits: Limits) -> bool {
        let mut st = self.inner.lock();
        Self::prune(&mut st);
        if self.inner.stopping() {
            return false;
        }
        if st.entries.contains_key(&key) {
            return true;
        }
        st.entries.insert(
            key.clone(),
            Entry {
                org,
                cancel: Arc::new(AtomicBool::new(false)),
                request: Some(Request {
                    format,
                    path,
                    limits,
                }),
                stage: Stage::Queued,
            },
        );
        st.queue.push_back(key);
        self.inner.dispatch(&mut st);
        true
    }

    /// Keeps a document whose chunks are being written over several quanta until the next
    /// quantum of its workspace (`written` of them are stored).
    fn park(&self, org: Uuid, key: Key, title: String, chunks: Vec<Chunk>, written: usize) {
        let mut st = self.inner.lock();
        if self.inner.stopping() {
            return;
        }
        st.entries.insert(
            key,
            Entry {
                org,
                cancel: Arc::new(AtomicBool::new(false)),
                request: None,
                stage: Stage::Done {
                    result: Ok((Some(title), chunks)),
                    written,
                    at: Instant::now(),
                },
            },
        );
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
    let end = Instant::now().checked_add(rt.budget);
    let left = move || {
        end.map_or(Duration::MAX, |e| {
            e.saturating_duration_since(Instant::now())
        })
    };
    ws.require_index()?;
    if ws.needs_reconcile() {
        let report = repair::reconcile(ws)?;
        tracing::info!(workspace_id = %ws.id(), added = report.added, removed = report.removed,
            "full-text index reconciled after a failed change");
        complete_fulltext_jobs(ws)?;
        return Ok(Quantum {
            chunks: report.added + report.removed,
            worked: true,
            ..Default::default()
        });
    }
    complete_fulltext_jobs(ws)?;
    let step = index_batch(ws, limits, rt)?;
    if let Some(n) = step.done {
        return Ok(Quantum {
            chunks: n,
            worked: true,
            indexed: n,
            ..Default::default()
        });
    }
    if let Some((n, tokens)) = embed_batch(ws, embedders, &left)? {
        return Ok(Quantum {
            chunks: n,
            worked: true,
            embedded: n,
            embedded_tokens: tokens,
            ..Default::default()
        });
    }
    if let Some((n, tokens)) = reembed_batch(ws, embedders, &left)? {
        return Ok(Quantum {
            chunks: n,
            worked: true,
            embedded: n,
            embedded_tokens: tokens,
            ..Default::default()
        });
    }
    // Extractions still running keep the workspace in the scheduler.
    Ok(Quantum {
        chunks: 0,
        worked: step.pending,
        ..Default::default()
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
    /// Chunks already stored by earlier quanta (a document written over several).
    written: usize,
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

/// Fails a document's job. Chunks that an interrupted write over several quanta left behind
/// are removed with it (from SQLite and the full-text index).
fn fail_job(ws: &Workspace, job_id: &str, doc_id: &str, msg: &str) -> Result<()> {
    let now = db::now();
    let fail = |tx: &rusqlite::Connection| -> Result<()> {
        tx.execute(
            "UPDATE jobs SET status = 'failed', error = ?2, finished_at = ?3, payload = '{}'
             WHERE id = ?1",
            params![job_id, msg, now],
        )?;
        tx.execute(
            "DELETE FROM document_bodies WHERE document_id = ?1",
            [doc_id],
        )?;
        tx.execute(
            "UPDATE documents SET status = 'failed', error = ?2, updated_at = ?3,
                pending_external_id = NULL WHERE id = ?1",
            params![doc_id, msg, now],
        )?;
        Ok(())
    };
    let stale = ws
        .conn()
        .query_row(
            "SELECT 1 FROM chunks WHERE document_id = ?1 LIMIT 1",
            [doc_id],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !stale {
        return fail(&ws.conn());
    }
    let f = ws.fields();
    let (_, indexed) = ws.index_transaction(
        || {
            let mut conn = ws.conn();
            let tx = conn.transaction()?;
            remove_stale_chunks(&tx, doc_id)?;
            fail(&tx)?;
            let gen = repair::bump_generation(&tx)?;
            tx.commit()?;
            Ok(((), gen))
        },
        |w, _| {
            w.delete_term(Term::from_field_text(f.document_id, doc_id));
            Ok(())
        },
    )?;
    // On failure the index is marked for reconciliation, which drops the stale entries.
    indexed
}

/// Removes the chunks (and vectors) of a document that is not indexed yet: what a write over
/// several quanta stored before the server stopped. Whether there were any.
fn remove_stale_chunks(tx: &rusqlite::Connection, doc_id: &str) -> Result<bool> {
    let ids: Vec<i64> = {
        let mut stmt = tx.prepare_cached("SELECT id FROM chunks WHERE document_id = ?1")?;
        let rows = stmt.query_map([doc_id], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    if ids.is_empty() {
        return Ok(false);
    }
    vectors::delete_chunks(tx, &ids)?;
    tx.execute("DELETE FROM chunks WHERE document_id = ?1", [doc_id])?;
    Ok(true)
}

fn index_batch(ws: &Workspace, limits: &Limits, rt: &Runtime<'_>) -> Result<IndexStep> {
    let started = Instant::now();
    let end = started.checked_add(rt.budget);
    let left = || {
        end.map_or(Duration::MAX, |e| {
            e.saturating_duration_since(Instant::now())
        })
    };
    let jobs = queued_jobs(ws)?;
    if jobs.is_empty() {
        cancel_orphaned_jobs(ws)?;
        return Ok(IndexStep {
            done: None,
            pending: false,
        });
    }
    let active = vectors::active(&ws.conn())?;
    let mut prepared = Vec::new();
    let mut total = 0usize;
    let mut bytes_total = 0usize;
    let mut handled = 0usize;
    let mut failed = 0usize;
    let mut pending = false;
    for job in jobs {
        // The budget bounds the quantum: once spent (and something was done), the rest waits.
        if total >= INDEX_BATCH_CHUNKS || bytes_total >= INDEX_BATCH_BYTES || left().is_zero() {
            break;
        }
        let Extracted::Ready(outcome, written) = extract_job(ws, limits, rt, &job, &left)? else {
            pending = true;
            continue;
        };
        handled += 1;
        match prepare(&job, outcome, written, &active.config) {
            Ok(p) => {
                total += (p.chunks.len() - p.written).max(1);
                bytes_total += p.chunks[p.written..]
                    .iter()
                    .map(|c| c.text.len())
                    .sum::<usize>();
                prepared.push(p);
            }
            Err(msg) => {
                tracing::info!(workspace_id = %ws.id(), document_id = %job.doc_id, error = %msg, "ingestion failed");
                fail_job(ws, &job.job_id, &job.doc_id, &msg)?;
                total += 1;
                failed += 1;
            }
        }
    }
    if let (Some(bg), 0, true) = (rt.background, handled, pending) {
        // Only extractions still running: wait (within the budget) for one to end rather than
        // come back at once.
        bg.wait_any(left());
    }
    if prepared.is_empty() {
        return Ok(IndexStep {
            done: (handled > 0).then_some(failed),
            pending,
        });
    }
    let (written, more) = write_prepared(ws, rt, prepared, &left)?;
    Ok(IndexStep {
        done: Some(failed + written),
        pending: pending || more,
    })
}

/// An ingest job in the queue, with what its document's row says.
struct QueuedJob {
    job_id: String,
    doc_id: String,
    payload: String,
    mime: String,
    hash: String,
    pending_external_id: Option<String>,
    title: String,
    /// The uploaded file's name: the title of last resort.
    source_name: Option<String>,
    byte_size: i64,
    /// The document's own vector, waiting in `document_bodies` (older jobs: in the payload).
    embedding: Option<Vec<u8>>,
}

impl QueuedJob {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<QueuedJob> {
        Ok(QueuedJob {
            job_id: r.get("id")?,
            doc_id: r.get("document_id")?,
            payload: r.get("payload")?,
            mime: r.get("mime_type")?,
            hash: r.get("content_hash")?,
            pending_external_id: r.get("pending_external_id")?,
            title: r.get("title")?,
            source_name: r.get("source_name")?,
            byte_size: r.get("byte_size")?,
            embedding: r.get("embedding")?,
        })
    }
}

/// The first [`INDEX_BATCH_DOCS`] queued ingest jobs whose document exists, oldest first.
fn queued_jobs(ws: &Workspace) -> Result<Vec<QueuedJob>> {
    let conn = ws.conn();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT j.id, j.document_id, j.payload, d.mime_type, d.content_hash,
                d.pending_external_id, d.title, d.source_name, d.byte_size, b.embedding
         FROM jobs j JOIN documents d ON d.id = j.document_id
         LEFT JOIN document_bodies b ON b.document_id = d.id
         WHERE j.kind = 'ingest' AND j.status IN {UNFINISHED_JOBS_SQL} AND j.phase = 'queued'
         ORDER BY j.id LIMIT ?1"
    ))?;
    let rows = stmt.query_map([INDEX_BATCH_DOCS as i64], QueuedJob::from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Jobs whose document vanished cannot run: closes them.
fn cancel_orphaned_jobs(ws: &Workspace) -> Result<()> {
    ws.conn().execute(
        &format!(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?1, error = 'the document was deleted'
             WHERE kind = 'ingest' AND status IN {UNFINISHED_JOBS_SQL} AND phase = 'queued'
               AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.id = jobs.document_id)"
        ),
        [db::now()],
    )?;
    Ok(())
}

/// What became of a job's extraction in this quantum.
enum Extracted {
    /// Extracted (or failed), with how many of its chunks earlier quanta stored.
    Ready(Extraction, usize),
    /// Still running, or queued, in the background (or out of budget): a later quantum.
    Later,
}

/// A job's extraction: one the background finished, or one run now (inline within the
/// budget, or started in the background for a large original).
fn extract_job(
    ws: &Workspace,
    limits: &Limits,
    rt: &Runtime<'_>,
    job: &QueuedJob,
    left: &dyn Fn() -> Duration,
) -> Result<Extracted> {
    let key = (ws.id(), job.doc_id.clone());
    if let Some(bg) = rt.background {
        match bg.poll(&key) {
            Poll::Done(r, w) => return Ok(Extracted::Ready(r, w)),
            Poll::Pending => return Ok(Extracted::Later),
            Poll::Absent => {}
        }
    }
    ws.conn().execute(
        "UPDATE jobs SET attempts = attempts + (status = 'queued'), status = 'running',
            started_at = coalesce(started_at, ?2) WHERE id = ?1",
        params![job.job_id, db::now()],
    )?;
    let path = store::blob_path(ws, &job.hash);
    // A document sent as text waits in the database, not in a blob (it is never over
    // `INLINE_MAX_BYTES`, so never extracted in the background, which reads files).
    let inline = store::inline_body(&ws.conn(), &job.doc_id)?;
    let format = match Format::from_mime(&job.mime) {
        Some(f) => f,
        None => {
            return Ok(Extracted::Ready(
                Err(format!("unsupported type {}", job.mime)),
                0,
            ))
        }
    };
    if let (Some(bg), true) = (rt.background, job.byte_size > INLINE_MAX_BYTES as i64) {
        // Queued for a background slot (in the fair order of orgs).
        bg.start(rt.org, key, format, path, *limits);
        return Ok(Extracted::Later);
    }
    if let Some(bytes) = inline {
        return Ok(extract_inline(rt, key, format, path, &bytes, limits, left));
    }
    match std::fs::read(&path) {
        Err(e) => Ok(Extracted::Ready(
            Err(format!("cannot read the original: {e}")),
            0,
        )),
        Ok(bytes) => Ok(extract_inline(rt, key, format, path, &bytes, limits, left)),
    }
}

/// Extracts an original on the worker, within the budget (and the document's own limit).
fn extract_inline(
    rt: &Runtime<'_>,
    key: Key,
    format: Format,
    path: PathBuf,
    bytes: &[u8],
    limits: &Limits,
    left: &dyn Fn() -> Duration,
) -> Extracted {
    let budget_cut = left() < limits.max_time;
    let mut stop = if budget_cut {
        Interrupt::within(left())
    } else {
        Interrupt::within(limits.max_time)
    };
    if let Some(f) = rt.background.map(Extractions::stop_flag) {
        stop = stop.with_flag(f);
    }
    let r = extract_and_chunk(format, bytes, limits, &stop);
    if r.is_err() && (stop.raised() || (budget_cut && stop.timed_out())) {
        // Out of budget (or stopping): not the document's fault. It continues in the
        // background, which never hands it back to a worker's budget: a document that always
        // outlasts the budget is tried inline once.
        if let (Some(bg), false) = (rt.background, stop.raised()) {
            bg.start(rt.org, key, format, path, *limits);
        }
        return Extracted::Later;
    }
    Extracted::Ready(r, 0)
}

/// A document ready to be written: its title (the given one, else the extracted one), its
/// chunks and its own vector; or the reason it fails.
fn prepare(
    job: &QueuedJob,
    outcome: Extraction,
    written: usize,
    embedder: &EmbedderConfig,
) -> std::result::Result<Prepared, String> {
    let embedding = job
        .embedding
        .as_deref()
        .map(vectors::from_blob)
        .or_else(|| own_embedding(&job.payload));
    let prepared = outcome.and_then(|(extracted_title, chunks)| {
        let title = document_title(&job.title, extracted_title, job.source_name.as_deref());
        let chunks = if embedding.is_some() || embedder.is_user_provided() {
            one_chunk(chunks)?
        } else {
            chunks
        };
        Ok((title, chunks))
    });
    prepared.map(|(title, chunks)| Prepared {
        written: written.min(chunks.len()),
        job_id: job.job_id.clone(),
        doc_id: job.doc_id.clone(),
        title,
        pending_external_id: job.pending_external_id.clone(),
        chunks,
        embedding,
    })
}

/// The document's title: the one it was given, else the extracted one (its own metadata, else
/// its first heading: `extract::extract_with`), else the uploaded file's name, held to the
/// API's limit on titles.
pub(super) fn document_title(
    given: &str,
    extracted: Option<String>,
    file_name: Option<&str>,
) -> String {
    if !given.is_empty() {
        return given.to_string();
    }
    let mut t = extracted
        .filter(|t| !t.trim().is_empty())
        .or_else(|| {
            file_name
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_default();
    if let Some((at, _)) = t.char_indices().nth(MAX_EXTRACTED_TITLE_CHARS) {
        t.truncate(at);
    }
    t
}

/// The vector the payload of a job queued before issue 16 brings for its document
/// (user-provided embedders); newer ones wait in `document_bodies`.
fn own_embedding(payload: &str) -> Option<Vec<f32>> {
    let payload: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
    payload
        .get("embedding")
        .and_then(|e| serde_json::from_value(e.clone()).ok())
}

/// A document with its own vector is one chunk, within the chunk limit.
pub(super) fn one_chunk(chunks: Vec<Chunk>) -> std::result::Result<Vec<Chunk>, String> {
    let chunks = if chunks.len() > 1 {
        let text = chunks
            .iter()
            .map(|c| c.text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let words = chunks.iter().map(|c| c.words).sum();
        vec![Chunk {
            heading_path: String::new(),
            text,
            words,
        }]
    } else {
        chunks
    };
    if chunks
        .iter()
        .any(|c| c.text.chars().count() > MAX_CHUNK_CHARS)
    {
        return Err(format!(
            "a document with its own embedding is one chunk, and its text is over the \
             limit of {MAX_CHUNK_CHARS} characters"
        ));
    }
    Ok(chunks)
}

/// Writes prepared documents in pieces of at most INDEX_BATCH_CHUNKS chunks and
/// INDEX_BATCH_BYTES of text, one full-text commit each, while the budget fits another (at
/// least one piece). A document longer than that is written over several quanta: it stays
/// `indexing` (invisible to search) until its last piece, which replaces the holder of its
/// external id and marks it `indexed` in one transaction. Returns the chunks written and
/// whether some are left (parked for the next quantum).
fn write_prepared(
    ws: &Workspace,
    rt: &Runtime<'_>,
    prepared: Vec<Prepared>,
    left: &dyn Fn() -> Duration,
) -> Result<(usize, bool)> {
    let mut docs: VecDeque<Prepared> = prepared.into();
    // Another piece starts only if the time left fits one more like the last.
    let mut last_piece: Option<Duration> = None;
    let mut written_now = 0usize;
    while !docs.is_empty() {
        if last_piece.is_some_and(|d| left() < d) {
            if let Some(bg) = rt.background {
                for p in docs {
                    let key = (ws.id(), p.doc_id);
                    bg.park(rt.org, key, p.title, p.chunks, p.written);
                }
                // More to write: the scheduler comes back.
                return Ok((written_now, true));
            }
        }
        let t = Instant::now();
        let slices = next_piece(&docs);
        let alive = write_piece(ws, &docs, &slices)?;
        for (s, alive) in slices.iter().zip(alive) {
            let p = &mut docs[s.doc];
            written_now += s.to - s.from;
            p.written = if alive { s.to } else { p.chunks.len() };
        }
        while docs.front().is_some_and(|p| p.written >= p.chunks.len()) {
            docs.pop_front();
        }
        last_piece = Some(t.elapsed());
    }
    Ok((written_now, false))
}

/// A part of one document's chunks written by a piece.
struct Slice {
    /// Index in the documents being written.
    doc: usize,
    from: usize,
    to: usize,
}

/// The next piece: the unwritten chunks of the documents in order, up to
/// [`INDEX_BATCH_CHUNKS`] chunks and [`INDEX_BATCH_BYTES`] of text (at least one chunk).
fn next_piece(docs: &VecDeque<Prepared>) -> Vec<Slice> {
    let (mut n, mut bytes) = (0usize, 0usize);
    let mut slices = Vec::new();
    for (i, p) in docs.iter().enumerate() {
        let from = p.written;
        let mut to = from;
        while to < p.chunks.len()
            && (n == 0 || (n < INDEX_BATCH_CHUNKS && bytes < INDEX_BATCH_BYTES))
        {
            bytes += p.chunks[to].text.len();
            n += 1;
            to += 1;
        }
        let complete = to == p.chunks.len();
        if to > from || complete {
            slices.push(Slice { doc: i, from, to });
        }
        if !complete {
            break;
        }
    }
    slices
}

/// Writes a piece in one SQLite transaction and one full-text commit. A slice that completes
/// its document also replaces the holder of its external id, stores its vector and marks it
/// `indexed`. Returns, per slice, whether its document is still wanted.
fn write_piece(ws: &Workspace, docs: &VecDeque<Prepared>, slices: &[Slice]) -> Result<Vec<bool>> {
    let f = ws.fields();
    let active = vectors::active(&ws.conn())?;
    let (done, indexed) = ws.index_transaction(
        || {
            let mut conn = ws.conn();
            let tx = conn.transaction()?;
            let now = db::now();
            let mut replaced: Vec<(String, String)> = Vec::new();
            // Per slice: its chunk ids and whether it removed leftovers, or `None` (gone).
            let mut adds: Vec<Option<(Vec<i64>, bool)>> = Vec::with_capacity(slices.len());
            for s in slices {
                let p = &docs[s.doc];
                // Still wanted? (deleted or cancelled meanwhile)
                let alive = tx
                    .query_row("SELECT 1 FROM documents WHERE id = ?1", [&p.doc_id], |_| Ok(()))
                    .optional()?
                    .is_some();
                if !alive {
                    adds.push(None);
                    continue;
                }
                // A first piece clears what an interrupted earlier write left.
                let stale = s.from == 0 && remove_stale_chunks(&tx, &p.doc_id)?;
                let complete = s.to == p.chunks.len();
                if let (true, Some(ext)) = (complete, &p.pending_external_id) {
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
                            &format!(
                                "UPDATE jobs SET status = 'cancelled', finished_at = ?2,
                                    error = 'the document was replaced'
                                 WHERE document_id = ?1 AND status IN {UNFINISHED_JOBS_SQL}"
                            ),
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
                let mut ids = Vec::with_capacity(s.to - s.from);
                {
                    let mut ins = tx.prepare_cached(
                        "INSERT INTO chunks (document_id, ordinal, heading_path, text, token_count, embedded)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?;
                    for (i, c) in p.chunks.iter().enumerate().take(s.to).skip(s.from) {
                        let embedded = i64::from(user_vector.is_some());
                        ins.execute(params![p.doc_id, i as i64, c.heading_path, c.text, c.words as i64, embedded])?;
                        ids.push(tx.last_insert_rowid());
                    }
                }
                if let (Some(v), Some(first), 0) = (user_vector, ids.first(), s.from) {
                    vectors::put(&tx, &active, *first, &super::embedders::normalize(v.clone()))?;
                }
                if complete {
                    tx.execute(
                        "UPDATE documents SET status = 'indexed', title = ?2, chunk_count = ?3,
                            error = NULL, updated_at = ?4 WHERE id = ?1",
                        params![p.doc_id, p.title, p.chunks.len() as i64, now],
                    )?;
                    // Not acknowledged yet: the job leaves this phase once the full-text
                    // commit below succeeded (`complete_fulltext_jobs`), so a job never
                    // succeeds with a document that full-text search cannot find.
                    // The chunks (and the vector) now hold what the job brought: its text
                    // and its payload's vector go.
                    tx.execute(
                        "UPDATE jobs SET phase = ?2, progress = 0.5, payload = '{}' WHERE id = ?1",
                        params![p.job_id, FULLTEXT_PHASE],
                    )?;
                    tx.execute(
                        "DELETE FROM document_bodies WHERE document_id = ?1",
                        [&p.doc_id],
                    )?;
                } else {
                    // Written in part: searches skip documents that are not `indexed`.
                    tx.execute(
                        "UPDATE documents SET status = 'indexing', updated_at = ?2 WHERE id = ?1",
                        params![p.doc_id, now],
                    )?;
                    tx.execute(
                        "UPDATE jobs SET progress = ?2 WHERE id = ?1",
                        params![p.job_id, 0.5 * s.to as f64 / p.chunks.len().max(1) as f64],
                    )?;
                }
                adds.push(Some((ids, stale)));
            }
            let gen = repair::bump_generation(&tx)?;
            tx.commit()?;
            Ok(((replaced, adds), gen))
        },
        |w, (replaced, adds)| {
            for (hid, _) in replaced {
                w.delete_term(Term::from_field_text(f.document_id, hid));
            }
            for (s, add) in slices.iter().zip(adds) {
                let Some((ids, stale)) = add else { continue };
                let p = &docs[s.doc];
                if *stale {
                    // Deletes apply to what was added before them only.
                    w.delete_term(Term::from_field_text(f.document_id, &p.doc_id));
                }
                for (c, id) in p.chunks[s.from..s.to].iter().zip(ids) {
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
    let (replaced, adds) = done;
    // On failure the documents are in SQLite, the index is marked for reconciliation, and
    // their jobs wait in the full-text phase until it is done (the scheduler retries).
    indexed?;
    complete_fulltext_jobs(ws)?;
    let hashes: Vec<String> = replaced.into_iter().map(|(_, h)| h).collect();
    store::collect_blobs(ws, &hashes);
    Ok(adds.iter().map(Option::is_some).collect())
}

/// The job phase of documents written to SQLite whose full-text commit has not succeeded yet.
pub(super) const FULLTEXT_PHASE: JobPhase = JobPhase::Fulltext;

/// Moves the jobs whose documents the index now holds past the full-text phase: to embedding,
/// or done when their chunks need no vectors. Only call it when the index is in sync.
pub(super) fn complete_fulltext_jobs(ws: &Workspace) -> Result<()> {
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

/// Estimated tokens of the texts embedded for `rows` (usage metering).
fn embedded_tokens(rows: &[ChunkRow]) -> u64 {
    rows.iter()
        .map(|(_, _, title, h, text)| {
            crate::governance::usage::estimate_tokens(&embedding_text(title, h, text))
        })
        .sum()
}

fn unembedded(ws: &Workspace, limit: usize) -> Result<Vec<ChunkRow>> {
    let conn = ws.conn();
    // Only indexed documents: one written over several quanta is embedded once complete.
    let mut stmt = conn.prepare_cached(
        "SELECT c.id, c.document_id, d.title, c.heading_path, c.text
         FROM chunks c JOIN documents d ON d.id = c.document_id
         WHERE c.embedded = 0 AND d.status = 'indexed' ORDER BY c.id LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// What [`embed_within`] did: the vectors of the first `done` rows, per configuration, and
/// the error of the call that failed (with how many rows it held).
struct Embedded {
    vectors: Vec<Vec<Vec<f32>>>,
    done: usize,
    error: Option<(Error, usize)>,
}

/// Embeds `rows` with each of `cfgs`, in calls sized by each embedder's pace to what is left
/// of the budget, until all are done or the budget is spent (at least one call each).
fn embed_within(
    embedders: &Embedders,
    cfgs: &[&EmbedderConfig],
    rows: &[ChunkRow],
    left: &dyn Fn() -> Duration,
) -> Embedded {
    let mut out = Embedded {
        vectors: vec![Vec::new(); cfgs.len()],
        done: 0,
        error: None,
    };
    let mut models = Vec::with_capacity(cfgs.len());
    for cfg in cfgs {
        match embedders
            .get(cfg)
            .and_then(|e| e.ok_or_else(|| Error::internal("no embedder for user-provided vectors")))
        {
            Ok(e) => models.push(e),
            Err(e) => {
                out.error = Some((e, rows.len()));
                return out;
            }
        }
    }
    let share = u32::try_from(models.len().max(1)).unwrap_or(u32::MAX);
    while out.done < rows.len() {
        let remaining = rows.len() - out.done;
        let n = models
            .iter()
            .map(|e| embedders.batch_within(e, remaining, left() / share))
            .min()
            .unwrap_or(remaining);
        let piece = &rows[out.done..out.done + n];
        let texts: Vec<String> = piece
            .iter()
            .map(|(_, _, title, h, text)| embedding_text(title, h, text))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        for (i, e) in models.iter().enumerate() {
            let t = Instant::now();
            let vs = e.embed(&refs).and_then(|vs| {
                if vs.len() == n {
                    Ok(vs)
                } else {
                    Err(Error::Provider(
                        "the embedder returned the wrong number of vectors".into(),
                    ))
                }
            });
            match vs {
                Ok(vs) => {
                    embedders.record_pace(e, n, t.elapsed());
                    out.vectors[i].extend(vs);
                }
                Err(err) => {
                    for v in &mut out.vectors {
                        v.truncate(out.done);
                    }
                    out.error = Some((err, n));
                    return out;
                }
            }
        }
        out.done += n;
        if left().is_zero() {
            break;
        }
    }
    out
}

fn embed_batch(
    ws: &Workspace,
    embedders: &Embedders,
    left: &dyn Fn() -> Duration,
) -> Result<Option<(usize, u64)>> {
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
    let building = building.filter(|s| !s.config.is_user_provided());
    let mut cfgs = vec![&active.config];
    if let Some(s) = &building {
        cfgs.push(&s.config);
    }
    let embedded = embed_within(embedders, &cfgs, &rows, left);
    let done = &rows[..embedded.done];
    let mut stored = Vec::with_capacity(done.len());
    if !done.is_empty() {
        let mut conn = ws.conn();
        let tx = conn.transaction()?;
        for (i, (id, ..)) in done.iter().enumerate() {
            let exists = tx
                .query_row("SELECT 1 FROM chunks WHERE id = ?1", [id], |_| Ok(()))
                .optional()?
                .is_some();
            if !exists {
                continue;
            }
            stored.push(done[i].clone());
            check_dim(&active, &embedded.vectors[0][i])?;
            vectors::put(&tx, &active, *id, &embedded.vectors[0][i])?;
            if let (Some(space), Some(bv)) = (&building, embedded.vectors.get(1)) {
                check_dim(space, &bv[i])?;
                vectors::put(&tx, space, *id, &bv[i])?;
            }
            tx.execute("UPDATE chunks SET embedded = 1 WHERE id = ?1", [id])?;
        }
        tx.commit()?;
        drop(conn);
        let mut docs: Vec<&str> = done.iter().map(|r| r.1.as_str()).collect();
        docs.sort_unstable();
        docs.dedup();
        finish_embedding_jobs(ws, Some(&docs))?;
    }
    if let Some((e, n)) = embedded.error {
        let failed = &rows[embedded.done..(embedded.done + n).min(rows.len())];
        give_up_or_retry(ws, failed, &e)?;
        return Err(e);
    }
    Ok(Some((stored.len(), embedded_tokens(&stored))))
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

fn reembed_batch(
    ws: &Workspace,
    embedders: &Embedders,
    left: &dyn Fn() -> Duration,
) -> Result<Option<(usize, u64)>> {
    let (job, building) = {
        let conn = ws.conn();
        let job: Option<(String, String)> = conn
            .query_row(
                &format!(
                    "SELECT id, payload FROM jobs WHERE kind = 'reembed' AND status IN {UNFINISHED_JOBS_SQL}
                     ORDER BY id LIMIT 1"
                ),
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
        return Ok(Some((0, 0)));
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
        return Ok(Some((0, 0)));
    }
    let embedded = embed_within(embedders, &[&space.config], &rows, left);
    if let Some((e, _)) = &embedded.error {
        let conn = ws.conn();
        conn.execute(
            "UPDATE jobs SET attempts = attempts + 1, error = ?2, status = 'running' WHERE id = ?1",
            params![job_id, format!("embedding failed: {e}")],
        )?;
    }
    let rows = &rows[..embedded.done];
    let vs = embedded.vectors.into_iter().next().unwrap_or_default();
    if rows.is_empty() {
        return match embedded.error {
            Some((e, _)) => Err(e),
            None => Ok(Some((0, 0))),
        };
    }
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
    match embedded.error {
        Some((e, _)) => Err(e),
        None => Ok(Some((rows.len(), embedded_tokens(rows)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::embedders::tests::{test_models, HashEmbedder};
    use crate::knowledge::search::{self, Fusion, Mode, SearchRequest};
    use crate::knowledge::store::NewDocument;
    use std::path::Path;

    fn workspace(tmp: &Path) -> Workspace {
        let id = crate::ids::new_id();
        let dir = crate::workspace::dir_of(tmp, id);
        crate::workspace::create(&dir).expect("create");
        Workspace::open(&dir, id).expect("open")
    }

    /// Adds a document; returns (document id, job id).
    fn add(ws: &Workspace, bytes: Vec<u8>, format: Format) -> (String, String) {
        let added = store::add(
            ws,
            NewDocument {
                bytes,
                format,
                title: None,
                metadata: serde_json::json!({}),
                external_id: None,
                source_name: None,
                embedding: None,
                is_text: false,
            },
        )
        .expect("add");
        (added.id, added.job_id.expect("job"))
    }

    fn job(ws: &Workspace, id: &str) -> (String, String) {
        ws.conn()
            .query_row("SELECT status, phase FROM jobs WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("job")
    }

    /// (status, chunks stored) of a document.
    fn doc(ws: &Workspace, id: &str) -> (String, i64) {
        ws.conn()
            .query_row(
                "SELECT status, (SELECT count(*) FROM chunks WHERE document_id = ?1)
                 FROM documents WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("document")
    }

    /// Markdown of `sections` sections of about 1 KB, each one chunk.
    fn sections(sections: usize) -> Vec<u8> {
        let mut s = String::new();
        for i in 0..sections {
            s.push_str(&format!("# Section {i}\n\n"));
            for w in 0..150 {
                s.push_str(&format!("w{} ", (i * 31 + w) % 997));
            }
            s.push_str("kingfisher kingfisher\n\n");
        }
        s.into_bytes()
    }

    /// A PDF whose `pages` pages all show one content stream of about `content_bytes` bytes:
    /// slow to extract (checking its interrupt all along), quick to build.
    fn slow_pdf(pages: usize, content_bytes: usize) -> Vec<u8> {
        let mut content = String::from("BT /F1 10 Tf 72 712 Td (slow page) Tj ET\n");
        while content.len() < content_bytes {
            content.push_str("10 20 m 30 40 l 50 60 l S\n");
        }
        let kids: Vec<String> = (0..pages).map(|i| format!("{} 0 R", 5 + i)).collect();
        let mut objects = vec![
            "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
            format!(
                "<< /Type /Pages /Kids [{}] /Count {pages} >>",
                kids.join(" ")
            ),
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
            format!(
                "<< /Length {} >>\nstream\n{content}\nendstream",
                content.len()
            ),
        ];
        for _ in 0..pages {
            objects.push(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
                 /Resources << /Font << /F1 3 0 R >> >> >>"
                    .to_string(),
            );
        }
        crate::knowledge::doc_files::pdf_of(&objects)
    }

    fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cond()
    }

    fn key(ws: Uuid, doc: &str) -> Key {
        (ws, doc.to_string())
    }

    #[test]
    fn an_org_holding_every_slot_yields_one_to_a_waiting_org() {
        let tmp = tempfile::tempdir().expect("tmp");
        let ex = Extractions::new(2);
        let (org_a, ws_a, org_b, ws_b) = (
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            Uuid::from_u128(3),
            Uuid::from_u128(4),
        );
        // Org A: three documents that each take many seconds to extract.
        let slow = tmp.path().join("slow.pdf");
        std::fs::write(&slow, slow_pdf(9_000, 7_000)).expect("write");
        for d in ["a1", "a2", "a3"] {
            assert!(ex.start(
                org_a,
                key(ws_a, d),
                Format::Pdf,
                slow.clone(),
                Limits::default()
            ));
        }
        assert_eq!(ex.running(), 2, "A holds both slots while nobody waits");
        assert_eq!(ex.queued(), 1);
        // Org B: one quick document. It gets a slot without waiting for A's.
        let quick = tmp.path().join("quick.txt");
        std::fs::write(&quick, "a quick note about herons").expect("write");
        assert!(ex.start(
            org_b,
            key(ws_b, "b1"),
            Format::Text,
            quick,
            Limits::default()
        ));
        let mut got = None;
        assert!(
            wait_for(60, || match ex.poll(&key(ws_b, "b1")) {
                Poll::Done(r, _) => {
                    got = Some(r);
                    true
                }
                _ => false,
            }),
            "B's document waits behind A's"
        );
        let (_, chunks) = got.expect("done").expect("extracted");
        assert_eq!(chunks.len(), 1);
        // A's three are all still there: the one that yielded its slot was queued again.
        for d in ["a1", "a2", "a3"] {
            assert!(
                matches!(ex.poll(&key(ws_a, d)), Poll::Pending),
                "{d} must still be extracting (or queued) for this test to mean anything"
            );
        }
        ex.stop();
        assert!(wait_for(30, || ex.running() == 0), "stop interrupts them");
    }

    #[cfg(unix)]
    #[test]
    fn a_document_that_always_outlasts_the_budget_is_tried_inline_once() {
        let tmp = tempfile::tempdir().expect("tmp");
        let ws = workspace(tmp.path());
        let emb = Embedders::with_builtin(test_models);
        let ex = Extractions::new(1);
        // Another org's extraction holds the only slot until the test lets it go: it reads a
        // named pipe.
        let fifo = tmp.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let other = key(Uuid::from_u128(9), "occupant");
        assert!(ex.start(
            Uuid::from_u128(8),
            other.clone(),
            Format::Text,
            fifo.clone(),
            Limits::default()
        ));
        assert!(wait_for(10, || ex.running() == 1));
        // Under the inline limit, but far longer than the quantum's budget to extract.
        let (doc_id, job_id) = add(&ws, sections(900), Format::Markdown);
        let rt = Runtime {
            budget: Duration::from_millis(10),
            background: Some(&ex),
            org: Uuid::from_u128(7),
        };
        let mine = key(ws.id(), &doc_id);
        for _ in 0..50 {
            run_quantum_in(&ws, &emb, &Limits::default(), &rt).expect("quantum");
            if ex.queued() == 1 {
                break;
            }
        }
        assert_eq!(
            ex.queued(),
            1,
            "out of budget, it waits for a background slot"
        );
        // Later quanta find it waiting there: they do not extract it on the worker again.
        for _ in 0..5 {
            let q = run_quantum_in(&ws, &emb, &Limits::default(), &rt).expect("quantum");
            assert!(q.worked, "pending work keeps the workspace scheduled");
            assert!(matches!(ex.poll(&mine), Poll::Pending));
            assert_eq!(job(&ws, &job_id), ("running".into(), "queued".into()));
        }
        // The slot frees: it is extracted in the background and indexed.
        std::fs::write(&fifo, "the occupant's text").expect("unblock");
        assert!(wait_for(120, || {
            run_quantum_in(&ws, &emb, &Limits::default(), &rt).expect("quantum");
            job(&ws, &job_id).0 == "succeeded"
        }));
        assert_eq!(doc(&ws, &doc_id), ("indexed".into(), 900));
        ex.stop();
    }

    #[test]
    fn a_large_document_is_written_over_several_quanta_unseen_until_complete() {
        let tmp = tempfile::tempdir().expect("tmp");
        let ws = workspace(tmp.path());
        let emb = Embedders::with_builtin(test_models);
        // A small document first, then ≈ 7 MB of chunk text: several pieces.
        // (A long chunk that names it once: it ranks below every chunk of the large one.)
        let filler: String = (0..170).map(|i| format!("filler{i} ")).collect();
        let (_, small_job) = add(
            &ws,
            format!("{filler}kingfisher").into_bytes(),
            Format::Text,
        );
        let n = 7_000;
        let (doc_id, job_id) = add(&ws, sections(n), Format::Markdown);
        let fulltext = |ws: &Workspace| {
            let req = SearchRequest {
                query: "kingfisher".into(),
                mode: Some(Mode::Fulltext),
                ..Default::default()
            };
            search::search(ws, &emb, &req, None, &Fusion::default())
                .expect("search")
                .results
                .len()
        };
        let mut ex = Extractions::new(2);
        let mut partial = None;
        assert!(wait_for(120, || {
            let rt = Runtime {
                budget: Duration::from_millis(10),
                background: Some(&ex),
                org: Uuid::nil(),
            };
            run_quantum_in(&ws, &emb, &Limits::default(), &rt).expect("quantum");
            let (status, stored) = doc(&ws, &doc_id);
            if stored > 0 && stored < n as i64 {
                assert_eq!(status, "indexing");
                partial = Some(stored);
            }
            partial.is_some()
        }));
        // Stored in part (SQLite and the full-text index) but not searchable yet.
        assert!(ws.indexed_chunks() > 1);
        assert_eq!(job(&ws, &small_job).0, "succeeded");
        assert_eq!(
            fulltext(&ws),
            1,
            "a document written in part is not searchable, nor crowds others out"
        );
        assert_eq!(job(&ws, &job_id), ("running".into(), "queued".into()));
        // A restart loses the chunks held in memory: the document is extracted again and its
        // first piece replaces what the interrupted write left.
        ex.stop();
        ex = Extractions::new(2);
        let rt = Runtime {
            budget: Duration::from_millis(10),
            background: Some(&ex),
            org: Uuid::nil(),
        };
        let mut quanta = 0;
        assert!(wait_for(300, || {
            run_quantum_in(&ws, &emb, &Limits::default(), &rt).expect("quantum");
            quanta += 1;
            job(&ws, &job_id).0 == "succeeded"
        }));
        assert!(quanta > 2, "{quanta} quanta");
        assert_eq!(doc(&ws, &doc_id), ("indexed".into(), n as i64));
        let (distinct, max): (i64, i64) = ws
            .conn()
            .query_row(
                "SELECT count(DISTINCT ordinal), max(ordinal) FROM chunks WHERE document_id = ?1",
                [&doc_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("ordinals");
        assert_eq!((distinct, max), (n as i64, n as i64 - 1));
        assert_eq!(
            ws.indexed_chunks(),
            n as u64 + 1,
            "no stale entry in the full-text index"
        );
        assert_eq!(fulltext(&ws), 10);
        ex.stop();
    }

    /// An embedder that takes 20 ms a text.
    struct Slow(HashEmbedder);

    impl crate::embed::Embedder for Slow {
        fn id(&self) -> &str {
            "slow"
        }
        fn dim(&self) -> usize {
            self.0.dim()
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
            std::thread::sleep(Duration::from_millis(20) * texts.len() as u32);
            self.0.embed(texts)
        }
    }

    fn slow_models(_: &EmbedderConfig) -> Result<Arc<dyn crate::embed::Embedder>> {
        Ok(Arc::new(Slow(HashEmbedder(384))))
    }

    #[test]
    fn an_embedding_quantum_ends_when_its_budget_is_spent() {
        let tmp = tempfile::tempdir().expect("tmp");
        let ws = workspace(tmp.path());
        let emb = Embedders::with_builtin(slow_models);
        let (doc_id, job_id) = add(&ws, sections(100), Format::Markdown);
        // The first quantum indexes; the next ones embed.
        run_quantum(&ws, &emb, &Limits::default()).expect("index");
        assert_eq!(doc(&ws, &doc_id), ("indexed".into(), 100));
        let embedded = |ws: &Workspace| -> i64 {
            ws.conn()
                .query_row("SELECT count(*) FROM chunks WHERE embedded = 1", [], |r| {
                    r.get(0)
                })
                .expect("count")
        };
        let rt = Runtime {
            budget: Duration::from_millis(200),
            background: None,
            org: Uuid::nil(),
        };
        let q = run_quantum_in(&ws, &emb, &Limits::default(), &rt).expect("embed");
        assert!(q.worked);
        let first = embedded(&ws);
        // 200 ms at 20 ms a text: about 10, far from the 32 of a MiniLM batch.
        assert!((1..=16).contains(&first), "{first} embedded in one quantum");
        while run_quantum(&ws, &emb, &Limits::default())
            .expect("quantum")
            .worked
        {}
        assert_eq!(embedded(&ws), 100);
        assert_eq!(job(&ws, &job_id).0, "succeeded");
    }
}
