//! The workspace store: one tenant's SQLite database, Tantivy index and blob folder under
//! `data/<workspace_id>/`. Code reaches an open store only through a [`registry::Handle`].

pub mod registry;
pub mod repair;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde::Serialize;
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED, STORED, STRING,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy};
use uuid::Uuid;

use crate::db::{self, Migration};
use crate::error::{Error, Resource, Result};
use crate::knowledge::ann::Ann;
use crate::knowledge::search::AllowedCache;

pub use registry::{Handle, Registry};

pub const DB_FILE: &str = "workspace.db";
pub const INDEX_DIR: &str = "index";
pub const BLOBS_DIR: &str = "blobs";

/// Migrations of a workspace database, applied when a store is opened.
pub static MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../schema/workspace/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "knowledge",
        sql: include_str!("../../schema/workspace/0002_knowledge.sql"),
    },
    Migration {
        version: 3,
        name: "agents",
        sql: include_str!("../../schema/workspace/0003_agents.sql"),
    },
    Migration {
        version: 4,
        name: "unembedded_by_document",
        sql: include_str!("../../schema/workspace/0004_unembedded_by_document.sql"),
    },
    Migration {
        version: 5,
        name: "vector_codes",
        sql: include_str!("../../schema/workspace/0005_vector_codes.sql"),
    },
];

/// The tokenizer of the full-text fields: lower-cased, English-stemmed.
pub const TEXT_TOKENIZER: &str = "en_stem";

/// `PRAGMA mmap_size` of a workspace database.
const MMAP_SIZE: i64 = 1 << 30;

/// Memory budget of the (single-threaded) Tantivy writer; Tantivy's minimum is 15 MB.
const WRITER_MEMORY: usize = 20_000_000;

/// The folder of a workspace. Takes a parsed [`Uuid`], never text: the only way from a request
/// to a path.
pub fn dir_of(data_dir: &Path, id: Uuid) -> PathBuf {
    data_dir.join(id.hyphenated().to_string())
}

/// Fields of the chunk index.
#[derive(Clone, Copy)]
pub struct IndexFields {
    pub chunk_id: Field,
    pub document_id: Field,
    pub title: Field,
    pub headings: Field,
    pub text: Field,
}

fn index_schema() -> (Schema, IndexFields) {
    let mut b = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TEXT_TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = IndexFields {
        chunk_id: b.add_u64_field("chunk_id", INDEXED | STORED | FAST),
        document_id: b.add_text_field("document_id", STRING | STORED),
        title: b.add_text_field("title", text.clone()),
        headings: b.add_text_field("headings", text.clone()),
        text: b.add_text_field("text", text),
    };
    (b.build(), fields)
}

fn fields_of(schema: &Schema) -> Result<IndexFields> {
    let get = |name: &str| {
        schema
            .get_field(name)
            .map_err(|_| Error::internal(format!("index schema lacks field {name}")))
    };
    Ok(IndexFields {
        chunk_id: get("chunk_id")?,
        document_id: get("document_id")?,
        title: get("title")?,
        headings: get("headings")?,
        text: get("text")?,
    })
}

/// Creates the files of a new, empty store at `dir`, which must not exist yet. Leaves nothing
/// open.
pub fn create(dir: &Path) -> Result<()> {
    if dir.exists() {
        return Err(Error::Conflict("workspace folder already exists".into()));
    }
    crate::perms::create_dir_all(&dir.join(BLOBS_DIR))?;
    crate::perms::create_dir_all(&dir.join(INDEX_DIR))?;
    let (schema, _) = index_schema();
    Index::create_in_dir(dir.join(INDEX_DIR), schema)?;
    let mut conn = db::open(&dir.join(DB_FILE), true)?;
    db::migrate(&mut conn, MIGRATIONS)?;
    Ok(())
}

/// Live statistics of a store, read from the store itself.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub documents: i64,
    pub chunks: i64,
    pub bytes_on_disk: u64,
}

