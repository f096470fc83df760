//! Backups of a data directory to a folder or S3-compatible storage ([`Target`]), incremental
//! and content-addressed, and their verification and restore.
//!
//! Layout at the target:
//! - `objects/<sha256>`: every file once, named by the SHA-256 of its bytes: snapshots of
//!   `control.db` and of each `workspace.db` (`VACUUM INTO`: a consistent copy while the server
//!   writes), and the blobs (original files, already content-addressed; shared between
//!   workspaces and backups).
//! - `backups/<id>.json`: one manifest per backup (id = UTC time, sortable): versions, the
//!   control plane's snapshot, and per workspace its record, its database snapshot and its
//!   blobs. Written last: a backup interrupted before it leaves only unreferenced objects.
//!
//! Incremental: objects already at the target are not uploaded again (one listing per run);
//! a workspace whose database files (and WAL) are unchanged since the previous backup (same
//! sizes and modification times, last modified over [`SETTLED`] before) is not even
//! snapshotted: its entry is carried over.
//!
//! The full-text index is not backed up: it is derived from SQLite, and a restored workspace
//! rebuilds it on first open (in the background; full-text search answers 503 meanwhile). A
//! copied index would have to be a committed Tantivy snapshot taken under the writer lock and
//! consistent with the SQLite snapshot; rebuilding keeps backups small and never restores an
//! index that disagrees with its database.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::OpenFlags;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::objstore::Target;
use super::{is_sha256_hex, sha256_file, snapshot_db, Staging};
use crate::app::App;
use crate::control::{NewWorkspace, WorkspaceRecord};
use crate::error::{Error, Result};
use crate::governance::quota::Counted;
use crate::workspace::{self, BLOBS_DIR, DB_FILE, INDEX_DIR};

pub const FORMAT: &str = "enclave-backup";
pub const FORMAT_VERSION: u32 = 1;

/// A workspace whose files were last modified less than this long ago is snapshotted even if
/// they look unchanged (file times are coarse: a write in the same tick would not show).
pub const SETTLED: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectRef {
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkspaceEntry {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub slug: String,
    pub settings: Value,
    pub db: ObjectRef,
    /// Sizes and modification times of the database and its WAL when snapshotted.
    pub fingerprint: Option<String>,
    pub blobs: Vec<String>,
    pub blob_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format: String,
    pub format_version: u32,
    pub id: String,
    pub created_at: String,
    pub enclave_version: String,
    pub control_schema_version: i64,
    pub workspace_schema_version: i64,
    /// `full` (every live workspace) or `workspace` (one).
    pub scope: String,
    pub control: ObjectRef,
    pub workspaces: Vec<WorkspaceEntry>,
    /// Workspaces that could not be backed up (a corrupt database), with the reason.
    #[serde(default)]
    pub failed: BTreeMap<Uuid, String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupReport {
    pub id: String,
    pub target: String,
    pub workspaces: usize,
    /// Workspaces snapshotted this time (the others were unchanged and carried over).
    pub workspaces_snapshotted: usize,
    pub objects_uploaded: usize,
    pub bytes_uploaded: u64,
    /// Bytes the backup refers to in all (what a full copy would be).
    pub bytes_total: u64,
    pub seconds: f64,
    pub failed: BTreeMap<Uuid, String>,
}

fn manifest_key(id: &str) -> String {
    format!("backups/{id}.json")
}

fn object_key(sha: &str) -> String {
    format!("objects/{sha}")
}

/// The backups at a target, oldest first.
pub fn list(target: &Target) -> Result<Vec<String>> {
    let mut ids: Vec<String> = target
        .list("backups")?
        .into_iter()
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .collect();
    ids.sort();
    Ok(ids)
}

/// A backup's manifest: `id`, or the newest.
pub fn manifest(target: &Target, id: Option<&str>) -> Result<BackupManifest> {
    let id = match id {
        Some(id) => {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(Error::invalid(format!("{id:?} is not a backup id")));
            }
            id.to_string()
        }
        None => list(target)?
            .pop()
            .ok_or_else(|| Error::invalid(format!("{} holds no backup", target.url)))?,
    };
    let bytes = target.get_bytes(&manifest_key(&id))?;
    let m: BackupManifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(format!("backup {id}: unreadable manifest: {e}")))?;
    if m.format != FORMAT || m.format_version != FORMAT_VERSION {
        return Err(Error::invalid(format!(
            "backup {id}: format {} version {} is not one this server reads",
            m.format, m.format_version
        )));
    }
    Ok(m)
}

