//! Tiered storage: workspaces closed for longer than `offload_after` are uploaded to an object
//! store (`s3://bucket/prefix`, or `file:///folder`) and their local folder becomes a cache,
//! evicted when local folders take more than `local_cache_bytes`; the registry's miss path
//! downloads them back ([`Tier`] implements `workspace::Tiering`).
//!
//! Layout at the target, per workspace:
//! - `workspaces/<id>/objects/<sha256>`: every file once, by content (a workspace's unchanged
//!   index segments and blobs are not uploaded again by its next offload);
//! - `workspaces/<id>/manifests/<generation>.json`: one manifest per generation: the files
//!   (relative path, SHA-256, size). Written LAST, after every object it names.
//!
//! The control plane (`control::tier`) records per workspace the newest generation and whether
//! it is the current copy (`offloaded`) or the local folder is (`local`). A local folder carries
//! a marker (`.tier`: the generation it is a copy of, and a fingerprint of its files when it was
//! clean). A folder is opened as is when the record says `local`, or says `offloaded` at
//! generation g and the folder's marker says g; otherwise (missing, evicted, stale) generation
//! g is downloaded into a staging folder, checked file by file against the manifest, and renamed
//! into place. Opening an offloaded workspace makes the record `local` again: the next offload
//! uploads it as generation g + 1, or, when its files are untouched since (same fingerprint),
//! records generation g as current again without uploading anything.
//!
//! Order of an offload, each step durable before the next, so a crash anywhere loses nothing:
//! 1. under a registry hold (opens wait): the workspace is closed, has no pending job; a
//!    `VACUUM INTO` snapshot of its database and hard links of its index and blob files go to a
//!    staging folder; the hold is let go;
//! 2. the objects are uploaded, then the manifest of generation g + 1;
//! 3. under the hold again: if the folder is unchanged (fingerprint), its marker says g + 1,
//!    then the control plane records g + 1 as current (fenced on the generation it started
//!    from); the folder stays as a clean cache copy.
//!
//! A crash before 3 leaves the record at `local` (the folder is current; orphan objects are
//! harmless); after it, a clean copy whose marker matches the record.

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::objstore::Target;
use super::{sha256_file, snapshot_db};
use crate::app::App;
use crate::control::tier::{TierRecord, TierState};
use crate::error::{Error, Result};
use crate::workspace::{self, BLOBS_DIR, DB_FILE, INDEX_DIR};

pub const FORMAT: &str = "enclave-tier";
pub const FORMAT_VERSION: u32 = 1;
/// The marker file in a local workspace folder.
pub const MARKER: &str = ".tier";
/// Scratch folders of offloads and hydrations, emptied when tiering starts.
pub const STAGING_DIR: &str = ".tier";
/// The environment variable naming a fault point to abort at (crash tests only).
pub const FAULT_ENV: &str = "ENCLAVE_TIER_FAULT";
/// A manifest larger than this is refused (a workspace of millions of files).
const MAX_MANIFEST_BYTES: usize = 256 << 20;
/// Depth of a file's path in a manifest (`blobs/ab/<sha>` is 3).
const MAX_PATH_DEPTH: usize = 4;

/// Aborts the process at the named point when [`FAULT_ENV`] names it: the crash tests' kill -9
/// at an exact step of an offload or a hydration. Unset, it costs one load.
fn fault(point: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(FAULT_ENV).ok().filter(|s| !s.is_empty()));
    if at.as_deref() == Some(point) {
        eprintln!("{FAULT_ENV}: aborting at {point}");
        std::process::abort();
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative to the workspace folder, `/`-separated.
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TierManifest {
    pub format: String,
    pub format_version: u32,
    pub workspace_id: Uuid,
    pub generation: u64,
    pub created_at: String,
    pub enclave_version: String,
    pub files: Vec<FileEntry>,
}

/// The marker of a local folder: which generation it is a copy of, and its fingerprint when
/// it was (an exact copy of) that generation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Marker {
    generation: u64,
    fingerprint: String,
}

