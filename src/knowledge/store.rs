//! Documents, blobs and jobs inside one workspace store.

use std::io::Write;
use std::path::PathBuf;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tantivy::Term;

use super::extract::Format;
use super::status::{
    DocumentStatus, JobKind, JobPhase, JobStatus, DOCUMENTS_IN_PROGRESS_SQL, UNFINISHED_JOBS_SQL,
};
use super::vectors;
use crate::db::{self, json_column};
use crate::error::{Error, Resource, Result};
use crate::workspace::{repair, Workspace, BLOBS_DIR};

/// A document to add, validated by the caller.
#[derive(Debug, Clone)]
pub struct NewDocument {
    pub bytes: Vec<u8>,
    pub format: Format,
    pub title: Option<String>,
    pub metadata: Value,
    pub external_id: Option<String>,
    pub source_name: Option<String>,
    /// A user-provided vector (workspaces whose embedder is `user-provided`).
    pub embedding: Option<Vec<f32>>,
    /// Text sent as such (a JSON body), not an uploaded file: it has no original worth keeping
    /// once its chunks hold it, so it waits in `document_bodies` (up to
    /// [`INLINE_BODY_MAX_BYTES`]) instead of a blob file.
    pub is_text: bool,
}

/// The largest text kept in the database until indexed rather than in a blob (the inline
/// extraction's bound: larger documents are extracted in the background from their file).
pub const INLINE_BODY_MAX_BYTES: usize = super::ingest::INLINE_MAX_BYTES;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Added {
    pub id: String,
    pub job_id: Option<String>,
    pub status: DocumentStatus,
    /// True when an identical document was already there (nothing new was stored or indexed).
    pub duplicate: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DocumentView {
    pub id: String,
    pub external_id: Option<String>,
    pub title: String,
    pub source_name: Option<String>,
    pub mime_type: String,
    pub content_hash: String,
    pub byte_size: i64,
    pub metadata: Value,
    pub status: DocumentStatus,
    pub error: Option<String>,
    pub chunk_count: i64,
    pub embedded_chunks: i64,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: String,
    pub kind: JobKind,
    pub status: JobStatus,
    pub phase: JobPhase,
    pub progress: f64,
    pub document_id: Option<String>,
    pub error: Option<String>,
    pub attempts: i64,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

fn hex_sha256(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(crate) fn blob_path(ws: &Workspace, hash: &str) -> PathBuf {
    let prefix = hash.get(..2).unwrap_or("00");
    ws.dir().join(BLOBS_DIR).join(prefix).join(hash)
}

/// Writes a blob if it is not there yet (content-addressed: same bytes, same file).
fn put_blob(ws: &Workspace, hash: &str, bytes: &[u8]) -> Result<()> {
    let path = blob_path(ws, hash);
    if path.is_file() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        crate::perms::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", crate::ids::new_id().simple()));
    {
        let mut f = crate::perms::private_file_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

pub fn read_blob(ws: &Workspace, hash: &str) -> Result<Vec<u8>> {
    Ok(std::fs::read(blob_path(ws, hash))?)
}

/// The text of a document sent as text and not yet indexed (`document_bodies`), if it has one.
pub fn inline_body(conn: &Connection, document_id: &str) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .prepare_cached(
            "SELECT body FROM document_bodies WHERE document_id = ?1 AND body IS NOT NULL",
        )?
        .query_row([document_id], |r| r.get(0))
        .optional()?)
}

/// The text (`document_bodies`) of a document not yet indexed whose content hash is `hash`:
/// what an archive carries as that document's blob.
pub fn pending_text(conn: &Connection, hash: &str) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .prepare_cached(
            "SELECT b.body FROM document_bodies b JOIN documents d ON d.id = b.document_id
             WHERE d.content_hash = ?1 AND b.body IS NOT NULL LIMIT 1",
        )?
        .query_row([hash], |r| r.get(0))
        .optional()?)
}

/// Writes the vectors waiting in `document_bodies` into their queued jobs' payloads (the
/// form jobs had before issue 16, which ingestion still reads): for a snapshot an archive is
/// written from, whose tables do not include `document_bodies`.
pub fn pending_vectors_to_payloads(conn: &Connection) -> Result<()> {
    let pending: Vec<(String, Vec<u8>)> = {
        let mut stmt = conn.prepare(
            "SELECT document_id, embedding FROM document_bodies WHERE embedding IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (doc, blob) in pending {
        let payload = serde_json::json!({ "embedding": vectors::from_blob(&blob) });
        conn.execute(
            "UPDATE jobs SET payload = ?2 WHERE document_id = ?1 AND kind = 'ingest'",
            params![doc, payload.to_string()],
        )?;
    }
    Ok(())
}

/// Removes blobs that no document refers to any more.
pub fn collect_blobs(ws: &Workspace, hashes: &[String]) {
    for h in hashes {
        let used = ws
            .conn()
            .query_row(
                "SELECT 1 FROM documents WHERE content_hash = ?1 LIMIT 1",
                [h],
                |_| Ok(()),
            )
            .optional();
        if let Ok(None) = used {
            let _ = std::fs::remove_file(blob_path(ws, h));
        }
    }
}

/// The identical document already there (same content, title, metadata, type, embedding and
/// external id), if any: what [`add`] answers instead of adding.
pub fn duplicate_of(ws: &Workspace, new: &NewDocument) -> Result<Option<Added>> {
    duplicate_in(&ws.conn(), &fingerprint_of(new), new.external_id.as_deref())
}

/// [`duplicate_of`] by the new document's fingerprint ([`fingerprint_of`]) and external id.
pub(super) fn duplicate_in(
    conn: &Connection,
    fingerprint: &str,
    external_id: Option<&str>,
) -> Result<Option<Added>> {
    let existing: Option<(String, DocumentStatus)> = conn
        .prepare_cached(
            "SELECT id, status FROM documents
             WHERE fingerprint = ?1 AND status <> 'failed'
               AND (coalesce(external_id, pending_external_id) IS ?2)
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![fingerprint, external_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let Some((id, status)) = existing else {
        return Ok(None);
    };
    let job_id: Option<String> = conn
        .prepare_cached("SELECT id FROM jobs WHERE document_id = ?1 ORDER BY id DESC LIMIT 1")?
        .query_row([&id], |r| r.get(0))
        .optional()?;
    Ok(Some(Added {
        id,
        job_id,
        status,
        duplicate: true,
    }))
}

/// What makes two documents identical: content, title, metadata, type and embedding.
pub(super) fn fingerprint_of(new: &NewDocument) -> String {
    fingerprint_with(new, &content_hash(&new.bytes))
}

/// [`fingerprint_of`] with the document's [`content_hash`] already computed (a batch computes
/// it once for both).
pub(super) fn fingerprint_with(new: &NewDocument, content_hash: &str) -> String {
    let title = new.title.as_deref().unwrap_or_default();
    let meta = new.metadata.to_string();
    let mut emb = Vec::new();
    if let Some(v) = &new.embedding {
        emb.reserve(v.len() * 12 + 2);
        if serde_json::to_writer(&mut emb, v).is_err() {
            emb.clear();
        }
    }
    hex_sha256(&[
        content_hash.as_bytes(),
        title.as_bytes(),
        meta.as_bytes(),
        new.format.mime().as_bytes(),
        &emb,
    ])
}

/// Records a new document and its ingestion job (or finds the identical one already there).
pub fn add(ws: &Workspace, new: NewDocument) -> Result<Added> {
    let hash = content_hash(&new.bytes);
    let title = new.title.clone().unwrap_or_default();
    let meta = new.metadata.to_string();
    let fingerprint = fingerprint_of(&new);
    // Identical document already present (same content, title, metadata and external id)?
    if let Some(added) = duplicate_of(ws, &new)? {
        return Ok(added);
    }
    {
        let conn = ws.conn();
        if let Some(ext) = &new.external_id {
            let racing: Option<String> = conn
                .query_row(
                    &format!(
                        "SELECT id FROM documents WHERE pending_external_id = ?1
                         AND status IN {DOCUMENTS_IN_PROGRESS_SQL} LIMIT 1"
                    ),
                    [ext],
                    |r| r.get(0),
                )
                .optional()?;
            if racing.is_some() {
                return Err(Error::Conflict(format!(
                    "a document with external_id {ext:?} is still being ingested; retry when its job is done"
                )));
            }
        }
    }
    let inline = new.is_text && new.bytes.len() <= INLINE_BODY_MAX_BYTES;
    if !inline {
        put_blob(ws, &hash, &new.bytes)?;
    }
    let id = crate::ids::new_id().to_string();
    let job_id = crate::ids::new_id().to_string();
    let now = db::now();
    // The document's own vector waits with its text (`document_bodies`), not in the job's
    // payload: a 5 KB JSON payload, cleared later, left near-empty pages behind.
    let payload = "{}";
    let mut conn = ws.conn();
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO documents (id, external_id, pending_external_id, title, source_name, mime_type,
            content_hash, byte_size, metadata, status, fingerprint, created_at, updated_at)
         VALUES (?1, NULL, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?11, ?9, ?10, ?10)",
        params![
            id,
            new.external_id,
            title,
            new.source_name,
            new.format.mime(),
            hash,
            new.bytes.len() as i64,
            meta,
            fingerprint,
            now,
            DocumentStatus::Pending,
        ],
    )?;
    let embedding = new.embedding.as_deref().map(vectors::to_blob);
    if inline || embedding.is_some() {
        let body = inline.then_some(&new.bytes);
        tx.execute(
            "INSERT INTO document_bodies (document_id, body, embedding) VALUES (?1, ?2, ?3)",
            params![id, body, embedding],
        )?;
    }
    tx.execute(
        "INSERT INTO jobs (id, kind, document_id, status, phase, payload, created_at)
         VALUES (?1, ?5, ?2, ?6, ?7, ?3, ?4)",
        params![
            job_id,
            id,
            payload,
            now,
            JobKind::Ingest,
            JobStatus::Queued,
            JobPhase::Queued,
        ],
    )?;
    tx.commit()?;
    Ok(Added {
        id,
        job_id: Some(job_id),
        status: DocumentStatus::Pending,
        duplicate: false,
    })
}

const DOC_COLUMNS: &str = "d.id, d.external_id, d.pending_external_id, d.title, d.source_name,
    d.mime_type, d.content_hash, d.byte_size, d.metadata, d.status, d.error, d.chunk_count,
    (SELECT count(*) FROM chunks c WHERE c.document_id = d.id AND c.embedded = 1) AS embedded_chunks,
    d.created_at, d.updated_at";

/// A `documents` row read with [`DOC_COLUMNS`]; its metadata is still the stored JSON text.
struct DocumentRow {
    view: DocumentView,
    metadata: String,
}

impl DocumentRow {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        let external: Option<String> = r.get("external_id")?;
        let pending: Option<String> = r.get("pending_external_id")?;
        Ok(DocumentRow {
            view: DocumentView {
                id: r.get("id")?,
                external_id: external.or(pending),
                title: r.get("title")?,
                source_name: r.get("source_name")?,
                mime_type: r.get("mime_type")?,
                content_hash: r.get("content_hash")?,
                byte_size: r.get("byte_size")?,
                metadata: Value::Null,
                status: r.get("status")?,
                error: r.get("error")?,
                chunk_count: r.get("chunk_count")?,
                embedded_chunks: r.get("embedded_chunks")?,
                created_at: r.get("created_at")?,
                updated_at: r.get("updated_at")?,
            },
            metadata: r.get("metadata")?,
        })
    }

    fn finish(self) -> Result<DocumentView> {
        let mut d = self.view;
        d.metadata = json_column(&self.metadata)?;
        Ok(d)
    }
}

pub fn get(conn: &Connection, id: &str) -> Result<DocumentView> {
    let row = conn
        .query_row(
            &format!("SELECT {DOC_COLUMNS} FROM documents d WHERE d.id = ?1"),
            [id],
            DocumentRow::from_row,
        )
        .optional()?;
    row.ok_or(Error::NotFound(Resource::Document))?.finish()
}

pub fn list(
    conn: &Connection,
    limit: u32,
    offset: u32,
    status: Option<DocumentStatus>,
) -> Result<Vec<DocumentView>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {DOC_COLUMNS} FROM documents d WHERE (?3 IS NULL OR d.status = ?3)
         ORDER BY d.id LIMIT ?1 OFFSET ?2"
    ))?;
    let rows = stmt.query_map(params![limit, offset, status], DocumentRow::from_row)?;
    rows.map(|r| r?.finish()).collect()
}

