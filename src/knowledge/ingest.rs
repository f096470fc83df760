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

use std::time::Instant;

use rusqlite::{params, OptionalExtension};
use serde_json::Value;
use tantivy::Term;

use super::chunk::{chunk, ChunkConfig};
use super::embedders::{EmbedderConfig, Embedders};
use super::extract::{self, Format, Limits};
use super::store;
use super::vectors::{self, Space};
use crate::db;
use crate::error::{Error, Result};
use crate::workspace::{repair, Workspace};

/// Most documents indexed in one quantum.
const INDEX_BATCH_DOCS: usize = 64;
/// Stop adding documents to a quantum past this many chunks.
const INDEX_BATCH_CHUNKS: usize = 4000;
/// Attempts at embedding a chunk before giving up on it.
const MAX_EMBED_ATTEMPTS: i64 = 3;

/// What one quantum did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quantum {
    /// Units of work done (chunks), for progress reports.
    pub chunks: usize,
    /// Whether anything was found to do.
    pub worked: bool,
}

/// Runs one quantum of the workspace's pending work, most urgent first.
pub fn run_quantum(ws: &Workspace, embedders: &Embedders, limits: &Limits) -> Result<Quantum> {
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
    if let Some(n) = index_batch(ws, limits)? {
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
    Ok(Quantum::default())
}

struct Prepared {
    job_id: String,
    doc_id: String,
    title: String,
    pending_external_id: Option<String>,
    chunks: Vec<super::chunk::Chunk>,
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

fn index_batch(ws: &Workspace, limits: &Limits) -> Result<Option<usize>> {
    type JobRow = (
        String,
        String,
        String,
        String,
        String,
        Option<String>,
        String,
    );
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
        return Ok(None);
    }
    let active = vectors::active(&ws.conn())?;
    let cfg = ChunkConfig::default();
    let mut prepared = Vec::new();
    let mut total = 0usize;
    for (job_id, doc_id, payload, mime, hash, pending_ext, title) in jobs {
        if total >= INDEX_BATCH_CHUNKS {
            break;
        }
        ws.conn().execute(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1,
                started_at = coalesce(started_at, ?2) WHERE id = ?1",
            params![job_id, db::now()],
        )?;
        let payload: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
        let embedding: Option<Vec<f32>> = payload
            .get("embedding")
            .and_then(|e| serde_json::from_value(e.clone()).ok());
        let outcome = (|| -> std::result::Result<(String, Vec<super::chunk::Chunk>), String> {
            let format =
                Format::from_mime(&mime).ok_or_else(|| format!("unsupported type {mime}"))?;
            let bytes = store::read_blob(ws, &hash)
                .map_err(|e| format!("cannot read the original: {e}"))?;
            let extracted = std::panic::catch_unwind(|| extract::extract(format, &bytes, limits))
                .map_err(|_| "the file could not be read (the extractor failed)".to_string())?
                .map_err(|e| e.0)?;
            let t = if title.is_empty() {
                extracted.title.clone().unwrap_or_default()
            } else {
                title.clone()
            };
            let chunks = chunk(&extracted.blocks, &cfg);
            Ok((t, chunks))
        })();
        match outcome {
            Ok((title, mut chunks)) => {
                if embedding.is_some() || active.config.is_user_provided() {
                    // A document with its own vector is one chunk.
                    if chunks.len() > 1 {
                        let text = chunks
                            .iter()
                            .map(|c| c.text.as_str())
                            .collect::<Vec<_>>()
                            .join("\n");
                        let words = chunks.iter().map(|c| c.words).sum();
                        chunks = vec![super::chunk::Chunk {
                            heading_path: String::new(),
                            text,
                            words,
                        }];
                    }
                }
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
    if prepared.is_empty() {
        return Ok(Some(total));
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
    Ok(Some(total))
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