fn fingerprint(dir: &Path) -> Option<String> {
    let now = SystemTime::now();
    let mut parts = Vec::new();
    for name in [DB_FILE.to_string(), format!("{DB_FILE}-wal")] {
        match std::fs::metadata(dir.join(&name)) {
            Ok(m) => {
                let modified = m.modified().ok()?;
                if now.duration_since(modified).unwrap_or_default() < SETTLED {
                    return None;
                }
                let t = modified.duration_since(SystemTime::UNIX_EPOCH).ok()?;
                parts.push(format!("{}:{}", m.len(), t.as_nanos()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => parts.push("-".into()),
            Err(_) => return None,
        }
    }
    Some(parts.join("/"))
}

fn backup_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ"),
        &crate::ids::new_id().simple().to_string()[24..]
    )
}

/// The live workspaces of a control-plane snapshot.
/// A live workspace's record as the backup keeps it: id, org id, name, slug, settings.
type LiveWorkspace = (Uuid, Uuid, String, String, Value);

fn live_workspaces(control: &Path) -> Result<Vec<LiveWorkspace>> {
    let conn = rusqlite::Connection::open_with_flags(control, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare(
        "SELECT w.id, w.org_id, w.name, w.slug, w.settings FROM workspaces w JOIN orgs o ON o.id = w.org_id
         WHERE w.status <> 'deleted' AND o.status <> 'deleted' ORDER BY w.id",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(id, org, name, slug, settings)| {
            let id = Uuid::parse_str(&id).map_err(|e| Error::internal(e.to_string()))?;
            let org = Uuid::parse_str(&org).map_err(|e| Error::internal(e.to_string()))?;
            let settings = crate::db::json_column(&settings)?;
            Ok((id, org, name, slug, settings))
        })
        .collect()
}

fn schema_of(migrations: &[crate::db::Migration]) -> i64 {
    migrations.last().map_or(0, |m| m.version)
}

/// Backs up the data directory (or one workspace) of a running app to `target`.
pub fn backup(app: &App, target: &Target, only: Option<Uuid>) -> Result<BackupReport> {
    let started = Instant::now();
    let staging = Staging::new(app.data_dir(), "backup")?;
    let mut existing = target.list("objects")?;
    let previous: HashMap<Uuid, WorkspaceEntry> = match list(target)?.last() {
        Some(id) => manifest(target, Some(id))?
            .workspaces
            .into_iter()
            .map(|w| (w.id, w))
            .collect(),
        None => HashMap::new(),
    };
    let mut report = BackupReport {
        id: backup_id(),
        target: target.url.clone(),
        ..Default::default()
    };
    let upload = |path: &Path,
                  existing: &mut HashSet<String>,
                  report: &mut BackupReport|
     -> Result<ObjectRef> {
        let (sha256, bytes) = sha256_file(path)?;
        report.bytes_total += bytes;
        if !existing.contains(&sha256) {
            target.put_file(&object_key(&sha256), path)?;
            existing.insert(sha256.clone());
            report.objects_uploaded += 1;
            report.bytes_uploaded += bytes;
        }
        Ok(ObjectRef { sha256, bytes })
    };
    // The control plane.
    let control_snap = staging.path().join("control.db");
    {
        let conn = crate::db::open(&app.data_dir().join(crate::control::CONTROL_DB), false)?;
        snapshot_db(&conn, &control_snap)?;
    }
    let control = upload(&control_snap, &mut existing, &mut report)?;
    let mut live = live_workspaces(&control_snap)?;
    std::fs::remove_file(&control_snap)?;
    if let Some(id) = only {
        live.retain(|w| w.0 == id);
        if live.is_empty() {
            return Err(Error::NotFound(crate::error::Resource::Workspace));
        }
    }
    let mut entries = Vec::with_capacity(live.len());
    for (id, org_id, name, slug, settings) in live {
        let dir = workspace::dir_of(app.data_dir(), id);
        let fp = fingerprint(&dir);
        if let (Some(fp), Some(prev)) = (&fp, previous.get(&id)) {
            if prev.fingerprint.as_deref() == Some(fp.as_str())
                && existing.contains(&prev.db.sha256)
                && prev.blobs.iter().all(|b| existing.contains(b))
            {
                report.bytes_total += prev.db.bytes + prev.blob_bytes;
                entries.push(WorkspaceEntry {
                    name,
                    slug,
                    settings,
                    org_id,
                    ..prev.clone()
                });
                continue;
            }
        }
        match snapshot_workspace(app, id, staging.path()) {
            Ok((db_path, blobs_dir, blobs)) => {
                let db = upload(&db_path, &mut existing, &mut report)?;
                let mut blob_bytes = 0;
                for b in &blobs {
                    let r = upload(&blobs_dir.join(b), &mut existing, &mut report)?;
                    if r.sha256 != *b {
                        tracing::warn!(workspace_id = %id, blob = %b, "a blob's bytes do not match its name");
                    }
                    blob_bytes += r.bytes;
                }
                let _ = std::fs::remove_dir_all(staging.path().join(id.to_string()));
                report.workspaces_snapshotted += 1;
                entries.push(WorkspaceEntry {
                    id,
                    org_id,
                    name,
                    slug,
                    settings,
                    db,
                    fingerprint: fp,
                    blobs,
                    blob_bytes,
                });
            }
            Err(e) => {
                tracing::error!(workspace_id = %id, error = %e, "workspace not backed up");
                report.failed.insert(id, e.to_string());
            }
        }
    }
    report.workspaces = entries.len();
    let m = BackupManifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        id: report.id.clone(),
        created_at: crate::db::now(),
        enclave_version: env!("CARGO_PKG_VERSION").into(),
        control_schema_version: schema_of(crate::control::MIGRATIONS),
        workspace_schema_version: schema_of(workspace::MIGRATIONS),
        scope: if only.is_some() { "workspace" } else { "full" }.into(),
        control,
        workspaces: entries,
        failed: report.failed.clone(),
    };
    let bytes = serde_json::to_vec(&m).map_err(|e| Error::internal(e.to_string()))?;
    target.put_bytes(&manifest_key(&m.id), bytes)?;
    report.seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        backup = %report.id, workspaces = report.workspaces,
        snapshotted = report.workspaces_snapshotted, uploaded_bytes = report.bytes_uploaded,
        "backup written"
    );
    Ok(report)
}

