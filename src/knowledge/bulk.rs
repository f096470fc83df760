//! Batch adds (`POST /documents/batch`, `enclave ingest`): many text documents of one workspace
//! checked, extracted and written together.
//!
//! Each item passes the checks of a single add (`Knowledge::new_document`, `check_embedding`)
//! and is deduplicated the same way (its fingerprint: content, title, metadata, type, vector,
//! with its `external_id`). Unlike a single add, which queues a job that extracts and indexes
//! the document later, a batch is indexed in the request: its documents are small text (JSON
//! bodies are plain text, Markdown or HTML, the batch is bounded in items and bytes), so their
//! extraction costs microseconds, and writing them together is what makes a bulk load fast:
//! one SQLite transaction (prepared statements) and one Tantivy commit for the whole batch.
//! Documents are `indexed` (searchable by full text) when the request answers; with a
//! user-provided embedder their vectors are stored in the same transaction, so they are
//! searchable in every mode; with a built-in or provider embedder each document gets an
//! ingestion job in its embedding phase, which the server's job workers run like any other
//! (fairly across tenants), so a batch never embeds on the request's thread.
//!
//! A batch is atomic: any item refused (bad input, an `external_id` still being ingested,
//! the same `external_id` twice) refuses the whole batch, naming the item's index, and nothing
//! is written. No original is kept in `blobs/` for a batch's documents: the database holds
//! their text (an export lists them as originals missing).

use std::collections::{HashMap, HashSet};

use rusqlite::{params, Connection};
use serde::Serialize;
use tantivy::Term;

use super::chunk::Chunk;
use super::embedders::normalize;
use super::extract::{Interrupt, Limits};
use super::ingest::{self, FULLTEXT_PHASE};
use super::status::{DocumentStatus, JobKind, JobStatus, DOCUMENTS_IN_PROGRESS_SQL};
use super::store::{self, Added, NewDocument};
use super::vectors;
use crate::db;
use crate::error::{Error, Result};
use crate::workspace::{repair, Workspace};

/// What became of one item of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    /// A new document.
    Created,
    /// A new document that replaced the holder of its `external_id`.
    Updated,
    /// The identical document was already there (or earlier in the batch): nothing stored.
    Unchanged,
}

/// One item's result, in batch order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BatchItem {
    /// The item's position in the batch, from 0.
    pub index: usize,
    /// The document's id (for `unchanged`, the identical document's).
    pub id: String,
    pub status: ItemStatus,
    /// The document's status: `indexed` for created and updated items.
    pub document_status: DocumentStatus,
    /// The job embedding the document (built-in and provider embedders); `null` when its
    /// vector came with it.
    pub job_id: Option<String>,
}

/// The answer to a batch: every item's result in order, and the counts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BatchAdded {
    pub items: Vec<BatchItem>,
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
}

impl BatchAdded {
    fn count(&mut self) {
        let n = |s: ItemStatus| self.items.iter().filter(|i| i.status == s).count();
        (self.created, self.updated, self.unchanged) = (
            n(ItemStatus::Created),
            n(ItemStatus::Updated),
            n(ItemStatus::Unchanged),
        );
    }
}

/// A checked item, extracted and chunked.
pub(super) struct Ready {
    pub index: usize,
    pub new: NewDocument,
    /// SHA-256 of the content (computed once: the fingerprint and the stored row use it).
    pub content_hash: String,
    pub fingerprint: String,
    pub title: String,
    pub chunks: Vec<Chunk>,
}

/// Extracts and chunks a checked item (`one_chunk`: it brings its vector, or the workspace's
/// vectors are user-provided: one chunk, as a single add makes it).
pub(super) fn prepare(
    index: usize,
    new: NewDocument,
    one_chunk: bool,
    limits: &Limits,
) -> Result<Ready> {
    let at = |m: String| Error::invalid(m).at_item(index);
    let stop = Interrupt::within(limits.max_time);
    let (extracted, chunks) = ingest::extract_and_chunk(new.format, &new.bytes, limits, &stop)
        .map_err(|m| at(format!("the document could not be read: {m}")))?;
    let chunks = if one_chunk {
        ingest::one_chunk(chunks).map_err(at)?
    } else {
        chunks
    };
    let title = ingest::document_title(
        new.title.as_deref().unwrap_or(""),
        extracted,
        new.source_name.as_deref(),
    );
    let content_hash = store::content_hash(&new.bytes);
    Ok(Ready {
        index,
        fingerprint: store::fingerprint_with(&new, &content_hash),
        content_hash,
        new,
        title,
        chunks,
    })
}

/// The batch split by what is already there: the items to write, and the results of those
/// that are unchanged (identical to a stored document, or to an earlier item, whose index is
/// kept to give them its id once written). The same `external_id` twice is refused.
pub(super) struct Plan {
    pub write: Vec<Ready>,
    stored: Vec<(usize, Added)>,
    earlier: Vec<(usize, usize)>,
    total: usize,
}