/// Deletes a document from SQLite, the vector tables and the full-text index, cancels its
/// unfinished jobs, and removes its blob when nothing else refers to it.
///
/// The deletion is done once SQLite committed it: when the index cannot follow (a full disk, a
/// rebuild in progress) the index is marked to be reconciled, and search never shows the stale
/// entry (results are read from SQLite). A full disk is met by the storage reserve: when SQLite
/// lacks the room to record the deletion, the reserve is released and the deletion retried.
pub fn delete(ws: &Workspace, id: &str) -> Result<()> {
    match delete_once(ws, id) {
        Err(e) if e.is_storage_full() && crate::workspace::reserve::release(ws.data_dir()) => {
            delete_once(ws, id)
        }
        other => other,
    }
}

fn delete_once(ws: &Workspace, id: &str) -> Result<()> {
    let f = ws.fields();
    let (hash, indexed) = ws.index_transaction(
        || {
            let mut conn = ws.conn();
            let tx = conn.transaction()?;
            let hash: Option<String> = tx
                .query_row(
                    "SELECT content_hash FROM documents WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(hash) = hash else {
                return Err(Error::NotFound(Resource::Document));
            };
            remove_document_rows(&tx, id)?;
            tx.execute(
                &format!(
                    "UPDATE jobs SET status = 'cancelled', finished_at = ?2,
                        error = coalesce(error, 'the document was deleted')
                     WHERE document_id = ?1 AND status IN {UNFINISHED_JOBS_SQL}"
                ),
                params![id, db::now()],
            )?;
            let gen = repair::bump_generation(&tx)?;
            tx.commit()?;
            Ok((hash, gen))
        },
        |w, _| {
            w.delete_term(Term::from_field_text(f.document_id, id));
            Ok(())
        },
    )?;
    if let Err(e) = indexed {
        tracing::info!(workspace_id = %ws.id(), document_id = %id, error = %e,
            "document deleted; the full-text index follows when it can");
    }
    collect_blobs(ws, &[hash]);
    Ok(())
}

