//! The workspace store: one tenant's SQLite database, Tantivy index and blob folder under
//! `data/<workspace_id>/`. Code reaches an open store only through a [`registry::Handle`].

pub mod extensions;
pub mod registry;
pub mod repair;
pub mod reserve;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
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

pub use extensions::Slots;
pub use registry::{ClosedHold, Handle, Registry, Tiering};

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
    Migration {
        version: 6,
        name: "id_shaped_slugs",
        sql: include_str!("../../schema/workspace/0006_id_shaped_slugs.sql"),
    },
    Migration {
        version: 7,
        name: "audit_chain",
        sql: include_str!("../../schema/workspace/0007_audit_chain.sql"),
    },
    Migration {
        version: 8,
        name: "footprint",
        sql: include_str!("../../schema/workspace/0008_footprint.sql"),
    },
    Migration {
        version: 9,
        name: "int8_vectors",
        sql: include_str!("../../schema/workspace/0009_int8_vectors.sql"),
    },
];

/// The tokenizer of the full-text fields: lower-cased, English-stemmed.
pub const TEXT_TOKENIZER: &str = "en_stem";

/// Page size of a new workspace database. 2 KiB rather than SQLite's 4: a workspace has ~40
/// tables and indexes of at least one page each, most of them small (a 200-chunk workspace is
/// 12% smaller). Stores made before keep their 4 KiB pages; both read alike.
const PAGE_SIZE: u32 = 2048;

/// `PRAGMA mmap_size` of a workspace database.
const MMAP_SIZE: i64 = 1 << 30;

/// Memory budget of the (single-threaded) Tantivy writer; Tantivy's minimum is 15 MB.
const WRITER_MEMORY: usize = 20_000_000;

/// When a writer closes (idle, or with its store), its segments of fewer documents than this
/// are merged into one: a workspace loaded one small commit at a time ends as one segment
/// (six files) instead of several, and the work stays bounded (at most this many documents
/// rewritten). Larger segments are left to the merge policy.
pub const CLOSE_MERGE_MAX_DOCS: u32 = 20_000;

/// Tries of the merge on close while a merge of the policy holds some of the segments.
const CLOSE_MERGE_ATTEMPTS: u32 = 100;

/// Segments of the same size class that the writer's merge policy lets accumulate before it
/// merges them while writing (Tantivy's default is 8).
const MERGE_MIN_SEGMENTS: usize = 4;

/// Read-only connections a store opens, at most, for reads that find its connection busy
/// ([`Workspace::read`]). Each holds two file descriptors (the database and its WAL; the
/// `-shm` mapping is shared per file), so open stores hold at most
/// `max_open_workspaces × (3 + 2 × READERS)` descriptors for SQLite.
pub const READERS: usize = 2;

/// `PRAGMA cache_size` of a workspace connection, KiB (SQLite's default is 2,000 KiB per
/// connection). Reads come through the memory map (`MMAP_SIZE`: the OS page cache, shared and
/// reclaimable), so the private cache holds mostly pages being written; this bounds the heap a
/// store can hold to `CACHE_KIB × (1 + READERS)`.
pub const CACHE_KIB: u32 = 256;

/// `PRAGMA journal_size_limit` of a workspace database: after a checkpoint the WAL file is cut
/// back to this size instead of keeping its high-water mark.
const JOURNAL_SIZE_LIMIT: i64 = 256 * 1024;

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
    // The page size is fixed when the first table is written (WAL mode keeps it after).
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = DELETE; PRAGMA page_size = {PAGE_SIZE}; \
         PRAGMA auto_vacuum = INCREMENTAL; VACUUM; PRAGMA journal_mode = WAL;"
    ))?;
    db::persist_wal(&conn)?;
    db::migrate(&mut conn, MIGRATIONS)?;
    // The migrations' pages go into the database file and the WAL is emptied: a new store
    // leaves no WAL content behind (disk, and tiering's folder fingerprint).
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

/// Live statistics of a store, read from the store itself.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Stats {
    pub documents: i64,
    pub chunks: i64,
    pub bytes_on_disk: u64,
}

/// The Tantivy writers of a server (each holds an indexing thread, a merge thread and a lock
/// file): counted from the moment one opens until it is dropped, and closed when idle by
/// [`Writers::close_idle`], whoever opened them (a request, a job, a repair, a rebuild) and
/// wherever their store is (cached, evicted or removed while held, or opened outside a registry
/// with this set). The sweep walks writers, not a cache of stores, and never waits for a busy
/// one: a writer in use is not idle.
#[derive(Clone, Default)]
pub struct Writers {
    open: Arc<AtomicU64>,
    /// The writer homes of the live stores sharing this set (dead ones are pruned by sweeps).
    homes: Arc<Mutex<Vec<Weak<WriterHome>>>>,
}