impl Plan {
    pub fn new(ws: &Workspace, items: Vec<Ready>) -> Result<Plan> {
        let total = items.len();
        let conn = ws.conn();
        let mut plan = Plan {
            write: Vec::with_capacity(items.len()),
            stored: Vec::new(),
            earlier: Vec::new(),
            total,
        };
        let mut by_external: HashMap<String, usize> = HashMap::new();
        let mut by_fingerprint: HashMap<(String, Option<String>), usize> = HashMap::new();
        // One query for the batch: only an item whose fingerprint is stored can be a duplicate
        // (a fresh load asks nothing more).
        let stored = matching(
            &conn,
            "SELECT DISTINCT fingerprint FROM documents
             WHERE fingerprint IN (SELECT value FROM json_each(?1))",
            items.iter().map(|i| i.fingerprint.as_str()),
        )?;
        for item in items {
            if let Some(ext) = &item.new.external_id {
                if let Some(first) = by_external.insert(ext.clone(), item.index) {
                    return Err(Error::invalid(format!(
                        "external_id {ext:?} is also item {first}'s: a batch names each \
                         external_id at most once"
                    ))
                    .at_item(item.index));
                }
            }
            let key = (item.fingerprint.clone(), item.new.external_id.clone());
            if let Some(first) = by_fingerprint.get(&key) {
                plan.earlier.push((item.index, *first));
                continue;
            }
            if stored.contains(&key.0) {
                if let Some(added) = store::duplicate_in(&conn, &key.0, key.1.as_deref())? {
                    plan.stored.push((item.index, added));
                    continue;
                }
            }
            by_fingerprint.insert(key, item.index);
            plan.write.push(item);
        }
        Ok(plan)
    }

    /// The results once `written` (the ids of [`Plan::write`]'s items, in order).
    pub fn finish(self, written: Vec<Written>) -> BatchAdded {
        let mut items: Vec<Option<BatchItem>> = vec![None; self.total];
        for (item, w) in self.write.iter().zip(written) {
            items[item.index] = Some(BatchItem {
                index: item.index,
                id: w.id,
                status: if w.replaced {
                    ItemStatus::Updated
                } else {
                    ItemStatus::Created
                },
                document_status: DocumentStatus::Indexed,
                job_id: w.job_id,
            });
        }
        for (index, added) in self.stored {
            items[index] = Some(BatchItem {
                index,
                id: added.id,
                status: ItemStatus::Unchanged,
                document_status: added.status,
                job_id: added.job_id,
            });
        }
        for (index, first) in self.earlier {
            let same = items[first].clone();
            items[index] = same.map(|f| BatchItem {
                index,
                status: ItemStatus::Unchanged,
                ..f
            });
        }
        let mut out = BatchAdded {
            items: items.into_iter().flatten().collect(),
            created: 0,
            updated: 0,
            unchanged: 0,
        };
        out.count();
        out
    }
}