struct WriterSlot {
    writer: IndexWriter,
    last_used: Instant,
    /// The payload of the last commit (the SQLite generation the index reflects), carried by
    /// every later commit of this writer.
    payload: Option<String>,
}

impl WriterSlot {
    fn commit(&mut self) -> Result<()> {
        let mut prepared = self.writer.prepare_commit()?;
        if let Some(p) = &self.payload {
            prepared.set_payload(p);
        }
        prepared.commit()?;
        Ok(())
    }
}

/// An open workspace store. Dropping it closes it: the writer is committed and closed, and
/// SQLite checkpoints its WAL when its last connection closes.
pub struct Workspace {
    id: Uuid,
    dir: PathBuf,
    conn: Mutex<Connection>,
    index: Index,
    reader: IndexReader,
    fields: IndexFields,
    writer: Mutex<Option<WriterSlot>>,
    /// Binary codes of the vector spaces, derived from SQLite (see `knowledge::ann`).
    ann: Ann,
    /// Bumped by every write to `documents` or `chunks` (committed or not).
    version: Arc<AtomicU64>,
    /// Chunks allowed by recent filters, checked against `version`.
    allowed: AllowedCache,
    /// Told when the store closes (the registry's count of live stores).
    on_close: Option<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace").field("id", &self.id).finish()
    }
}

impl Workspace {
    /// Opens an existing store. Never creates anything: a missing folder is `NotFound`.
    pub fn open(dir: &Path, id: Uuid) -> Result<Self> {
        if !dir.join(DB_FILE).is_file() {
            return Err(Error::NotFound(Resource::Workspace));
        }
        crate::perms::tighten_workspace_dir(dir);
        let mut conn = db::open(&dir.join(DB_FILE), false)?;
        // sqlite-vec reads and writes vectors through blob I/O over overflow pages; memory-mapped
        // reads keep that (and brute-force KNN) out of pread copies. Address space only: the
        // pages are the OS page cache, shared, not per-connection heap.
        conn.pragma_update(None, "mmap_size", MMAP_SIZE)?;
        db::migrate(&mut conn, MIGRATIONS)?;
        // One update hook feeds the caches derived from this database: the vector codes, and
        // the data version that cached filter results are checked against.
        let ann = Ann::default();
        let version = Arc::new(AtomicU64::new(0));
        {
            let (ann, version) = (ann.clone(), version.clone());
            conn.update_hook(Some(
                move |_: rusqlite::hooks::Action, _: &str, table: &str, rowid: i64| {
                    if table == "documents" || table == "chunks" {
                        version.fetch_add(1, Ordering::Relaxed);
                    }
                    ann.note(table, rowid);
                },
            ))?;
        }
        let mut index = Index::open_in_dir(dir.join(INDEX_DIR))?;
        if !repair::schema_is_current(&index.schema()) {
            // An index of an older schema (tokenizers) is rebuilt from SQLite below.
            tracing::info!(workspace_id = %id, "full-text index schema changed: rebuilding");
            drop(index);
            index = repair::recreate_index(&dir.join(INDEX_DIR))?;
        }
        let fields = fields_of(&index.schema())?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let ws = Workspace {
            id,
            dir: dir.to_path_buf(),
            conn: Mutex::new(conn),
            index,
            reader,
            fields,
            writer: Mutex::new(None),
            ann,
            version,
            allowed: AllowedCache::default(),
            on_close: None,
        };
        repair::repair_if_needed(&ws)?;
        Ok(ws)
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn fields(&self) -> IndexFields {
        self.fields
    }

    /// A counter that changes whenever documents or chunks change. Read it while holding the
    /// connection: writes hold it too, so the value then describes what the reads see.
    pub fn data_version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Chunks allowed by recent search filters (see `knowledge::search`).
    pub fn allowed_cache(&self) -> &AllowedCache {
        &self.allowed
    }

    /// The in-memory binary codes of the vector spaces (see `knowledge::ann`).
    pub fn ann(&self) -> &Ann {
        &self.ann
    }

    pub fn reader(&self) -> &IndexReader {
        &self.reader
    }

    pub(crate) fn set_on_close(&mut self, f: Box<dyn Fn() + Send + Sync>) {
        self.on_close = Some(f);
    }

    /// The store's SQLite connection, serialised by a mutex (one connection per store keeps
    /// file descriptors at three per open workspace).
    pub fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with the workspace's single Tantivy writer, opening it on first use.
    pub fn with_writer<T>(&self, f: impl FnOnce(&mut IndexWriter) -> Result<T>) -> Result<T> {
        self.with_writer_slot(|slot| f(&mut slot.writer))
    }

    /// Commits the writer (if open) and makes the commit visible to searchers.
    pub fn commit_index(&self) -> Result<()> {
        let committed = {
            let mut slot = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_mut() {
                Some(entry) => {
                    entry.commit()?;
                    true
                }
                None => false,
            }
        };
        if committed {
            self.reader.reload()?;
        }
        Ok(())
    }

    /// Runs `f` with the writer, then commits recording `generation` (the SQLite generation of
    /// the chunks the index now reflects) and makes the commit visible. The writer lock is held
    /// throughout, so index mutations of one store are serialised: callers do their SQLite
    /// transaction inside `f`, before the Tantivy operations.
    pub fn index_transaction<T>(
        &self,
        f: impl FnOnce(&mut IndexWriter) -> Result<(T, i64)>,
    ) -> Result<T> {
        let out = self.with_writer_slot(|slot| {
            let (out, generation) = f(&mut slot.writer)?;
            slot.payload = Some(generation.to_string());
            slot.commit()?;
            Ok(out)
        })?;
        self.reader.reload()?;
        Ok(out)
    }

    fn with_writer_slot<T>(&self, f: impl FnOnce(&mut WriterSlot) -> Result<T>) -> Result<T> {
        let mut slot = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let options = tantivy::indexer::IndexWriterOptions::builder()
                .memory_budget_per_thread(WRITER_MEMORY)
                .num_worker_threads(1)
                .num_merge_threads(1)
                .build();
            let writer = self.index.writer_with_options(options)?;
            let payload = self.index.load_metas()?.payload;
            *slot = Some(WriterSlot {
                writer,
                last_used: Instant::now(),
                payload,
            });
        }
        let entry = slot
            .as_mut()
            .ok_or_else(|| Error::internal("writer vanished"))?;
        entry.last_used = Instant::now();
        f(entry)
    }