impl Writers {
    /// Writers open now.
    pub fn get(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    fn track(&self) -> WriterTracked {
        self.open.fetch_add(1, Ordering::Relaxed);
        WriterTracked(self.open.clone())
    }

    fn register(&self, home: &Arc<WriterHome>) {
        let mut homes = self.homes.lock().unwrap_or_else(|p| p.into_inner());
        homes.retain(|h| h.strong_count() > 0);
        homes.push(Arc::downgrade(home));
    }

    /// Commits and closes every writer idle for at least `idle`; skips (without waiting) those
    /// in use. Returns how many it closed.
    pub fn close_idle(&self, idle: Duration) -> usize {
        let homes: Vec<Weak<WriterHome>> = {
            let mut homes = self.homes.lock().unwrap_or_else(|p| p.into_inner());
            homes.retain(|h| h.strong_count() > 0);
            homes.clone()
        };
        let mut closed = 0;
        // One at a time: the sweep never keeps a store's writer alive longer than its own.
        for home in homes.iter().filter_map(Weak::upgrade) {
            match home.close_if_idle(idle, false) {
                Ok(true) => closed += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(workspace_id = %home.id, error = %e, "closing idle writer failed")
                }
            }
        }
        closed
    }
}

/// Decrements the count when its writer is dropped.
struct WriterTracked(Arc<AtomicU64>);

impl Drop for WriterTracked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A store's writer slot and what closing its writer needs, shared with the server's
/// [`Writers`] so that a sweep reaches it wherever the store is.
struct WriterHome {
    id: Uuid,
    slot: Mutex<Option<WriterSlot>>,
    reader: IndexReader,
    /// The store's connection, to truncate its WAL when the writer goes idle (weak: the home
    /// outlives nothing of the store).
    conn: Weak<Mutex<Connection>>,
    index_dir: PathBuf,
    /// Set when an index change failed after SQLite committed (a failed commit, a full disk):
    /// the index lacks or holds chunks it should not, and is reconciled before it is next
    /// written (`knowledge::ingest::run_quantum`), or on the next open.
    needs_reconcile: AtomicBool,
}

impl WriterHome {
    fn lock(&self) -> MutexGuard<'_, Option<WriterSlot>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commits and closes the writer when it has been idle for at least `idle`. With `wait`
    /// false a writer in use (its lock held) is left alone. Returns whether it closed one.
    fn close_if_idle(&self, idle: Duration, wait: bool) -> Result<bool> {
        let mut slot = if wait {
            self.lock()
        } else {
            match self.slot.try_lock() {
                Ok(slot) => slot,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return Ok(false),
            }
        };
        let idle_enough = slot.as_ref().is_some_and(|s| s.last_used.elapsed() >= idle);
        if !idle_enough {
            return Ok(false);
        }
        if let Some(mut entry) = slot.take() {
            // Closed whatever happens; a failed commit leaves the index to be reconciled.
            if let Err(e) = entry.commit() {
                self.needs_reconcile.store(true, Ordering::Release);
                tracing::warn!(workspace_id = %self.id, error = %e, "commit of an idle writer failed: index to be reconciled");
                return Err(e);
            }
            entry.close(&self.index_dir)?;
            self.reader.reload()?;
        }
        // The store was written and is idle now: its WAL goes back to nothing (never waiting
        // for a connection in use: the next idle close does it).
        if let Some(conn) = self.conn.upgrade() {
            if let Ok(conn) = conn.try_lock() {
                truncate_wal(&conn)?;
            }
        }
        Ok(true)
    }
}