/// Snapshot of one workspace's database, and links to its blobs, under `staging/<id>/`.
fn snapshot_workspace(
    app: &App,
    id: Uuid,
    staging: &Path,
) -> Result<(PathBuf, PathBuf, Vec<String>)> {
    let (_, handle) = app.tenancy().open_workspace(id)?;
    let out = staging.join(id.to_string());
    let blobs_out = out.join("blobs");
    crate::perms::create_dir_all(&blobs_out)?;
    let db_path = out.join(DB_FILE);
    let conn = handle.conn();
    snapshot_db(&conn, &db_path)?;
    let snap = rusqlite::Connection::open_with_flags(&db_path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt =
        snap.prepare("SELECT DISTINCT content_hash FROM documents ORDER BY content_hash")?;
    let hashes = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut blobs = Vec::with_capacity(hashes.len());
    for h in hashes {
        if !is_sha256_hex(&h) {
            continue;
        }
        let src = handle.dir().join(BLOBS_DIR).join(&h[..2]).join(&h);
        let dst = blobs_out.join(&h);
        match std::fs::hard_link(&src, &dst) {
            Ok(()) => blobs.push(h),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(workspace_id = %id, blob = %h, "a document's original is missing")
            }
            Err(_) => {
                std::fs::copy(&src, &dst)?;
                blobs.push(h);
            }
        }
    }
    Ok((db_path, blobs_out, blobs))
}