/// Removes a document's vectors, chunks and row (inside the caller's transaction).
pub fn remove_document_rows(conn: &Connection, id: &str) -> Result<()> {
    let chunk_ids: Vec<i64> = {
        let mut stmt = conn.prepare_cached("SELECT id FROM chunks WHERE document_id = ?1")?;
        let rows = stmt.query_map([id], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    vectors::delete_chunks(conn, &chunk_ids)?;
    conn.execute("DELETE FROM chunks WHERE document_id = ?1", [id])?;
    conn.execute("DELETE FROM documents WHERE id = ?1", [id])?;
    Ok(())
}

const JOB_COLUMNS: &str = "j.id, j.kind, j.status, j.phase, j.progress, j.document_id, j.error,
    j.attempts, j.created_at, j.started_at, j.finished_at,
    (SELECT count(*) FROM chunks c WHERE c.document_id = j.document_id) AS chunks_total,
    (SELECT count(*) FROM chunks c WHERE c.document_id = j.document_id AND c.embedded <> 0)
        AS chunks_embedded";

impl JobView {
    /// A `jobs` row read with [`JOB_COLUMNS`]. While an ingestion job waits for its vectors,
    /// its progress is counted from its document's embedded chunks.
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        let status: JobStatus = r.get("status")?;
        let phase: JobPhase = r.get("phase")?;
        let mut progress: f64 = r.get("progress")?;
        let total: i64 = r.get("chunks_total")?;
        let done: i64 = r.get("chunks_embedded")?;
        if status == JobStatus::Running && phase == JobPhase::Embedding && total > 0 {
            progress = 0.5 + 0.5 * done as f64 / total as f64;
        }
        Ok(JobView {
            id: r.get("id")?,
            kind: r.get("kind")?,
            status,
            phase,
            progress,
            document_id: r.get("document_id")?,
            error: r.get("error")?,
            attempts: r.get("attempts")?,
            created_at: r.get("created_at")?,
            started_at: r.get("started_at")?,
            finished_at: r.get("finished_at")?,
        })
    }
}

pub fn get_job(conn: &Connection, id: &str) -> Result<JobView> {
    conn.query_row(
        &format!("SELECT {JOB_COLUMNS} FROM jobs j WHERE j.id = ?1"),
        [id],
        JobView::from_row,
    )
    .optional()?
    .ok_or(Error::NotFound(Resource::Job))
}

pub fn list_jobs(conn: &Connection, limit: u32, offset: u32) -> Result<Vec<JobView>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs j ORDER BY j.id DESC LIMIT ?1 OFFSET ?2"
    ))?;
    let rows = stmt.query_map(params![limit, offset], JobView::from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Cancels a job that has not finished. An ingestion job's document goes with it (it was not
/// yet, or only partly, indexed); a re-embedding job's new vector space is dropped and search
/// keeps the current one.
pub fn cancel_job(ws: &Workspace, id: &str) -> Result<JobView> {
    let job = get_job(&ws.conn(), id)?;
    if !job.status.is_unfinished() {
        return Err(Error::Conflict(format!(
            "the job is already {}",
            job.status
        )));
    }
    match job.kind {
        JobKind::Ingest => {
            if let Some(doc) = &job.document_id {
                match delete(ws, doc) {
                    Ok(()) | Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        JobKind::Reembed => {
            let conn = ws.conn();
            if let Some(space) = vectors::building(&conn)? {
                vectors::drop_space(&conn, &space)?;
            }
        }
    }
    ws.conn().execute(
        &format!(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?2
             WHERE id = ?1 AND status IN {UNFINISHED_JOBS_SQL}"
        ),
        params![id, db::now()],
    )?;
    get_job(&ws.conn(), id)
}

/// Whether the workspace has work for the scheduler.
pub fn has_work(conn: &Connection) -> Result<bool> {
    let jobs: bool = conn
        .query_row(
            &format!("SELECT 1 FROM jobs WHERE status IN {UNFINISHED_JOBS_SQL} LIMIT 1"),
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    Ok(jobs)
}