/// The values of `keys` that `sql` (one column, `?1` a JSON array of the keys) returns: one
/// statement for a whole batch instead of one per item.
fn matching<'a>(
    conn: &Connection,
    sql: &str,
    keys: impl Iterator<Item = &'a str>,
) -> Result<HashSet<String>> {
    let keys: Vec<&str> = keys.collect();
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let list = serde_json::to_string(&keys).map_err(|e| Error::internal(e.to_string()))?;
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([list], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The documents holding `externals` now: external id → (document id, content hash).
fn holders_of<'a>(
    conn: &Connection,
    externals: impl Iterator<Item = &'a str>,
) -> Result<HashMap<String, (String, String)>> {
    let keys: Vec<&str> = externals.collect();
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let list = serde_json::to_string(&keys).map_err(|e| Error::internal(e.to_string()))?;
    let mut stmt = conn.prepare_cached(
        "SELECT external_id, id, content_hash FROM documents
         WHERE external_id IN (SELECT value FROM json_each(?1))",
    )?;
    let rows = stmt.query_map([list], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One written document: its id, its embedding job, whether it replaced its external id's
/// holder.
pub(super) struct Written {
    pub id: String,
    pub job_id: Option<String>,
    pub replaced: bool,
}

/// Writes `items` in one SQLite transaction and one full-text commit: each document `indexed`
/// with its chunks (replacing the holder of its `external_id`), its vector when it brought one,
/// and with `embed_jobs` an ingestion job that the workers finish by embedding its chunks.
///
/// The outer error: nothing was written (an item's refusal names its index). The inner one:
/// SQLite committed but the full-text index could not follow; it is marked to be reconciled
/// (the caller wakes the scheduler, which does it), and the embedding jobs wait for that.
pub(super) fn write(
    ws: &Workspace,
    items: &[Ready],
    embed_jobs: bool,
) -> Result<(Vec<Written>, Result<()>)> {
    let f = ws.fields();
    let active = vectors::active(&ws.conn())?;
    let (out, indexed) = ws.index_transaction(
        || {
            let mut conn = ws.conn();
            let tx = conn.transaction()?;
            let now = db::now();
            let mut replaced: Vec<(String, String)> = Vec::new();
            let mut written = Vec::with_capacity(items.len());
            let mut chunk_ids: Vec<Vec<i64>> = Vec::with_capacity(items.len());
            {
                // The batch's external ids still being ingested by single adds, and their
                // holders: one query each for the whole batch (a batch names each at most once).
                let externals = || items.iter().filter_map(|i| i.new.external_id.as_deref());
                let racing = matching(
                    &tx,
                    &format!(
                        "SELECT DISTINCT pending_external_id FROM documents
                         WHERE pending_external_id IN (SELECT value FROM json_each(?1))
                         AND status IN {DOCUMENTS_IN_PROGRESS_SQL}"
                    ),
                    externals(),
                )?;
                let mut holders = holders_of(&tx, externals())?;
                let mut cancel = tx.prepare_cached(&format!(
                    "UPDATE jobs SET status = 'cancelled', finished_at = ?2,
                        error = 'the document was replaced'
                     WHERE document_id = ?1 AND status IN {}",
                    super::status::UNFINISHED_JOBS_SQL
                ))?;
                let mut ins_doc = tx.prepare_cached(
                    "INSERT INTO documents (id, external_id, pending_external_id, title,
                        source_name, mime_type, content_hash, byte_size, metadata, status,
                        chunk_count, fingerprint, created_at, updated_at)
                     VALUES (?1, ?2, NULL, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)",
                )?;
                let mut ins_chunk = tx.prepare_cached(
                    "INSERT INTO chunks (document_id, ordinal, heading_path, text, token_count,
                        embedded)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                let mut ins_job = tx.prepare_cached(
                    "INSERT INTO jobs (id, kind, document_id, status, phase, progress, payload,
                        attempts, created_at, started_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0.5, '{}', 1, ?6, ?6)",
                )?;
                for item in items {
                    let new = &item.new;
                    let mut was_replaced = false;
                    if let Some(ext) = &new.external_id {
                        if racing.contains(ext) {
                            return Err(Error::Conflict(format!(
                                "a document with external_id {ext:?} is still being ingested; \
                                 retry when its job is done"
                            ))
                            .at_item(item.index));
                        }
                        if let Some((hid, hhash)) = holders.remove(ext) {
                            store::remove_document_rows(&tx, &hid)?;
                            cancel.execute(params![hid, now])?;
                            replaced.push((hid, hhash));
                            was_replaced = true;
                        }
                    }
                    let id = crate::ids::new_id().to_string();
                    ins_doc.execute(params![
                        id,
                        new.external_id,
                        item.title,
                        new.source_name,
                        new.format.mime(),
                        item.content_hash,
                        new.bytes.len() as i64,
                        new.metadata.to_string(),
                        DocumentStatus::Indexed,
                        item.chunks.len() as i64,
                        item.fingerprint,
                        now,
                    ])?;
                    let user_vector = new.embedding.as_ref().filter(|v| v.len() == active.dim);
                    let mut ids = Vec::with_capacity(item.chunks.len());
                    for (i, c) in item.chunks.iter().enumerate() {
                        ins_chunk.execute(params![
                            id,
                            i as i64,
                            c.heading_path,
                            c.text,
                            c.words as i64,
                            i64::from(user_vector.is_some()),
                        ])?;
                        ids.push(tx.last_insert_rowid());
                    }
                    if let (Some(v), Some(first)) = (user_vector, ids.first()) {
                        vectors::put_new(&tx, &active, *first, &normalize(v.clone()))?;
                    }
                    let job_id = if embed_jobs {
                        let job = crate::ids::new_id().to_string();
                        ins_job.execute(params![
                            job,
                            JobKind::Ingest,
                            id,
                            JobStatus::Running,
                            FULLTEXT_PHASE,
                            now,
                        ])?;
                        Some(job)
                    } else {
                        None
                    };
                    chunk_ids.push(ids);
                    written.push(Written {
                        id,
                        job_id,
                        replaced: was_replaced,
                    });
                }
            }
            let gen = repair::bump_generation(&tx)?;
            tx.commit()?;
            Ok(((written, replaced, chunk_ids), gen))
        },
        |w, (written, replaced, chunk_ids)| {
            for (hid, _) in replaced {
                w.delete_term(Term::from_field_text(f.document_id, hid));
            }
            for ((item, doc), ids) in items.iter().zip(written).zip(chunk_ids) {
                for (c, id) in item.chunks.iter().zip(ids) {
                    w.add_document(repair::chunk_document(
                        &f,
                        *id as u64,
                        &doc.id,
                        &item.title,
                        &c.heading_path,
                        &c.text,
                    ))?;
                }
            }
            Ok(())
        },
    )?;
    let (written, replaced, _) = out;
    if indexed.is_ok() && embed_jobs {
        // The index holds them: their jobs move on to embedding.
        ingest::complete_fulltext_jobs(ws)?;
    }
    let hashes: Vec<String> = replaced.into_iter().map(|(_, h)| h).collect();
    store::collect_blobs(ws, &hashes);
    Ok((written, indexed))
}