/// Gives the database's free pages back to the file system (databases made with
/// `auto_vacuum = INCREMENTAL`; a no-op for older ones), checkpoints the WAL into the database
/// and truncates it to nothing.
fn truncate_wal(conn: &Connection) -> Result<()> {
    conn.execute_batch("PRAGMA incremental_vacuum;")?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

struct WriterSlot {
    writer: IndexWriter,
    last_used: Instant,
    /// The payload of the last successful commit (the SQLite generation the index reflects),
    /// carried by every later commit of this writer. Set only once a commit recording it
    /// succeeded.
    payload: Option<String>,
    _tracked: WriterTracked,
}

impl WriterSlot {
    /// Commits, recording `payload` (or the last one). A failed commit leaves the writer
    /// unusable (Tantivy drops its indexing thread): the caller must discard it.
    fn commit_with(&mut self, payload: Option<String>) -> Result<()> {
        let payload = payload.or_else(|| self.payload.clone());
        let mut prepared = self.writer.prepare_commit()?;
        if let Some(p) = &payload {
            prepared.set_payload(p);
        }
        prepared.commit()?;
        self.payload = payload;
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        self.commit_with(None)
    }

    /// Closes a committed writer: merges its small segments into one
    /// ([`CLOSE_MERGE_MAX_DOCS`]), then waits for its threads, then removes the writer's lock
    /// file (Tantivy leaves it behind; it is made again with the next writer). That is safe
    /// because one writer at a time ever works on a store's index: the writer slot's lock in
    /// a process, `data/.lock` across processes (commands without it never open a writer on
    /// a live store). A failed merge leaves the segments as they were (the index is whole
    /// either way).
    fn close(mut self, index_dir: &Path) -> Result<()> {
        // A merge the policy started may hold some of them: Tantivy refuses to merge those
        // again, so the attempt is repeated (briefly) until that merge is done.
        for attempt in 0..CLOSE_MERGE_ATTEMPTS {
            let small: Vec<tantivy::index::SegmentId> = self
                .writer
                .index()
                .searchable_segment_metas()?
                .iter()
                .filter(|m| m.num_docs() < CLOSE_MERGE_MAX_DOCS)
                .map(|m| m.id())
                .collect();
            if small.len() < 2 {
                break;
            }
            match self.writer.merge(&small).wait() {
                Ok(_) => break,
                Err(e) if attempt + 1 == CLOSE_MERGE_ATTEMPTS => {
                    tracing::warn!(error = %e, "merging small segments on close failed")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        self.writer.wait_merging_threads()?;
        let lock = &tantivy::directory::INDEX_WRITER_LOCK.filepath;
        match std::fs::remove_file(index_dir.join(lock)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(error = %e, "removing the index writer's lock file failed")
            }
            _ => {}
        }
        Ok(())
    }
}

/// Errors a closure returns before touching the index (the writer stays usable).
fn leaves_writer_intact(e: &Error) -> bool {
    matches!(
        e,
        Error::NotFound(_) | Error::Invalid(_) | Error::Conflict(_)
    )
}

/// An open workspace store. Dropping it closes it: the writer is committed and closed, and
/// SQLite checkpoints its WAL when its last connection closes.
pub struct Workspace {
    id: Uuid,
    dir: PathBuf,
    conn: Arc<Mutex<Connection>>,
    /// Read-only connections for reads that would wait for `conn` (WAL: they run alongside
    /// it and each other). Opened on contention only, at most [`READERS`].
    readers: ReadPool,
    index: Index,
    reader: IndexReader,
    fields: IndexFields,
    /// The single writer's slot (and the reconciliation mark), reachable by [`Writers`].
    home: Arc<WriterHome>,
    /// The server's writers (the registry shares one set).
    writers: Writers,
    /// Set while the index is rebuilt from SQLite (it was missing or unreadable at open, or a
    /// read or a commit found it unreadable later): full-text search answers
    /// `IndexUnavailable` until the rebuild is done.
    rebuilding: AtomicBool,
    /// Whether the index's files passed their checksums since open (or were rebuilt). A writer
    /// is opened only over a checked index: Tantivy applies deletions and merges segments on
    /// its own thread pool, where a decoder panicking on a damaged file aborts the process.
    index_checked: AtomicBool,
    /// Why the last rebuild gave up (after [`registry::REBUILD_ATTEMPTS`]); cleared by a
    /// successful rebuild. Full-text search says so in its 503.
    rebuild_failed: Mutex<Option<String>>,
    /// Starts the background rebuild (set by the registry; without it, the caller rebuilds).
    rebuilder: OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Bumped by every write to `documents` or `chunks` (committed or not).
    version: Arc<AtomicU64>,
    /// State derived from this store by higher layers (knowledge's search caches), and the
    /// observers of its row changes.
    extensions: extensions::Extensions,
    /// Told when the store is closed (the registry's count of live stores). The last field:
    /// fields drop in order, so it runs once the connections and the index are closed.
    on_close: OnClose,
}

/// Calls its function when dropped (the last field of [`Workspace`]).
#[derive(Default)]
struct OnClose(Option<Box<dyn Fn() + Send + Sync>>);

impl Drop for OnClose {
    fn drop(&mut self) {
        if let Some(f) = &self.0 {
            f();
        }
    }
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace").field("id", &self.id).finish()
    }
}

impl Workspace {
    /// Opens an existing store. Never creates anything: a missing folder is `NotFound`.
    /// A missing or unreadable full-text index is replaced by an empty one to be rebuilt from
    /// SQLite ([`Workspace::rebuild_pending`], [`Workspace::rebuild_index`]); the caller (the
    /// registry) rebuilds it in the background.
    pub fn open(dir: &Path, id: Uuid) -> Result<Self> {
        Self::open_counted(dir, id, Writers::default())
    }

    /// As [`Workspace::open`], its writer counted and swept in `writers`.
    pub fn open_counted(dir: &Path, id: Uuid, writers: Writers) -> Result<Self> {
        if !dir.join(DB_FILE).is_file() {
            return Err(Error::NotFound(Resource::Workspace));
        }
        crate::perms::tighten_workspace_dir(dir);
        Self::open_store(dir, id, writers).map_err(|e| match e {
            e @ Error::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error {
                    code: rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase,
                    ..
                },
                _,
            )) => {
                tracing::error!(workspace_id = %id, error = %e, "the workspace database cannot be opened");
                Error::Corrupt(format!(
                    "the database of workspace {id} cannot be read ({}); other workspaces are \
                     not affected: restore this one from a backup",
                    sqlite_reason(&e)
                ))
            }
            e => {
                tracing::error!(workspace_id = %id, error = %e, "the workspace cannot be opened");
                e
            }
        })
    }

    fn open_store(dir: &Path, id: Uuid, writers: Writers) -> Result<Self> {
        let mut conn = db::open(&dir.join(DB_FILE), false)?;
        db::persist_wal(&conn)?;
        // sqlite-vec reads and writes vectors through blob I/O over overflow pages; memory-mapped
        // reads keep that (and brute-force KNN) out of pread copies. Address space only: the
        // pages are the OS page cache, shared, not per-connection heap.
        conn.execute_batch(&format!(
            "PRAGMA mmap_size = {MMAP_SIZE}; PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}; \
             PRAGMA cache_size = -{CACHE_KIB};"
        ))?;
        db::migrate(&mut conn, MIGRATIONS)?;
        // One update hook feeds the state derived from this database: the data version that
        // cached results are checked against, and the row observers of the extensions (the
        // vector codes of `knowledge::caches`).
        let extensions = extensions::Extensions::default();
        let version = Arc::new(AtomicU64::new(0));
        {
            let (observers, version) = (extensions.observers(), version.clone());
            conn.update_hook(Some(
                move |_: rusqlite::hooks::Action, _: &str, table: &str, rowid: i64| {
                    if table == "documents" || table == "chunks" {
                        version.fetch_add(1, Ordering::Relaxed);
                    }
                    extensions::notify(&observers, table, rowid);
                },
            ))?;
        }
        let index_dir = dir.join(INDEX_DIR);
        let mut rebuild = false;
        let (index, reader) = match open_index(&index_dir) {
            Ok((index, _)) if !repair::schema_is_current(&index.schema()) => {
                // An index of an older schema (tokenizers) is rebuilt from SQLite below.
                tracing::info!(workspace_id = %id, "full-text index schema changed: rebuilding");
                drop(index);
                repair::recreate_index(&index_dir)?;
                open_index(&index_dir)?
            }
            Ok(opened) => opened,
            Err(e) => {
                // The index is derived data: an empty one replaces it and is rebuilt from
                // SQLite in the background; meanwhile full-text search answers 503.
                tracing::warn!(
                    workspace_id = %id, error = %e,
                    "full-text index missing or unreadable: rebuilding it from the database"
                );
                rebuild = true;
                repair::recreate_index(&index_dir)?;
                open_index(&index_dir)?
            }
        };
        let fields = fields_of(&index.schema())?;
        let conn = Arc::new(Mutex::new(conn));
        let home = Arc::new(WriterHome {
            id,
            slot: Mutex::new(None),
            reader: reader.clone(),
            conn: Arc::downgrade(&conn),
            index_dir: index_dir.clone(),
            needs_reconcile: AtomicBool::new(rebuild),
        });
        writers.register(&home);
        let ws = Workspace {
            id,
            dir: dir.to_path_buf(),
            conn,
            readers: ReadPool::new(dir.join(DB_FILE)),
            index,
            reader,
            fields,
            home,
            writers,
            rebuilding: AtomicBool::new(rebuild),
            index_checked: AtomicBool::new(false),
            rebuild_failed: Mutex::new(None),
            rebuilder: OnceLock::new(),
            version,
            extensions,
            on_close: OnClose::default(),
        };
        if !rebuild {
            // An index that opens but cannot be read (a damaged segment) is rebuilt like a
            // missing one; other failures (the database) fail the open.
            if let Err(e) = ws.read_index(|| repair::repair_if_needed(&ws)) {
                if !matches!(e, Error::IndexUnavailable(_)) {
                    return Err(e);
                }
            }
            // A repair must not leave its writer (threads, lock file) behind.
            ws.close_writer_if_idle(Duration::ZERO)?;
        }
        Ok(ws)
    }

    /// Whether the index awaits its rebuild (found missing or unreadable at open, or by a
    /// later read or commit).
    pub fn rebuild_pending(&self) -> bool {
        self.rebuilding.load(Ordering::Acquire)
    }

    /// Fails with `IndexUnavailable` while the full-text index is being rebuilt (or after its
    /// rebuild gave up, saying why).
    pub fn require_index(&self) -> Result<()> {
        if !self.rebuild_pending() {
            return Ok(());
        }
        let failed = self
            .rebuild_failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Err(Error::IndexUnavailable(match failed {
            None => "this workspace's full-text index is being rebuilt; retry shortly (vector \
                     search and documents keep working meanwhile)"
                .into(),
            Some(why) => format!(
                "this workspace's full-text index is unreadable and could not be rebuilt \
                 ({why}); it is tried again when the workspace is next opened (vector search \
                 and documents keep working meanwhile)"
            ),
        }))
    }

    /// Sets what starts a background rebuild when the index is found unreadable after open.
    pub(crate) fn set_rebuilder(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.rebuilder.set(f);
    }

    /// Marks the index unreadable (`what` failed for `reason`): full-text search answers 503
    /// and a rebuild from SQLite starts in the background (once: a rebuild already pending is
    /// not started again). Returns the error to answer with.
    pub fn index_unreadable(&self, what: &str, reason: &str) -> Error {
        if !self.rebuilding.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                workspace_id = %self.id, error = %reason,
                "full-text index unreadable ({what}): rebuilding it from the database"
            );
            self.set_needs_reconcile(true);
            if let Some(start) = self.rebuilder.get() {
                start();
            }
        }
        match self.require_index() {
            Err(e) => e,
            Ok(()) => Error::IndexUnavailable(
                "this workspace's full-text index is being rebuilt; retry shortly".into(),
            ),
        }
    }

    /// Runs `f`, which reads the full-text index. A failure that says the index's files are
    /// damaged (a Tantivy read error, or a panic of Tantivy's decoders on garbled bytes) marks
    /// the index unreadable ([`Workspace::index_unreadable`]) and is `IndexUnavailable`; any
    /// other error passes through.
    pub fn read_index<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(Err(e)) if index_is_damaged(&e) => {
                Err(self.index_unreadable("a read failed", &e.to_string()))
            }
            Ok(result) => result,
            Err(panic) => Err(self.index_unreadable("a read panicked", panic_text(&*panic))),
        }
    }

    /// Rebuilds the index from SQLite (after it was found missing or unreadable): every entry
    /// dropped, every chunk added again. Then makes full-text search available again. Leaves
    /// no writer open.
    pub fn rebuild_index(&self) -> Result<repair::Repair> {
        let report = repair::rebuild(self)?;
        *self
            .rebuild_failed
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        // The rebuilt index holds only segments written since (no old file is referenced).
        self.index_checked.store(true, Ordering::Release);
        // Closed before full-text search is available again: whoever sees the index back
        // sees no writer left open by the rebuild.
        self.close_writer_if_idle(Duration::ZERO)?;
        self.rebuilding.store(false, Ordering::Release);
        tracing::info!(workspace_id = %self.id, added = report.added, "full-text index rebuilt");
        Ok(report)
    }

    /// Records that the rebuild gave up (full-text search keeps answering 503, saying so).
    pub(crate) fn rebuild_gave_up(&self, e: &Error) {
        *self
            .rebuild_failed
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    /// Whether a failed index change left the index to be reconciled with SQLite.
    pub fn needs_reconcile(&self) -> bool {
        self.home.needs_reconcile.load(Ordering::Acquire)
    }

    pub(crate) fn set_needs_reconcile(&self, v: bool) {
        self.home.needs_reconcile.store(v, Ordering::Release);
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

    /// The data directory the store's folder is in.
    pub fn data_dir(&self) -> &Path {
        self.dir.parent().unwrap_or(&self.dir)
    }

    pub fn fields(&self) -> IndexFields {
        self.fields
    }

    /// A counter that changes whenever documents or chunks change. Read it while holding the
    /// connection: writes hold it too, so the value then describes what the reads see.
    pub fn data_version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// This store's `T`, state a higher layer derives from it (e.g. `knowledge::caches`),
    /// made by `make` on first use and dropped with the store. `make` runs under the slots'
    /// lock: it must not take the connection or ask for another extension; it may follow the
    /// store's row changes ([`Slots::observe_rows`]). Lock order: the connection, then the
    /// slots.
    pub fn extension<T: std::any::Any + Send + Sync>(
        &self,
        make: impl FnOnce(&Slots) -> T,
    ) -> Arc<T> {
        self.extensions.get(make)
    }

    pub fn reader(&self) -> &IndexReader {
        &self.reader
    }

    pub(crate) fn set_on_close(&mut self, f: Box<dyn Fn() + Send + Sync>) {
        self.on_close = OnClose(Some(f));
    }

    /// The store's SQLite connection, serialised by a mutex (one connection per store keeps
    /// file descriptors at three per open workspace).
    pub fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection for reads that need no transaction with writes and no write count (search
    /// hydration, exact vector search, document reads): the store's connection when it is
    /// free, else an idle read-only one (opened on first need, at most [`READERS`]), else the
    /// store's connection when it frees up. In WAL mode readers never wait for a writer nor
    /// for each other. Each statement sees the latest committed data. What checks cached
    /// state against [`Workspace::data_version`] must read with [`Workspace::conn`].
    pub fn read(&self) -> ReadConn<'_> {
        if let Ok(main) = self.conn.try_lock() {
            return ReadConn(Lent::Main(main));
        }
        ReadConn(match self.readers.take() {
            Some(conn) => Lent::Pooled {
                conn: Some(conn),
                pool: &self.readers,
            },
            None => Lent::Main(self.conn()),
        })
    }

    /// Read-only connections open now (for the benchmark and tests).
    pub fn readers_open(&self) -> usize {
        self.readers.open.load(Ordering::Relaxed)
    }

    /// Runs `f` with the workspace's single Tantivy writer, opening it on first use.
    pub fn with_writer<T>(&self, f: impl FnOnce(&mut IndexWriter) -> Result<T>) -> Result<T> {
        self.with_writer_slot(|slot| f(&mut slot.writer))
    }

    /// Commits the writer (if open) and makes the commit visible to searchers.
    pub fn commit_index(&self) -> Result<()> {
        let committed = {
            let mut slot = self.home.lock();
            match slot.as_mut().map(WriterSlot::commit) {
                Some(Ok(())) => true,
                Some(Err(e)) => {
                    self.discard_writer(&mut slot, &e);
                    return Err(e);
                }
                None => false,
            }
        };
        if committed {
            self.reader.reload()?;
        }
        Ok(())
    }

    /// An index transaction: `sql` makes the SQLite transaction (and returns the generation it
    /// bumped), then `index` makes the matching Tantivy changes, committed recording that
    /// generation and made visible. The writer lock is held throughout, so index mutations of
    /// one store are serialised in SQLite's order.
    ///
    /// The outer error: `sql` failed (nothing changed). The inner one: SQLite committed but the
    /// index could not follow (a failed commit, a full disk). Then the writer is discarded (a
    /// failed Tantivy writer silently drops later additions) and the index is marked to be
    /// reconciled; the generation on disk stays that of the last successful commit.
    #[allow(clippy::type_complexity)]
    pub fn index_transaction<T, U>(
        &self,
        sql: impl FnOnce() -> Result<(T, i64)>,
        index: impl FnOnce(&mut IndexWriter, &T) -> Result<U>,
    ) -> Result<(T, Result<U>)> {
        if let Err(unavailable) = self.require_index() {
            // The rebuild holds the writer for its whole run: do not wait for it. It (or the
            // reconciliation marked here) picks this change up from SQLite.
            let (out, _) = sql()?;
            self.set_needs_reconcile(true);
            return Ok((out, Err(unavailable)));
        }
        self.index_transaction_now(sql, index)
    }

    /// [`Workspace::index_transaction`], waiting for the writer even during a rebuild (the
    /// rebuild itself runs as one).
    #[allow(clippy::type_complexity)]
    pub(crate) fn index_transaction_now<T, U>(
        &self,
        sql: impl FnOnce() -> Result<(T, i64)>,
        index: impl FnOnce(&mut IndexWriter, &T) -> Result<U>,
    ) -> Result<(T, Result<U>)> {
        let mut slot = self.home.lock();
        let (out, generation) = sql()?;
        // The index part reads the index too (deletions are applied to every segment at
        // commit): a damaged index shows here as an error or a panic of Tantivy's decoders.
        let indexed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let entry = self.writer_entry(&mut slot)?;
            let u = index(&mut entry.writer, &out)?;
            entry.commit_with(Some(generation.to_string()))?;
            entry.last_used = Instant::now();
            Ok(u)
        }))
        .unwrap_or_else(|panic| {
            Err(Error::Index(tantivy::TantivyError::InternalError(format!(
                "the index change panicked: {}",
                panic_text(&*panic)
            ))))
        });
        let indexed = match indexed {
            Ok(u) => {
                drop(slot);
                self.read_index(|| Ok(self.reader.reload()?)).map(|_| u)
            }
            Err(e) => {
                self.discard_writer(&mut slot, &e);
                if index_is_damaged(&e) {
                    Err(self.index_unreadable("a change failed", &e.to_string()))
                } else {
                    Err(e)
                }
            }
        };
        Ok((out, indexed))
    }

    /// Drops a writer that failed (its uncommitted changes with it) and marks the index for
    /// reconciliation with SQLite.
    fn discard_writer(&self, slot: &mut Option<WriterSlot>, e: &Error) {
        tracing::warn!(
            workspace_id = %self.id, error = %e,
            "full-text index change failed: writer discarded, index to be reconciled"
        );
        self.set_needs_reconcile(true);
        if let Some(entry) = slot.take() {
            drop(entry.writer);
        }
    }

    /// Checks every file of the index's segments against its checksum, once per open (the
    /// first time a writer is wanted) and never during a rebuild (which reads nothing of the
    /// old segments). A damaged or missing file marks the index unreadable
    /// ([`Workspace::index_unreadable`]): no writer ever works over it.
    fn check_index_files(&self) -> Result<()> {
        if self.index_checked.load(Ordering::Acquire) || self.rebuild_pending() {
            return Ok(());
        }
        let damaged = match self.index.validate_checksum() {
            Ok(bad) if bad.is_empty() => None,
            Ok(bad) => {
                let mut names: Vec<String> = bad.iter().map(|p| p.display().to_string()).collect();
                names.sort();
                Some(format!(
                    "files failing their checksums: {}",
                    names.join(", ")
                ))
            }
            Err(e) => Some(e.to_string()),
        };
        match damaged {
            None => {
                self.index_checked.store(true, Ordering::Release);
                Ok(())
            }
            Some(reason) => Err(self.index_unreadable("before a change", &reason)),
        }
    }

    fn writer_entry<'a>(&self, slot: &'a mut Option<WriterSlot>) -> Result<&'a mut WriterSlot> {
        if slot.is_none() {
            self.check_index_files()?;
            let options = tantivy::indexer::IndexWriterOptions::builder()
                .memory_budget_per_thread(WRITER_MEMORY)
                .num_worker_threads(1)
                .num_merge_threads(1)
                .build();
            let writer: IndexWriter = self.index.writer_with_options(options)?;
            let mut policy = tantivy::indexer::LogMergePolicy::default();
            policy.set_min_num_segments(MERGE_MIN_SEGMENTS);
            writer.set_merge_policy(Box::new(policy));
            let payload = self.index.load_metas()?.payload;
            *slot = Some(WriterSlot {
                writer,
                last_used: Instant::now(),
                payload,
                _tracked: self.writers.track(),
            });
        }
        let entry = slot
            .as_mut()
            .ok_or_else(|| Error::internal("writer vanished"))?;
        entry.last_used = Instant::now();
        Ok(entry)
    }

    fn with_writer_slot<T>(&self, f: impl FnOnce(&mut WriterSlot) -> Result<T>) -> Result<T> {
        let mut slot = self.home.lock();
        let result = self.writer_entry(&mut slot).and_then(f);
        match &result {
            Err(e) if !leaves_writer_intact(e) => self.discard_writer(&mut slot, e),
            // Idle from when it was last used, not from when that use began.
            _ => {
                if let Some(entry) = slot.as_mut() {
                    entry.last_used = Instant::now();
                }
            }
        }
        result
    }

    pub fn writer_is_open(&self) -> bool {
        self.home.lock().is_some()
    }

    /// Commits and closes the writer when it has been idle for at least `idle` (waiting for it
    /// if it is in use). Returns whether it closed one.
    pub fn close_writer_if_idle(&self, idle: Duration) -> Result<bool> {
        self.home.close_if_idle(idle, true)
    }

    /// Commits and closes the writer and truncates the WAL: what a clean shutdown does.
    pub fn flush(&self) -> Result<()> {
        self.close_writer_if_idle(Duration::ZERO)?;
        truncate_wal(&self.conn())
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

/// A store's read-only connections ([`Workspace::read`]).
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Opened and not closed (idle or lent).
    open: AtomicUsize,
}