fn objects_prefix(id: Uuid) -> String {
    format!("workspaces/{}/objects", id.hyphenated())
}

fn object_key(id: Uuid, sha: &str) -> String {
    format!("workspaces/{}/objects/{sha}", id.hyphenated())
}

fn manifests_prefix(id: Uuid) -> String {
    format!("workspaces/{}/manifests", id.hyphenated())
}

fn manifest_key(id: Uuid, generation: u64) -> String {
    format!(
        "workspaces/{}/manifests/{generation:012}.json",
        id.hyphenated()
    )
}

/// Sizes and modification times of the files a write changes (the database, its WAL, the
/// index's commit point): equal fingerprints mean nothing was written in between.
fn fingerprint(dir: &Path) -> Result<String> {
    let mut parts = Vec::with_capacity(3);
    for rel in [
        DB_FILE.to_string(),
        format!("{DB_FILE}-wal"),
        format!("{INDEX_DIR}/meta.json"),
    ] {
        match std::fs::metadata(dir.join(&rel)) {
            // An empty WAL holds nothing: the store keeps its WAL file (persistent WAL) and
            // truncates it when idle, so an open that only read leaves one behind.
            Ok(m) if m.len() == 0 && rel.ends_with("-wal") => parts.push("-".into()),
            Ok(m) => {
                let t = m
                    .modified()?
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                parts.push(format!("{}:{}", m.len(), t.as_nanos()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => parts.push("-".into()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(parts.join("/"))
}

fn read_marker(dir: &Path) -> Option<Marker> {
    let bytes = std::fs::read(dir.join(MARKER)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes the marker durably (a temporary file renamed over it, then the folder synced).
fn write_marker(dir: &Path, m: &Marker) -> Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{MARKER}.tmp"));
    let bytes = serde_json::to_vec(m).map_err(|e| Error::internal(e.to_string()))?;
    let mut f = crate::perms::private_file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(MARKER))?;
    sync_dir(dir);
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Checks a manifest's path: relative, plain names only, under the database, the index or the
/// blobs, at most [`MAX_PATH_DEPTH`] deep. Returns it as a path.
fn safe_path(rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    let parts: Vec<&str> = p
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str().ok_or(()),
            _ => Err(()),
        })
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::invalid(format!("tier manifest: bad path {rel:?}")))?;
    let ok = !parts.is_empty()
        && parts.len() <= MAX_PATH_DEPTH
        && parts.iter().all(|s| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
        && (rel == DB_FILE || parts[0] == INDEX_DIR || parts[0] == BLOBS_DIR)
        && parts.join("/") == rel;
    if !ok {
        return Err(Error::invalid(format!("tier manifest: bad path {rel:?}")));
    }
    Ok(p.to_path_buf())
}

/// A scratch folder under `data/.tier/`, removed when dropped (and at the next start).
struct Scratch(PathBuf);

impl Scratch {
    fn new(data_dir: &Path, kind: &str) -> Result<Scratch> {
        let dir = data_dir
            .join(STAGING_DIR)
            .join(format!("{kind}-{}", crate::ids::new_id().simple()));
        crate::perms::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Moves a folder into the trash (atomic), then removes it.
fn discard(data_dir: &Path, dir: &Path) -> Result<()> {
    let trash = data_dir.join(crate::app::TRASH_DIR);
    crate::perms::create_dir_all(&trash)?;
    let target = trash.join(format!("tier-{}", crate::ids::new_id().simple()));
    match std::fs::rename(dir, &target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    if let Err(e) = std::fs::remove_dir_all(&target) {
        tracing::warn!(error = %e, path = %target.display(), "could not remove a discarded folder");
    }
    Ok(())
}

/// The files of a workspace folder that a generation holds (relative paths): the index and the
/// blobs; the database is snapshotted separately, its WAL and shared memory are not files of a
/// closed store, and lock files are not data.
fn data_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for top in [INDEX_DIR, BLOBS_DIR] {
        let mut stack = vec![(dir.join(top), top.to_string(), 1usize)];
        while let Some((d, rel, depth)) = stack.pop() {
            let rd = match std::fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            for entry in rd {
                let entry = entry?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let path = format!("{rel}/{name}");
                let ft = entry.file_type()?;
                if ft.is_dir() {
                    if depth < MAX_PATH_DEPTH - 1 {
                        stack.push((entry.path(), path, depth + 1));
                    }
                } else if ft.is_file() && !name.ends_with(".lock") && safe_path(&path).is_ok() {
                    out.push(path);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What one offload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Offload {
    /// Uploaded as this generation.
    Uploaded {
        generation: u64,
        bytes_uploaded: u64,
    },
    /// Untouched since its copy of this generation: recorded as current again, nothing sent.
    Reused { generation: u64 },
    /// Not offloaded now, and why (open, jobs pending, changed during the upload, ...).
    Skipped(String),
}

/// What a sweep did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepReport {
    pub closed: usize,
    pub offloaded: usize,
    pub reused: usize,
    pub skipped: usize,
    pub failed: usize,
    pub evicted: usize,
    pub local_bytes: u64,
    pub purged: usize,
}

/// Tiered storage of one data directory: the object store and the policy. Installed into the
/// registry by [`install`]; holds the app weakly (the app owns the registry that holds this).
pub struct Tier {
    app: Weak<App>,
    target: Target,
    offload_after: Duration,
    cache_bytes: u64,
    /// Idle time of workspaces never opened in this process counts from here.
    started: Instant,
    /// Sizes of local folders, by fingerprint (measured again only when it changed).
    sizes: Mutex<HashMap<Uuid, (String, u64)>>,
    /// One sweep at a time.
    sweeping: Mutex<()>,
    hydrations: AtomicU64,
    hydration_failures: AtomicU64,
    hydration_ms: AtomicU64,
    offloads: AtomicU64,
    evictions: AtomicU64,
    local_bytes: AtomicU64,
}

/// Counters of tiered storage since start, for `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TierStats {
    pub hydrations: u64,
    pub hydration_failures: u64,
    /// Milliseconds spent hydrating, in all.
    pub hydration_ms: u64,
    /// Offloads recorded (uploaded, or the same generation again).
    pub offloads: u64,
    pub evictions: u64,
    /// Bytes of local workspace folders at the last sweep.
    pub local_bytes: u64,
}

static INSTALLED: Mutex<Option<HashMap<PathBuf, Weak<Tier>>>> = Mutex::new(None);

/// Starts tiered storage for a server configured with `object_store`: empties the staging
/// folder, opens the target and installs the hook on the registry's miss path. `None` without
/// an object store.
pub fn install(app: &Arc<App>, rt: tokio::runtime::Handle) -> Result<Option<Arc<Tier>>> {
    let Some(url) = app.config().object_store.clone() else {
        return Ok(None);
    };
    let _ = std::fs::remove_dir_all(app.data_dir().join(STAGING_DIR));
    let target = match url.strip_prefix("file://") {
        Some(path) => Target::open(path, rt)?,
        None => Target::open(&url, rt)?,
    };
    let tier = Arc::new(Tier {
        app: Arc::downgrade(app),
        target,
        offload_after: Duration::from_secs(app.config().offload_after_secs),
        cache_bytes: app.config().local_cache_bytes,
        started: Instant::now(),
        sizes: Mutex::new(HashMap::new()),
        sweeping: Mutex::new(()),
        hydrations: Default::default(),
        hydration_failures: Default::default(),
        hydration_ms: Default::default(),
        offloads: Default::default(),
        evictions: Default::default(),
        local_bytes: Default::default(),
    });
    app.registry().set_tiering(tier.clone());
    INSTALLED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(app.data_dir().to_path_buf(), Arc::downgrade(&tier));
    tracing::info!(object_store = %url, offload_after_secs = tier.offload_after.as_secs(),
        local_cache_bytes = tier.cache_bytes, "tiered storage on");
    Ok(Some(tier))
}

/// Tiered storage for a command that holds the data directory's lock (no server runs on it:
/// `workspace export`, `backup`, `ingest` without `--server`), with a one-thread runtime of its
/// own for the object store. Keep it alive while the app is used.
pub struct CommandTier {
    _tier: Arc<Tier>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for CommandTier {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// [`install`] for a command (see [`CommandTier`]); `None` without an object store.
pub fn for_command(app: &Arc<App>) -> Result<Option<CommandTier>> {
    if app.config().object_store.is_none() {
        return Ok(None);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    Ok(install(app, rt.handle().clone())?.map(|tier| CommandTier {
        _tier: tier,
        rt: Some(rt),
    }))
}

/// The tiering installed for this app's data directory, if any.
pub fn installed(app: &App) -> Option<Arc<Tier>> {
    INSTALLED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()?
        .get(app.data_dir())?
        .upgrade()
}

/// Starts the periodic sweep (offloads, cache eviction) of an installed tiering.
pub fn spawn_sweeper(app: Arc<App>, tier: Arc<Tier>) -> tokio::task::JoinHandle<()> {
    let every = (tier.offload_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let (app, tier) = (app.clone(), tier.clone());
            let _ = tokio::task::spawn_blocking(move || tier.sweep(&app)).await;
        }
    })
}

impl crate::workspace::Tiering for Tier {
    fn before_open(&self, id: Uuid, dir: &Path) -> Result<()> {
        let app = self.app.upgrade().ok_or(Error::ShuttingDown)?;
        let Some(rec) = app.control_plane().tier_of(id)? else {
            return Ok(());
        };
        if rec.state == TierState::Local {
            return Ok(());
        }
        if read_marker(dir).map(|m| m.generation) != Some(rec.generation) {
            // Missing, evicted or stale: the object store's generation decides. Downloads run
            // on a thread of their own (the object store is async; this may be called from
            // anywhere).
            let started = Instant::now();
            std::thread::scope(|s| {
                s.spawn(|| self.hydrate(&app, id, rec.generation, dir))
                    .join()
                    .unwrap_or_else(|_| Err(Error::internal("hydration panicked")))
            })
            // A missing or unreadable object is the server's problem, not the request's.
            .map_err(|e| match e {
                Error::Invalid(m) => Error::Corrupt(format!(
                    "workspace {id}: its offloaded copy cannot be read: {m}"
                )),
                e => e,
            })
            .inspect_err(|e| {
                self.hydration_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(workspace_id = %id, generation = rec.generation, error = %e,
                    "hydration failed");
            })?;
            self.hydrations.fetch_add(1, Ordering::Relaxed);
            self.hydration_ms.fetch_add(
                u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            tracing::info!(workspace_id = %id, generation = rec.generation,
                ms = started.elapsed().as_millis() as u64, "workspace hydrated");
        }
        // Opened: from now on the local folder is the current copy.
        app.control_plane().tier_local(id)?;
        Ok(())
    }
}

impl Tier {
    /// Hydrations done by this process.
    pub fn hydrations(&self) -> u64 {
        self.hydrations.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> TierStats {
        TierStats {
            hydrations: self.hydrations.load(Ordering::Relaxed),
            hydration_failures: self.hydration_failures.load(Ordering::Relaxed),
            hydration_ms: self.hydration_ms.load(Ordering::Relaxed),
            offloads: self.offloads.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            local_bytes: self.local_bytes.load(Ordering::Relaxed),
        }
    }

    /// The manifest of a workspace's generation, checked.
    pub fn manifest(&self, id: Uuid, generation: u64) -> Result<TierManifest> {
        let bytes = self.target.get_bytes(&manifest_key(id, generation))?;
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(Error::invalid(format!(
                "workspace {id}: tier manifest of generation {generation} is too large"
            )));
        }
        let m: TierManifest = serde_json::from_slice(&bytes).map_err(|e| {
            Error::invalid(format!(
                "workspace {id}: unreadable tier manifest {generation}: {e}"
            ))
        })?;
        if m.format != FORMAT
            || m.format_version != FORMAT_VERSION
            || m.workspace_id != id
            || m.generation != generation
        {
            return Err(Error::invalid(format!(
                "workspace {id}: tier manifest {generation} is not this workspace's generation"
            )));
        }
        let mut seen = HashSet::new();
        let mut db = 0;
        for f in &m.files {
            safe_path(&f.path)?;
            if !super::is_sha256_hex(&f.sha256) || !seen.insert(f.path.as_str()) {
                return Err(Error::invalid(format!(
                    "workspace {id}: tier manifest {generation} has a bad entry {:?}",
                    f.path
                )));
            }
            db += usize::from(f.path == DB_FILE);
        }
        if db != 1 {
            return Err(Error::invalid(format!(
                "workspace {id}: tier manifest {generation} has no database"
            )));
        }
        Ok(m)
    }

    /// Downloads generation `generation` into a staging folder, checks every file, and renames
    /// it into place at `dir` (a stale folder there is discarded first).
    fn hydrate(&self, app: &App, id: Uuid, generation: u64, dir: &Path) -> Result<()> {
        let m = self.manifest(id, generation)?;
        let scratch = Scratch::new(app.data_dir(), "hydrate")?;
        let tmp = scratch.0.join("ws");
        crate::perms::create_dir_all(&tmp.join(INDEX_DIR))?;
        crate::perms::create_dir_all(&tmp.join(BLOBS_DIR))?;
        for (i, f) in m.files.iter().enumerate() {
            let to = tmp.join(safe_path(&f.path)?);
            if let Some(parent) = to.parent() {
                crate::perms::create_dir_all(parent)?;
            }
            let (sha, n) = self.target.get_file(&object_key(id, &f.sha256), &to)?;
            if sha != f.sha256 || n != f.bytes {
                return Err(Error::internal(format!(
                    "workspace {id}: {} of generation {generation} is damaged in the object store \
                     (checksum mismatch)",
                    f.path
                )));
            }
            if i == 0 {
                fault("hydrate-download");
            }
        }
        // The snapshot is in rollback-journal mode; switching to WAL now (what opening it
        // would do) keeps the fingerprint of the clean copy what its first open leaves.
        {
            let conn = crate::db::open(&tmp.join(DB_FILE), false)?;
            drop(conn);
        }
        write_marker(
            &tmp,
            &Marker {
                generation,
                fingerprint: fingerprint(&tmp)?,
            },
        )?;
        if dir.exists() {
            tracing::warn!(workspace_id = %id, generation, "discarding a stale local copy");
            discard(app.data_dir(), dir)?;
        }
        std::fs::rename(&tmp, dir)?;
        sync_dir(app.data_dir());
        fault("hydrate-rename");
        Ok(())
    }

    /// Offloads one workspace if it is closed and has no pending work.
    pub fn offload(&self, app: &App, id: Uuid) -> Result<Offload> {
        let skipped = |why: &str| Ok(Offload::Skipped(why.to_string()));
        let dir = workspace::dir_of(app.data_dir(), id);
        let scratch;
        let (previous, fp, files, documents) = {
            let Some(_hold) = app.registry().hold_closed(id) else {
                return skipped("open");
            };
            let rec = app.control_plane().tier_of(id)?;
            if rec
                .as_ref()
                .is_some_and(|r| r.state == TierState::Offloaded)
            {
                return skipped("already offloaded");
            }
            let previous = rec.as_ref().map_or(0, |r| r.generation);
            if !dir.join(DB_FILE).exists() {
                return skipped("no local folder");
            }
            if app
                .data_dir()
                .join(crate::knowledge::scheduler::QUEUE_DIR)
                .join(id.hyphenated().to_string())
                .exists()
            {
                return skipped("jobs pending");
            }
            // Untouched since it was a copy of the current generation: nothing to send.
            let fp = fingerprint(&dir)?;
            if let (Some(m), Some(r)) = (read_marker(&dir), &rec) {
                if previous > 0 && m.generation == previous && m.fingerprint == fp {
                    return if app.control_plane().tier_offloaded(
                        id,
                        previous,
                        previous,
                        r.bytes,
                        r.documents,
                    )? {
                        Ok(Offload::Reused {
                            generation: previous,
                        })
                    } else {
                        skipped("record changed")
                    };
                }
            }
            scratch = Scratch::new(app.data_dir(), "offload")?;
            {
                let conn = crate::db::open(&dir.join(DB_FILE), false)?;
                if crate::knowledge::store::has_work(&conn)? {
                    return skipped("jobs pending");
                }
                snapshot_db(&conn, &scratch.0.join(DB_FILE))?;
            }
            let documents: i64 = rusqlite::Connection::open_with_flags(
                scratch.0.join(DB_FILE),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?
            .query_row("SELECT count(*) FROM documents", [], |r| r.get(0))?;
            // The connection is closed (its WAL removed): what the fingerprint is compared
            // with after the upload.
            let fp = fingerprint(&dir)?;
            let mut files = vec![DB_FILE.to_string()];
            for rel in data_files(&dir)? {
                let to = scratch.0.join(&rel);
                if let Some(parent) = to.parent() {
                    crate::perms::create_dir_all(parent)?;
                }
                // Index segments and blobs are immutable once written: a link is a snapshot.
                if std::fs::hard_link(dir.join(&rel), &to).is_err() {
                    std::fs::copy(dir.join(&rel), &to)?;
                }
                files.push(rel);
            }
            (previous, fp, files, u64::try_from(documents).unwrap_or(0))
        };
        fault("offload-snapshot");
        // Upload, without the hold: requests may open the workspace meanwhile (then the
        // fingerprint differs below and this generation is never recorded).
        let generation = previous + 1;
        let existing = self.target.list(&objects_prefix(id))?;
        let mut entries = Vec::with_capacity(files.len());
        let (mut uploaded, mut total) = (0u64, 0u64);
        for rel in files {
            let path = scratch.0.join(&rel);
            let (sha256, bytes) = sha256_file(&path)?;
            total += bytes;
            if !existing.contains(&sha256) {
                self.target.put_file(&object_key(id, &sha256), &path)?;
                uploaded += bytes;
                fault("offload-upload");
            }
            entries.push(FileEntry {
                path: rel,
                sha256,
                bytes,
            });
        }
        let m = TierManifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            workspace_id: id,
            generation,
            created_at: crate::db::now(),
            enclave_version: env!("CARGO_PKG_VERSION").into(),
            files: entries,
        };
        let bytes = serde_json::to_vec(&m).map_err(|e| Error::internal(e.to_string()))?;
        self.target
            .put_bytes(&manifest_key(id, generation), bytes)?;
        fault("offload-manifest");
        drop(scratch);
        {
            let Some(_hold) = app.registry().hold_closed(id) else {
                return skipped("opened during the upload");
            };
            if fingerprint(&dir)? != fp {
                return skipped("written during the upload");
            }
            write_marker(
                &dir,
                &Marker {
                    generation,
                    fingerprint: fp,
                },
            )?;
            if !app
                .control_plane()
                .tier_offloaded(id, previous, generation, total, documents)?
            {
                return skipped("record changed");
            }
            fault("offload-commit");
        }
        if let Err(e) = self.prune(id, generation) {
            tracing::warn!(workspace_id = %id, error = %e, "could not prune old tier generations");
        }
        tracing::info!(workspace_id = %id, generation, bytes = total, uploaded, "workspace offloaded");
        Ok(Offload::Uploaded {
            generation,
            bytes_uploaded: uploaded,
        })
    }

    /// Keeps generations `current` and `current - 1` of a workspace; removes older manifests
    /// and the objects neither kept generation names.
    fn prune(&self, id: Uuid, current: u64) -> Result<()> {
        let manifests = self.target.list(&manifests_prefix(id))?;
        let mut used = HashSet::new();
        for g in [current.saturating_sub(1), current] {
            if g == 0 || !manifests.contains(&format!("{g:012}.json")) {
                continue;
            }
            used.extend(self.manifest(id, g)?.files.into_iter().map(|f| f.sha256));
        }
        for name in &manifests {
            let g = name
                .strip_suffix(".json")
                .and_then(|n| n.parse::<u64>().ok());
            if g.is_some_and(|g| g + 1 < current) {
                self.target
                    .delete(&format!("{}/{name}", manifests_prefix(id)))?;
            }
        }
        for o in self.target.list(&objects_prefix(id))? {
            if !used.contains(&o) {
                self.target.delete(&object_key(id, &o))?;
            }
        }
        Ok(())
    }

    /// Removes every object of a workspace (purged for good).
    fn forget(&self, id: Uuid) -> Result<()> {
        for name in self.target.list(&manifests_prefix(id))? {
            self.target
                .delete(&format!("{}/{name}", manifests_prefix(id)))?;
        }
        for o in self.target.list(&objects_prefix(id))? {
            self.target.delete(&object_key(id, &o))?;
        }
        Ok(())
    }

    /// Size of a local folder, measured again only when its fingerprint moved.
    fn local_size(&self, id: Uuid, dir: &Path) -> u64 {
        let Ok(fp) = fingerprint(dir) else { return 0 };
        let mut sizes = self.sizes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((f, n)) = sizes.get(&id) {
            if *f == fp {
                return *n;
            }
        }
        let n = workspace::dir_size(dir).unwrap_or(0);
        sizes.insert(id, (fp, n));
        n
    }

    /// How long ago (as the injected clock sees it) workspace `id` was last let go.
    fn idle_for(&self, app: &App, id: Uuid, skew: Duration) -> Duration {
        let since = app.registry().last_released(id).unwrap_or(self.started);
        since.elapsed() + skew
    }

    /// One pass: closes stores idle for `offload_after`, offloads the local workspaces closed
    /// that long, evicts the coldest clean copies beyond `local_cache_bytes`, and removes the
    /// objects of purged workspaces.
    pub fn sweep(&self, app: &App) -> SweepReport {
        let _one = self.sweeping.lock().unwrap_or_else(|p| p.into_inner());
        let mut r = SweepReport::default();
        let skew = (app.identity().clock().now() - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        r.closed = app.registry().close_idle_stores(self.offload_after, skew);
        match app.control_plane().tier_local_workspaces() {
            Ok(ids) => {
                for id in ids {
                    if self.idle_for(app, id, skew) < self.offload_after {
                        continue;
                    }
                    match self.offload(app, id) {
                        Ok(Offload::Uploaded { .. }) => r.offloaded += 1,
                        Ok(Offload::Reused { .. }) => r.reused += 1,
                        Ok(Offload::Skipped(why)) => {
                            tracing::debug!(workspace_id = %id, why, "not offloaded");
                            r.skipped += 1
                        }
                        Err(e) => {
                            tracing::warn!(workspace_id = %id, error = %e, "offload failed");
                            r.failed += 1
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "tiering: cannot list local workspaces"),
        }
        match self.evict(app, skew) {
            Ok((evicted, bytes)) => {
                r.evicted = evicted;
                r.local_bytes = bytes;
                self.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
                self.local_bytes.store(bytes, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "tiering: cache eviction failed"),
        }
        if let Ok(ids) = app.control_plane().tier_purged_workspaces() {
            for id in ids {
                match self
                    .forget(id)
                    .and_then(|_| app.control_plane().tier_forget(id))
                {
                    Ok(()) => r.purged += 1,
                    Err(e) => {
                        tracing::warn!(workspace_id = %id, error = %e, "could not remove a purged workspace's objects")
                    }
                }
            }
        }
        self.offloads
            .fetch_add((r.offloaded + r.reused) as u64, Ordering::Relaxed);
        r
    }

    /// Removes the coldest clean local copies of offloaded workspaces while local folders take
    /// more than `local_cache_bytes`. Returns how many it removed and the local bytes after.
    fn evict(&self, app: &App, skew: Duration) -> Result<(usize, u64)> {
        let data_dir = app.data_dir();
        let mut total = 0u64;
        for id in app.control_plane().tier_local_workspaces()? {
            let dir = workspace::dir_of(data_dir, id);
            total += self.local_size(id, &dir);
        }
        let mut clean: Vec<(Duration, Uuid, TierRecord, u64)> = Vec::new();
        for (id, rec) in app.control_plane().tier_offloaded_workspaces()? {
            let dir = workspace::dir_of(data_dir, id);
            if !dir.exists() {
                continue;
            }
            let n = self.local_size(id, &dir);
            total += n;
            clean.push((self.idle_for(app, id, skew), id, rec, n));
        }
        // Coldest (idle longest) first.
        clean.sort_by_key(|c| std::cmp::Reverse(c.0));
        let mut evicted = 0;
        for (_, id, rec, n) in clean {
            if total <= self.cache_bytes {
                break;
            }
            let Some(_hold) = app.registry().hold_closed(id) else {
                continue;
            };
            let dir = workspace::dir_of(data_dir, id);
            // Clean: still the recorded generation, and untouched since it was (a process
            // without tiering, such as a management command, may have written it).
            let still = app.control_plane().tier_of(id)?;
            let clean = read_marker(&dir).is_some_and(|m| {
                m.generation == rec.generation
                    && fingerprint(&dir).is_ok_and(|fp| fp == m.fingerprint)
            });
            if still.as_ref() != Some(&rec) || !clean {
                continue;
            }
            discard(data_dir, &dir)?;
            self.sizes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            total = total.saturating_sub(n);
            evicted += 1;
            tracing::info!(workspace_id = %id, bytes = n, "clean local copy evicted");
        }
        Ok((evicted, total))
    }
}

/// Runs one sweep now on the tiering installed for `app` (tests, and the operator's tools).
pub fn sweep_now(app: &App) -> Option<SweepReport> {
    let tier = installed(app)?;
    Some(tier.sweep(app))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths_stay_inside_the_folder() {
        for ok in [
            "workspace.db",
            "index/meta.json",
            "index/.managed.json",
            "blobs/ab/abcdef",
        ] {
            assert!(safe_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "index/../../x",
            "blobs/./x",
            "other/file",
            "workspace.db-wal",
            "index//x",
            "blobs/a/b/c/d",
            "index/a b",
            "index\\x",
        ] {
            assert!(safe_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_fingerprint_moves_with_a_write_and_not_with_a_read() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("ws");
        crate::workspace::create(&dir).expect("create");
        let before = fingerprint(&dir).expect("fp");
        {
            let conn = crate::db::open(&dir.join(DB_FILE), false).expect("open");
            let _: i64 = conn
                .query_row("SELECT count(*) FROM documents", [], |r| r.get(0))
                .expect("read");
        }
        assert_eq!(
            fingerprint(&dir).expect("fp"),
            before,
            "a read changes nothing: {before}"
        );
        std::thread::sleep(Duration::from_millis(20));
        {
            let conn = crate::db::open(&dir.join(DB_FILE), false).expect("open");
            conn.execute(
                "INSERT INTO documents (id, title, mime_type, content_hash, byte_size, status, created_at, updated_at)
                 VALUES ('d', 'T', 'text/plain', 'h', 1, 'indexed', 'now', 'now')",
                [],
            )
            .expect("write");
        }
        assert_ne!(fingerprint(&dir).expect("fp"), before, "a write moves it");
    }
}