    pub fn writer_is_open(&self) -> bool {
        self.writer.lock().map(|s| s.is_some()).unwrap_or(false)
    }

    /// Commits and closes the writer when it has been idle for at least `idle`. Returns whether
    /// it closed one.
    pub fn close_writer_if_idle(&self, idle: Duration) -> Result<bool> {
        let mut slot = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let idle_enough = slot.as_ref().is_some_and(|s| s.last_used.elapsed() >= idle);
        if !idle_enough {
            return Ok(false);
        }
        if let Some(mut entry) = slot.take() {
            entry.commit()?;
            entry.writer.wait_merging_threads()?;
            self.reader.reload()?;
        }
        Ok(true)
    }

    /// Commits and closes the writer and truncates the WAL: what a clean shutdown does.
    pub fn flush(&self) -> Result<()> {
        self.close_writer_if_idle(Duration::ZERO)?;
        self.conn()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Counts documents and chunks in the database and the bytes of the folder on disk.
    pub fn stats(&self) -> Result<Stats> {
        let (documents, chunks) = {
            let conn = self.conn();
            let documents = conn.query_row("SELECT count(*) FROM documents", [], |r| r.get(0))?;
            let chunks = conn.query_row("SELECT count(*) FROM chunks", [], |r| r.get(0))?;
            (documents, chunks)
        };
        Ok(Stats {
            documents,
            chunks,
            bytes_on_disk: dir_size(&self.dir)?,
        })
    }

    /// Number of documents in the full-text index (what searchers currently see).
    pub fn indexed_chunks(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Adds a chunk to the full-text index (not committed).
    pub fn index_chunk(
        &self,
        chunk_id: u64,
        document_id: &str,
        title: &str,
        headings: &str,
        text: &str,
    ) -> Result<()> {
        let f = self.fields;
        self.with_writer(|w| {
            w.add_document(repair::chunk_document(
                &f,
                chunk_id,
                document_id,
                title,
                headings,
                text,
            ))?;
            Ok(())
        })
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.writer.lock() {
            if let Some(mut entry) = slot.take() {
                if let Err(e) = entry.commit() {
                    tracing::warn!(workspace_id = %self.id, error = %e, "commit on close failed");
                }
                let _ = entry.writer.wait_merging_threads();
            }
        }
        if let Some(f) = &self.on_close {
            f();
        }
    }
}

/// Sum of the sizes of the files under `dir`. Files and folders that vanish during the walk
/// (segment merges, a concurrent deletion) are skipped rather than failing the count.
pub fn dir_size(dir: &Path) -> Result<u64> {
    fn gone(e: &std::io::Error) -> bool {
        e.kind() == std::io::ErrorKind::NotFound
    }
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let meta = match entry.and_then(|e| e.metadata().map(|m| (e.path(), m))) {
                Ok(found) => found,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            match meta {
                (path, m) if m.is_dir() => stack.push(path),
                (_, m) => total += m.len(),
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> (tempfile::TempDir, Workspace) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let id = crate::ids::new_id();
        let dir = dir_of(tmp.path(), id);
        create(&dir).expect("create");
        let ws = Workspace::open(&dir, id).expect("open");
        (tmp, ws)
    }

    #[test]
    fn a_new_store_is_whole_and_empty() {
        let (_tmp, ws) = fresh();
        let stats = ws.stats().expect("stats");
        assert_eq!((stats.documents, stats.chunks), (0, 0));
        assert!(stats.bytes_on_disk > 0);
        let conn = ws.conn();
        for table in ["documents", "chunks", "chunk_vectors", "jobs", "audit_log"] {
            let n: i64 = conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .expect(table);
            assert_eq!(n, 0);
        }
        assert!(ws.dir().join(BLOBS_DIR).is_dir());
    }

    #[test]
    fn create_refuses_an_existing_folder_and_open_refuses_a_missing_one() {
        let (tmp, ws) = fresh();
        assert!(matches!(create(ws.dir()), Err(Error::Conflict(_))));
        let missing = dir_of(tmp.path(), crate::ids::new_id());
        assert!(matches!(
            Workspace::open(&missing, crate::ids::new_id()),
            Err(Error::NotFound(_))
        ));
        assert!(!missing.exists(), "open must never create a folder");
    }

    #[test]
    fn writer_is_lazy_single_and_closed_when_idle() {
        let (_tmp, ws) = fresh();
        assert!(!ws.writer_is_open());
        ws.index_chunk(1, "d", "Title", "", "hello world")
            .expect("index");
        assert!(ws.writer_is_open());
        // Still buffered: not visible before a commit.
        assert_eq!(ws.indexed_chunks(), 0);
        ws.commit_index().expect("commit");
        assert_eq!(ws.indexed_chunks(), 1);
        assert!(!ws
            .close_writer_if_idle(Duration::from_secs(3600))
            .expect("sweep"));
        assert!(ws.writer_is_open());
        assert!(ws.close_writer_if_idle(Duration::ZERO).expect("sweep"));
        assert!(!ws.writer_is_open());
        // Reopens on demand after closing, proving the lock file was released.
        ws.index_chunk(2, "d", "Title", "", "second")
            .expect("index again");
        ws.flush().expect("flush");
        assert_eq!(ws.indexed_chunks(), 2);
    }

    #[test]
    fn vectors_table_accepts_384_dimensions() {
        let (_tmp, ws) = fresh();
        let v: Vec<f32> = (0..384).map(|i| i as f32 / 384.0).collect();
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let conn = ws.conn();
        conn.execute(
            "INSERT INTO chunk_vectors (chunk_id, embedding) VALUES (7, ?1)",
            [bytes],
        )
        .expect("insert vector");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM chunk_vectors", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 1);
    }
}