/// Keeps the newest `keep` backups; removes older manifests and the objects no kept backup
/// refers to. Returns how many backups were removed.
pub fn prune(target: &Target, keep: usize) -> Result<usize> {
    let ids = list(target)?;
    if ids.len() <= keep.max(1) {
        return Ok(0);
    }
    let (old, kept) = ids.split_at(ids.len() - keep.max(1));
    let mut used = HashSet::new();
    for id in kept {
        let m = manifest(target, Some(id))?;
        used.insert(m.control.sha256.clone());
        for w in &m.workspaces {
            used.insert(w.db.sha256.clone());
            used.extend(w.blobs.iter().cloned());
        }
    }
    for id in old {
        target.delete(&manifest_key(id))?;
    }
    for o in target.list("objects")? {
        if !used.contains(&o) {
            target.delete(&object_key(&o))?;
        }
    }
    Ok(old.len())
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub backup: String,
    pub objects_checked: usize,
    pub bytes_checked: u64,
    pub databases_opened: usize,
    pub problems: Vec<String>,
}

/// Downloads every object a backup refers to, checks its SHA-256, and opens every database
/// (SQLite's `integrity_check`).
pub fn verify(target: &Target, id: Option<&str>, scratch: &Path) -> Result<VerifyReport> {
    let m = manifest(target, id)?;
    let staging = Staging::new(scratch, "verify")?;
    let mut r = VerifyReport {
        backup: m.id.clone(),
        ..Default::default()
    };
    let check = |o: &ObjectRef, db: bool, what: &str, r: &mut VerifyReport| {
        let path = staging.path().join(&o.sha256);
        match target.get_file(&object_key(&o.sha256), &path) {
            Ok((sha, n)) => {
                r.objects_checked += 1;
                r.bytes_checked += n;
                // Blob sizes are not in the manifest (u64::MAX): their name is their checksum.
                if sha != o.sha256 || (o.bytes != u64::MAX && n != o.bytes) {
                    r.problems.push(format!("{what}: checksum mismatch"));
                } else if db {
                    r.databases_opened += 1;
                    if let Err(e) = integrity(&path) {
                        r.problems.push(format!("{what}: {e}"));
                    }
                }
            }
            Err(e) => r.problems.push(format!("{what}: {e}")),
        }
        let _ = std::fs::remove_file(&path);
    };
    check(&m.control, true, "control.db", &mut r);
    for w in &m.workspaces {
        check(&w.db, true, &format!("workspace {} database", w.id), &mut r);
        for b in &w.blobs {
            check(
                &ObjectRef {
                    sha256: b.clone(),
                    bytes: u64::MAX,
                },
                false,
                &format!("workspace {} blob {b}", w.id),
                &mut r,
            );
        }
    }
    Ok(r)
}

fn integrity(path: &Path) -> Result<()> {
    crate::db::register_sqlite_vec();
    let conn = rusqlite::Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let res: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if res != "ok" {
        return Err(Error::invalid(format!("integrity check: {res}")));
    }
    Ok(())
}