impl ReadPool {
    fn new(path: PathBuf) -> Self {
        ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
        }
    }

    /// An idle reader, or a new one while fewer than [`READERS`] are open; `None` otherwise
    /// (or when one cannot be opened: the caller falls back to the store's connection).
    fn take(&self) -> Option<Connection> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Some(c);
        }
        if self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < READERS).then_some(n + 1)
            })
            .is_err()
        {
            return None;
        }
        match open_reader(&self.path) {
            Ok(c) => Some(c),
            Err(e) => {
                self.open.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!(error = %e, "opening a read-only connection failed");
                None
            }
        }
    }

    fn give_back(&self, conn: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
    }
}

/// A read-only connection to a store's database (`query_only`: it can never write).
fn open_reader(path: &Path) -> Result<Connection> {
    let conn = db::open(path, false)?;
    db::persist_wal(&conn)?;
    conn.execute_batch(&format!(
        "PRAGMA mmap_size = {MMAP_SIZE}; PRAGMA query_only = 1; PRAGMA cache_size = -{CACHE_KIB};"
    ))?;
    Ok(conn)
}

/// A connection lent for reads by [`Workspace::read`].
pub struct ReadConn<'a>(Lent<'a>);

enum Lent<'a> {
    /// The store's own connection (it was free, or every reader was busy).
    Main(MutexGuard<'a, Connection>),
    /// A read-only connection, back to the pool when dropped.
    Pooled {
        conn: Option<Connection>,
        pool: &'a ReadPool,
    },
}