/// Downloads one workspace's files into `dir` (which must not exist): its database (checked
/// and opened) and its blobs; an empty index folder (rebuilt from SQLite on open).
fn fetch_workspace(target: &Target, w: &WorkspaceEntry, dir: &Path) -> Result<()> {
    crate::perms::create_dir_all(&dir.join(BLOBS_DIR))?;
    crate::perms::create_dir_all(&dir.join(INDEX_DIR))?;
    let db = dir.join(DB_FILE);
    let (sha, _) = target.get_file(&object_key(&w.db.sha256), &db)?;
    if sha != w.db.sha256 {
        return Err(Error::invalid(format!(
            "workspace {}: its database in the backup is damaged (checksum mismatch)",
            w.id
        )));
    }
    integrity(&db)?;
    for b in &w.blobs {
        if !is_sha256_hex(b) {
            return Err(Error::invalid(format!("workspace {}: bad blob name", w.id)));
        }
        let d = dir.join(BLOBS_DIR).join(&b[..2]);
        crate::perms::create_dir_all(&d)?;
        let (sha, _) = target.get_file(&object_key(b), &d.join(b))?;
        if sha != *b {
            return Err(Error::invalid(format!(
                "workspace {}: blob {b} in the backup is damaged",
                w.id
            )));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub workspaces: usize,
    pub bytes: u64,
    pub seconds: f64,
}

/// Restores a full backup into an empty data directory (no `control.db` yet). Indexes are
/// rebuilt when each workspace is first opened.
pub fn restore_data_dir(
    target: &Target,
    id: Option<&str>,
    data_dir: &Path,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let m = manifest(target, id)?;
    if m.scope != "full" {
        return Err(Error::invalid(format!(
            "backup {} holds one workspace: restore it into a server with --workspace",
            m.id
        )));
    }
    if data_dir.join(crate::control::CONTROL_DB).exists() {
        return Err(Error::Conflict(format!(
            "{} already holds a data directory: restore into an empty one, or restore single \
             workspaces with --workspace",
            data_dir.display()
        )));
    }
    crate::perms::create_dir_all(data_dir)?;
    let staging = Staging::new(data_dir, "restore")?;
    let mut bytes = 0;
    let scheduler = crate::knowledge::scheduler::Scheduler::new(data_dir);
    for w in &m.workspaces {
        let tmp = staging.path().join(w.id.to_string());
        fetch_workspace(target, w, &tmp)?;
        bytes += w.db.bytes + w.blob_bytes;
        if has_work(&tmp.join(DB_FILE))? {
            scheduler.mark(w.id)?;
        }
        std::fs::rename(&tmp, workspace::dir_of(data_dir, w.id))?;
    }
    // The control plane last: until it is there, the folder is no data directory.
    let tmp = staging.path().join(crate::control::CONTROL_DB);
    let (sha, n) = target.get_file(&object_key(&m.control.sha256), &tmp)?;
    if sha != m.control.sha256 {
        return Err(Error::invalid(
            "control.db in the backup is damaged (checksum mismatch)",
        ));
    }
    integrity(&tmp)?;
    // Workspaces that failed at backup time have records but no folder: mark them deleted and
    // purged. Soft-deleted workspaces (in their grace period) are not in a backup either: they
    // are marked purged, so that nothing tries to restore them without their folder.
    {
        let conn = rusqlite::Connection::open(&tmp)?;
        let now = crate::db::now();
        for id in m.failed.keys() {
            conn.execute(
                "UPDATE workspaces SET status = 'deleted', deleted_at = ?2, purge_after = ?2,
                        purged_at = ?2
                 WHERE id = ?1",
                rusqlite::params![id.hyphenated().to_string(), now],
            )?;
        }
        conn.execute(
            "UPDATE workspaces SET purged_at = ?1 WHERE status = 'deleted' AND purged_at IS NULL",
            [&now],
        )?;
    }
    bytes += n;
    std::fs::rename(&tmp, data_dir.join(crate::control::CONTROL_DB))?;
    Ok(RestoreReport {
        backup: m.id,
        workspaces: m.workspaces.len(),
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Where a single restored workspace goes when its id is not a live workspace here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreAs {
    /// The org (id or slug); default: the one in the backup.
    pub org: Option<String>,
    pub slug: Option<String>,
}

/// Restores one workspace of a backup into a running app (operator only: the route takes the
/// `Operator` extractor, the command line is the operator): over the live workspace of the
/// same id (its store replaced at once; requests in flight finish on the old files), or else
/// as a new workspace (new id) of its org (or `as_.org`), reserved under the org's plan like
/// any new workspace. A workspace that is deleted but still in its grace period is refused
/// (`409`): restore it first (`POST /v1/workspaces/{ws}/restore`), then restore the backup over
/// it, or restore the backup as a new workspace under another slug (`as_.slug`) after its purge.
pub fn restore_workspace(
    app: &App,
    target: &Target,
    id: Option<&str>,
    ws: Uuid,
    as_: RestoreAs,
) -> Result<WorkspaceRecord> {
    let m = manifest(target, id)?;
    let w =
        m.workspaces.iter().find(|w| w.id == ws).ok_or_else(|| {
            Error::invalid(format!("backup {} does not hold workspace {ws}", m.id))
        })?;
    if let Some(until) = app.tenancy().deleted_workspace_until(ws)? {
        return Err(Error::Conflict(format!(
            "workspace {ws} is deleted and restorable until {until}: restore it first \
             (POST /v1/workspaces/{ws}/restore), then restore the backup over it"
        )));
    }
    let staging = Staging::new(app.data_dir(), "restore")?;
    let tmp = staging.path().join("ws");
    fetch_workspace(target, w, &tmp)?;
    // Live or not by its record only: a damaged store is what a restore is for.
    let rec = match app.identity().operator_workspace(ws) {
        Ok(_) => app
            .tenancy()
            .replace_workspace_store(ws, &tmp, &staging.path().join("old"))?,
        Err(Error::NotFound(_)) => {
            let org = as_.org.clone().unwrap_or_else(|| w.org_id.to_string());
            let access = app.identity().operator_org(&org)?;
            let documents = count_documents(&tmp.join(DB_FILE))?;
            let new = NewWorkspace {
                name: w.name.clone(),
                slug: Some(as_.slug.clone().unwrap_or_else(|| w.slug.clone())),
                settings: Some(w.settings.clone()),
            };
            let asks = [
                (Counted::Documents, documents),
                (
                    Counted::StorageBytes,
                    i64::try_from(w.blob_bytes).unwrap_or(i64::MAX),
                ),
            ];
            app.tenancy()
                .create_workspace_from(&access, new, &asks, |new_id, dir| {
                    std::fs::rename(&tmp, dir)?;
                    // Open it now: the index rebuild starts, and a damaged copy is reported here.
                    drop(app.registry().get(new_id)?);
                    Ok(())
                })?
        }
        Err(e) => return Err(e),
    };
    tracing::info!(workspace_id = %rec.id, backup = %m.id, "workspace restored");
    Ok(rec)
}

/// Documents in a workspace database (a restored copy, before it is a store).
fn count_documents(db: &Path) -> Result<i64> {
    let conn = rusqlite::Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(conn.query_row("SELECT count(*) FROM documents", [], |r| r.get(0))?)
}

/// The state of scheduled backups, for `/metrics` (one per data directory in this process).
#[derive(Debug, Clone, Default)]
pub struct ScheduleStatus {
    pub runs: u64,
    pub failures: u64,
    pub last_success_unix: u64,
    pub last_seconds: f64,
    pub last_bytes_uploaded: u64,
    pub last_workspaces: u64,
}

static STATUS: std::sync::Mutex<Option<HashMap<PathBuf, ScheduleStatus>>> =
    std::sync::Mutex::new(None);

pub fn schedule_status(data_dir: &Path) -> Option<ScheduleStatus> {
    let g = STATUS.lock().unwrap_or_else(|p| p.into_inner());
    g.as_ref()?.get(data_dir).cloned()
}

fn record(data_dir: &Path, f: impl FnOnce(&mut ScheduleStatus)) {
    let mut g = STATUS.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(HashMap::new)
        .entry(data_dir.to_path_buf())
        .or_default());
}

/// One scheduled run: a full backup, then the older backups beyond `keep` pruned.
pub fn scheduled_run(app: &App, to: &str, keep: usize, rt: tokio::runtime::Handle) {
    let data_dir = app.data_dir().to_path_buf();
    let result = Target::open(to, rt).and_then(|t| {
        let r = backup(app, &t, None)?;
        prune(&t, keep)?;
        Ok(r)
    });
    match result {
        Ok(r) => record(&data_dir, |s| {
            s.runs += 1;
            s.last_success_unix = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            s.last_seconds = r.seconds;
            s.last_bytes_uploaded = r.bytes_uploaded;
            s.last_workspaces = r.workspaces as u64;
            if !r.failed.is_empty() {
                s.failures += 1;
            }
        }),
        Err(e) => {
            tracing::error!(error = %e, target = %to, "scheduled backup failed");
            record(&data_dir, |s| {
                s.runs += 1;
                s.failures += 1;
            });
        }
    }
}

/// Starts the scheduled backups of a server configured with `backup_to`.
pub fn spawn_schedule(app: std::sync::Arc<App>) -> Option<tokio::task::JoinHandle<()>> {
    let to = app.config().backup_to.clone()?;
    let every = Duration::from_secs(app.config().backup_interval_secs.max(1));
    let keep = app.config().backup_keep.max(1);
    record(app.data_dir(), |_| {});
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let (app, to) = (app.clone(), to.clone());
            let rt = tokio::runtime::Handle::current();
            let _ = tokio::task::spawn_blocking(move || scheduled_run(&app, &to, keep, rt)).await;
        }
    }))
}

fn has_work(db: &Path) -> Result<bool> {
    let conn = rusqlite::Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    crate::knowledge::store::has_work(&conn)
}