impl std::ops::Deref for ReadConn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match &self.0 {
            Lent::Main(g) => g,
            // `conn` is only `None` inside `drop`.
            Lent::Pooled { conn, .. } => conn.as_ref().expect("reader used after drop"),
        }
    }
}

impl Drop for ReadConn<'_> {
    fn drop(&mut self) {
        if let Lent::Pooled { conn, pool } = &mut self.0 {
            if let Some(c) = conn.take() {
                pool.give_back(c);
            }
        }
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.home.slot.lock() {
            if let Some(mut entry) = slot.take() {
                match entry.commit() {
                    Ok(()) => {
                        if let Err(e) = entry.close(&self.home.index_dir) {
                            tracing::warn!(workspace_id = %self.id, error = %e, "closing the writer failed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(workspace_id = %self.id, error = %e, "commit on close failed");
                        let _ = entry.writer.wait_merging_threads();
                    }
                }
            }
        }
    }
}

/// Whether an error says the index's files are damaged (missing, truncated, garbled): a read
/// error of Tantivy, not a full disk, a busy lock or a bad argument.
pub fn index_is_damaged(e: &Error) -> bool {
    use tantivy::TantivyError as T;
    match e {
        Error::Index(t) => matches!(
            t,
            T::OpenReadError(_)
                | T::OpenDirectoryError(_)
                | T::IoError(_)
                | T::DataCorruption(_)
                | T::IncompatibleIndex(_)
                | T::InternalError(_)
                | T::DeserializeError(_)
                | T::ErrorInThread(_)
        ),
        Error::Io(_) => true,
        _ => false,
    }
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic")
}

/// Opens the index in `dir` and a reader of it (which opens every segment, so an unreadable
/// one shows here rather than in a search). Tantivy's decoders may panic on garbled bytes: that
/// is an unreadable index too.
fn open_index(dir: &Path) -> Result<(Index, IndexReader)> {
    let open = || -> Result<(Index, IndexReader)> {
        let index = Index::open_in_dir(dir)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok((index, reader))
    };
    std::panic::catch_unwind(open).unwrap_or_else(|panic| {
        Err(Error::Index(tantivy::TantivyError::InternalError(format!(
            "opening the index panicked: {}",
            panic_text(&*panic)
        ))))
    })
}

/// SQLite's short description of why a database could not be opened.
fn sqlite_reason(e: &Error) -> String {
    match e {
        Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => f.to_string(),
        Error::Sqlite(other) => other.to_string(),
        other => other.to_string(),
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
        let (page, mode): (u32, String) = ws
            .conn()
            .query_row(
                "SELECT (SELECT page_size FROM pragma_page_size), \
                        (SELECT journal_mode FROM pragma_journal_mode)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("pragmas");
        assert_eq!((page, mode.as_str()), (PAGE_SIZE, "wal"));
        let vacuum: i64 = ws
            .conn()
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .expect("auto_vacuum");
        assert_eq!(vacuum, 2, "incremental");
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
    fn reads_proceed_while_the_connection_is_held() {
        let (_tmp, ws) = fresh();
        ws.conn()
            .execute(
                "INSERT INTO workspace_meta (key, value) VALUES ('probe', 'one')",
                [],
            )
            .expect("insert");
        // Uncontended: the store's own connection, no reader opened.
        drop(ws.read());
        assert_eq!(ws.readers_open(), 0);
        let held = ws.conn();
        // Two readers hold their connections at once while the store's is held.
        let go = std::sync::Barrier::new(2);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let (ws, tx, go) = (&ws, tx.clone(), &go);
                    s.spawn(move || {
                        let r = ws.read();
                        let v: String = r
                            .query_row(
                                "SELECT value FROM workspace_meta WHERE key = 'probe'",
                                [],
                                |r| r.get(0),
                            )
                            .expect("read");
                        // Both are inside a read at this point.
                        go.wait();
                        tx.send(v).expect("send");
                    })
                })
                .collect();
            for r in readers {
                r.join().expect("reader");
            }
            let seen: Vec<String> = rx.try_iter().collect();
            assert_eq!(seen, vec!["one".to_string(), "one".to_string()]);
        });
        assert_eq!(ws.readers_open(), READERS);
        // A write committed on the store's connection is what readers see next.
        held.execute(
            "UPDATE workspace_meta SET value = 'two' WHERE key = 'probe'",
            [],
        )
        .expect("update");
        let r = ws.read();
        let v: String = r
            .query_row(
                "SELECT value FROM workspace_meta WHERE key = 'probe'",
                [],
                |r| r.get(0),
            )
            .expect("read");
        assert_eq!(v, "two");
        // Readers never write.
        assert!(r.execute("DELETE FROM workspace_meta", []).is_err());
        drop(r);
        drop(held);
        assert_eq!(ws.readers_open(), READERS, "readers are kept, not reopened");
    }

    #[test]
    fn an_idle_close_merges_segments_removes_the_lock_and_truncates_the_wal() {
        let (_tmp, ws) = fresh();
        for i in 0..5u64 {
            ws.index_chunk(i, "d", "Title", "", &format!("text number {i}"))
                .expect("index");
            ws.commit_index().expect("commit");
            ws.conn()
                .execute(
                    "INSERT INTO workspace_meta (key, value) VALUES (?1, 'x')",
                    [format!("k{i}")],
                )
                .expect("write");
        }
        assert!(ws.reader().searcher().segment_readers().len() > 1);
        let wal = ws.dir().join(format!("{DB_FILE}-wal"));
        assert!(std::fs::metadata(&wal).expect("wal").len() > 0);
        assert!(ws.close_writer_if_idle(Duration::ZERO).expect("close"));
        assert_eq!(ws.reader().searcher().segment_readers().len(), 1);
        assert_eq!(ws.indexed_chunks(), 5);
        assert_eq!(std::fs::metadata(&wal).expect("wal").len(), 0);
        let lock = &tantivy::directory::INDEX_WRITER_LOCK.filepath;
        assert!(!ws.dir().join(INDEX_DIR).join(lock).exists());
        // A writer opens again (and the generation payload survived the merge).
        ws.index_chunk(9, "d", "Title", "", "again").expect("index");
        ws.flush().expect("flush");
        assert_eq!(ws.indexed_chunks(), 6);
        // Closed for good: the WAL file stays (persistent, so reopening creates nothing) and
        // is empty.
        let dir = ws.dir().to_path_buf();
        drop(ws);
        assert_eq!(
            std::fs::metadata(dir.join(format!("{DB_FILE}-wal")))
                .expect("wal")
                .len(),
            0
        );
    }

    #[test]
    fn an_extension_is_made_once_per_type_and_follows_row_changes() {
        struct Seen(Arc<Mutex<Vec<(String, i64)>>>);
        let (_tmp, ws) = fresh();
        let made = AtomicU64::new(0);
        let make = |slots: &Slots| {
            made.fetch_add(1, Ordering::Relaxed);
            let seen = Arc::new(Mutex::new(Vec::new()));
            let s = seen.clone();
            slots.observe_rows(move |table, rowid| {
                s.lock().expect("seen").push((table.to_string(), rowid));
            });
            Seen(seen)
        };
        let first = ws.extension(make);
        let again = ws.extension(make);
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(made.load(Ordering::Relaxed), 1);
        // Another type has its own slot.
        let other = ws.extension(|_| 7u32);
        assert_eq!(*other, 7);
        ws.conn()
            .execute(
                "INSERT INTO workspace_meta (key, value) VALUES ('probe', 'x')",
                [],
            )
            .expect("insert");
        let seen = first.0.lock().expect("seen").clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "workspace_meta");
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
