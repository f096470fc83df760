//! The workspace archive: one uncompressed POSIX tar stream that moves a workspace between
//! servers (`GET /v1/workspaces/{ws}/export`, `POST /v1/orgs/{org}/workspaces/import`,
//! `enclave workspace export|import`).
//!
//! Entries, in this order:
//! - `manifest.json`: format name and version, the workspace schema version, the source
//!   workspace (name, slug, settings), and for every other entry but blobs its SHA-256 and size;
//!   for blobs their count, bytes and a digest of their sorted names.
//! - `tables/<table>.jsonl`: one JSON object per row (column → value; integers and reals as
//!   numbers, text as strings, a blob as `{"$base64": "..."}`), rows in storage order, for
//!   `documents` (metadata, external ids, statuses), `chunks`, `agents`, `chat_sessions`,
//!   `chat_messages`, `audit_log` and `jobs`.
//! - `vector_spaces.jsonl`: each vector space (id, table, embedder configuration without
//!   secrets, dimension, state).
//! - `vectors/<space id>.f32`: the space's vectors, each record the chunk id (i64 LE) and
//!   `dim` float32 LE, by chunk id.
//! - `blobs/<sha256>`: the original files, named by the SHA-256 of their bytes.
//!
//! The export reads a `VACUUM INTO` snapshot of the database (and hard links of its blobs made
//! while the database was held), so it is consistent while ingestion goes on; nothing is held in
//! memory beyond one row. The full-text index is not in the archive: an import rebuilds it from
//! the rows before the workspace becomes visible. An import validates everything (every entry's
//! checksum, paths, sizes, every row against the schema and its constraints, foreign keys,
//! every vector against its space, every referenced blob) into a store that has no control-plane
//! record yet; any failure removes that store, so nothing is left behind.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{is_sha256_hex, sha256_file, snapshot_db, Staging};
use crate::app::App;
use crate::control::{NewWorkspace, WorkspaceRecord};
use crate::error::{Error, Result};
use crate::governance::quota::Counted;
use crate::identity::{Action, OrgAccess, WorkspaceAccess};
use crate::knowledge::embedders::EmbedderConfig;
use crate::knowledge::vectors;
use crate::workspace::{self, Workspace, BLOBS_DIR};

/// The format's name, in the manifest.
pub const FORMAT: &str = "enclave-workspace-archive";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST: &str = "manifest.json";

/// Largest archive an import accepts (bytes of the tar stream).
pub const MAX_ARCHIVE_BYTES: u64 = 64 << 30;
/// Most entries in an archive (blobs included).
pub const MAX_ENTRIES: u64 = 2_000_000;
/// Largest manifest.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Longest row (one line of a table file).
pub const MAX_LINE_BYTES: usize = 64 << 20;
/// Longest entry path.
const MAX_PATH_BYTES: usize = 200;

/// The tables exported row by row, in the order they are imported (parents first).
pub const TABLES: &[&str] = &[
    "documents",
    "chunks",
    "agents",
    "chat_sessions",
    "chat_messages",
    "audit_log",
    "jobs",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    /// The workspace schema version (migrations applied) of the exporting server.
    pub schema_version: i64,
    pub enclave_version: String,
    pub exported_at: String,
    pub workspace: SourceWorkspace,
    /// Every entry except `manifest.json` and the blobs, by path.
    pub entries: BTreeMap<String, EntrySum>,
    pub blobs: BlobSummary,
    pub counts: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceWorkspace {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub settings: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EntrySum {
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlobSummary {
    pub count: u64,
    pub bytes: u64,
    /// SHA-256 of the sorted blob names, each followed by `\n`.
    pub names_sha256: String,
    /// Blobs documents refer to that were missing from the source store (not in the archive).
    #[serde(default)]
    pub missing: Vec<String>,
}

fn names_digest<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let mut h = Sha256::new();
    for n in names {
        h.update(n.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

fn schema_version() -> i64 {
    workspace::MIGRATIONS.last().map_or(0, |m| m.version)
}

// ---------------------------------------------------------------------------------------------
// Export

/// A prepared export: the entries written to a staging folder, their manifest, ready to be
/// streamed as a tar by [`Export::write_tar`]. The staging folder goes with it.
pub struct Export {
    staging: Staging,
    pub manifest: Manifest,
    /// Entries in stream order (relative paths in `staging`), blobs last.
    files: Vec<String>,
    blobs: Vec<String>,
    pub file_name: String,
}

/// Prepares the archive of a workspace (`Export`): snapshot, rows, vectors, blob links.
pub fn export(app: &App, ctx: &WorkspaceAccess) -> Result<Export> {
    ctx.require(Action::Export)?;
    let (record, handle) = app.tenancy().open_workspace(ctx.workspace_id())?;
    export_store(app.data_dir(), &record, &handle)
}

/// As [`export`], from a store and its record.
pub fn export_store(data_dir: &Path, record: &WorkspaceRecord, ws: &Workspace) -> Result<Export> {
    let staging = Staging::new(data_dir, "export")?;
    let snap = staging.path().join("snapshot.db");
    let blob_dir = staging.path().join("blobs");
    crate::perms::create_dir_all(&blob_dir)?;
    let mut missing = Vec::new();
    let mut blobs = Vec::new();
    {
        // The snapshot and the blob links under the connection's lock: a document deleted after
        // the snapshot cannot have its blob collected before it is linked.
        let conn = ws.conn();
        snapshot_db(&conn, &snap)?;
        let snap_conn = crate::db::open(&snap, false)?;
        crate::knowledge::store::pending_vectors_to_payloads(&snap_conn)?;
        let mut stmt = snap_conn
            .prepare("SELECT DISTINCT content_hash FROM documents ORDER BY content_hash")?;
        let hashes = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for h in hashes {
            if !is_sha256_hex(&h) {
                return Err(Error::internal(format!(
                    "document with a malformed content hash {h:?}"
                )));
            }
            let src = ws.dir().join(BLOBS_DIR).join(&h[..2]).join(&h);
            let dst = blob_dir.join(&h);
            match std::fs::hard_link(&src, &dst) {
                Ok(()) => blobs.push(h),
                // Text sent as such has no blob; while not yet indexed its text waits in the
                // database, and the archive carries it as the blob it stands for.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    match crate::knowledge::store::pending_text(&snap_conn, &h)? {
                        Some(bytes) => {
                            let mut f = crate::perms::private_file_options()
                                .write(true)
                                .create_new(true)
                                .open(&dst)?;
                            f.write_all(&bytes)?;
                            blobs.push(h);
                        }
                        None => missing.push(h),
                    }
                }
                Err(_) => {
                    std::fs::copy(&src, &dst)?;
                    blobs.push(h);
                }
            }
        }
    }
    let conn = crate::db::open(&snap, false)?;
    let mut files = Vec::new();
    let mut entries = BTreeMap::new();
    let mut counts = BTreeMap::new();
    crate::perms::create_dir_all(&staging.path().join("tables"))?;
    for table in TABLES {
        let rel = format!("tables/{table}.jsonl");
        let n = write_table(&conn, table, &staging.path().join(&rel))?;
        counts.insert((*table).to_string(), n);
        files.push(rel);
    }
    // Vector spaces, their configuration without secrets.
    let spaces = read_spaces(&conn)?;
    {
        let rel = "vector_spaces.jsonl".to_string();
        let mut w = std::io::BufWriter::new(std::fs::File::create(staging.path().join(&rel))?);
        for s in &spaces {
            serde_json::to_writer(&mut w, s).map_err(|e| Error::internal(e.to_string()))?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        files.push(rel);
    }
    crate::perms::create_dir_all(&staging.path().join("vectors"))?;
    let mut vector_count = 0;
    for s in &spaces {
        let rel = format!("vectors/{}.f32", s.id);
        vector_count += write_vectors(&conn, s, &staging.path().join(&rel))?;
        files.push(rel);
    }
    counts.insert("vectors".into(), vector_count);
    drop(conn);
    std::fs::remove_file(&snap)?;
    for rel in &files {
        let (sha256, bytes) = sha256_file(&staging.path().join(rel))?;
        entries.insert(rel.clone(), EntrySum { sha256, bytes });
    }
    let mut blob_bytes = 0;
    for b in &blobs {
        blob_bytes += std::fs::metadata(blob_dir.join(b))?.len();
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        schema_version: schema_version(),
        enclave_version: env!("CARGO_PKG_VERSION").into(),
        exported_at: crate::db::now(),
        workspace: SourceWorkspace {
            id: record.id,
            name: record.name.clone(),
            slug: record.slug.clone(),
            settings: record.settings.clone(),
        },
        entries,
        blobs: BlobSummary {
            count: blobs.len() as u64,
            bytes: blob_bytes,
            names_sha256: names_digest(blobs.iter()),
            missing,
        },
        counts,
    };
    Ok(Export {
        staging,
        manifest,
        files,
        blobs,
        file_name: format!("workspace-{}.tar", record.slug),
    })
}

fn sql_to_json(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => {
            let mut m = Map::new();
            m.insert(
                "$base64".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
            );
            Value::Object(m)
        }
    }
}

fn write_table(conn: &Connection, table: &str, path: &Path) -> Result<u64> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY rowid"))?;
    let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
    let mut rows = stmt.query([])?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        let mut obj = Map::new();
        for (i, name) in names.iter().enumerate() {
            obj.insert(name.clone(), sql_to_json(row.get_ref(i)?));
        }
        serde_json::to_writer(&mut w, &obj).map_err(|e| Error::internal(e.to_string()))?;
        w.write_all(b"\n")?;
        n += 1;
    }
    w.flush()?;
    Ok(n)
}

/// A vector space as archived.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpaceRow {
    pub id: i64,
    pub table_name: String,
    pub embedder: EmbedderConfig,
    pub dim: i64,
    pub state: String,
    pub created_at: String,
}

fn read_spaces(conn: &Connection) -> Result<Vec<SpaceRow>> {
    let mut stmt = conn.prepare(
        "SELECT id, table_name, embedder, dim, state, created_at FROM vector_spaces ORDER BY id",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(id, table_name, embedder, dim, state, created_at)| {
            let cfg: EmbedderConfig = serde_json::from_str(&embedder)
                .map_err(|e| Error::internal(format!("corrupt embedder configuration: {e}")))?;
            Ok(SpaceRow {
                id,
                table_name,
                embedder: cfg.redacted(),
                dim,
                state,
                created_at,
            })
        })
        .collect()
}

/// The vectors of a space as floats (an int8 space's dequantised: importing them stores the
/// same bytes again), each after its chunk id.
fn write_vectors(conn: &Connection, space: &SpaceRow, path: &Path) -> Result<u64> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    let space = vectors::Space::new(
        space.id,
        space.table_name.clone(),
        space.embedder.clone(),
        space.dim as usize,
    );
    let mut n = 0;
    vectors::for_each(conn, &space, |id, v| {
        w.write_all(&id.to_le_bytes())?;
        w.write_all(&vectors::to_blob(&v))?;
        n += 1;
        Ok(())
    })?;
    w.flush()?;
    Ok(n)
}

impl Export {
    /// Writes the archive as a tar stream: the manifest, the entries, the blobs.
    pub fn write_tar<W: Write>(&self, out: W) -> Result<W> {
        let mut b = tar::Builder::new(out);
        let manifest = serde_json::to_vec_pretty(&self.manifest)
            .map_err(|e| Error::internal(e.to_string()))?;
        append(&mut b, MANIFEST, manifest.len() as u64, &manifest[..])?;
        for rel in &self.files {
            let path = self.staging.path().join(rel);
            let f = std::fs::File::open(&path)?;
            let len = f.metadata()?.len();
            append(&mut b, rel, len, f)?;
        }
        for h in &self.blobs {
            let f = std::fs::File::open(self.staging.path().join("blobs").join(h))?;
            let len = f.metadata()?.len();
            append(&mut b, &format!("blobs/{h}"), len, f)?;
        }
        Ok(b.into_inner()?)
    }
}

fn append<W: Write>(b: &mut tar::Builder<W>, path: &str, len: u64, data: impl Read) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(len);
    h.set_mode(0o600);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, data)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Import

/// What an import may change of the archived workspace.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportOptions {
    /// The new workspace's name (default: the archived one).
    pub name: Option<String>,
    /// Its slug (default: the archived one).
    pub slug: Option<String>,
}

/// A reader that refuses to read past `limit` bytes.
struct Capped<R> {
    inner: R,
    left: u64,
    what: &'static str,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // One more byte means the cap was passed.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is over its size limit", self.what),
                )),
            };
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Copies an uploaded archive into a staging file, at most [`MAX_ARCHIVE_BYTES`].
pub fn spool(data_dir: &Path, body: impl Read) -> Result<(Staging, PathBuf)> {
    let staging = Staging::new(data_dir, "import")?;
    let path = staging.path().join("archive.tar");
    let mut f = std::fs::File::create(&path)?;
    let mut capped = Capped {
        inner: body,
        left: MAX_ARCHIVE_BYTES,
        what: "the archive",
    };
    std::io::copy(&mut capped, &mut f).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidData {
            Error::PayloadTooLarge(format!("an archive is at most {MAX_ARCHIVE_BYTES} bytes"))
        } else if crate::error::io_is_storage_full(&e) {
            Error::from(e)
        } else {
            bad(format!("the upload was interrupted: {e}"))
        }
    })?;
    f.sync_all()?;
    Ok((staging, path))
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Invalid(format!("invalid archive: {}", msg.into()))
}

/// What a tar entry may be called.
enum EntryKind {
    Manifest,
    File(String),
    Blob(String),
}

fn classify(path: &Path) -> Result<EntryKind> {
    let text = path
        .to_str()
        .ok_or_else(|| bad("an entry's path is not UTF-8"))?;
    if text.len() > MAX_PATH_BYTES {
        return Err(bad("an entry's path is too long"));
    }
    for c in path.components() {
        if !matches!(c, Component::Normal(_)) {
            return Err(bad(format!(
                "entry {text:?}: paths must be relative, without `..` or `.`"
            )));
        }
    }
    if text == MANIFEST {
        return Ok(EntryKind::Manifest);
    }
    if let Some(name) = text.strip_prefix("blobs/") {
        if is_sha256_hex(name) {
            return Ok(EntryKind::Blob(name.to_string()));
        }
    }
    if let Some(name) = text
        .strip_prefix("tables/")
        .and_then(|n| n.strip_suffix(".jsonl"))
    {
        if TABLES.contains(&name) {
            return Ok(EntryKind::File(text.to_string()));
        }
    }
    if text == "vector_spaces.jsonl" {
        return Ok(EntryKind::File(text.to_string()));
    }
    if let Some(id) = text
        .strip_prefix("vectors/")
        .and_then(|n| n.strip_suffix(".f32"))
    {
        if !id.is_empty() && id.len() <= 18 && id.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(EntryKind::File(text.to_string()));
        }
    }
    Err(bad(format!("unexpected entry {text:?}")))
}

/// Walks the tar's entries, checking paths, types and counts; `f` gets each one.
fn walk(
    archive_path: &Path,
    mut f: impl FnMut(EntryKind, &mut tar::Entry<'_, std::fs::File>) -> Result<()>,
) -> Result<()> {
    let file = std::fs::File::open(archive_path)?;
    let mut archive = tar::Archive::new(file);
    let mut n = 0u64;
    let mut first = true;
    for entry in archive
        .entries()
        .map_err(|e| bad(format!("not a tar stream: {e}")))?
    {
        let mut entry = entry.map_err(|e| bad(format!("unreadable entry (truncated?): {e}")))?;
        n += 1;
        if n > MAX_ENTRIES {
            return Err(bad(format!("more than {MAX_ENTRIES} entries")));
        }
        let ty = entry.header().entry_type();
        if !matches!(ty, tar::EntryType::Regular | tar::EntryType::Continuous) {
            return Err(bad(
                "only regular files may be in an archive (no links, devices or folders)",
            ));
        }
        let path = entry
            .path()
            .map_err(|e| bad(format!("unreadable entry path: {e}")))?
            .into_owned();
        let kind = classify(&path)?;
        if first && !matches!(kind, EntryKind::Manifest) {
            return Err(bad("the first entry must be manifest.json"));
        }
        first = false;
        f(kind, &mut entry)?;
    }
    if first {
        return Err(bad("empty archive"));
    }
    Ok(())
}

/// Reads an entry fully into a digest (and optionally a file), failing on a short read.
fn digest_entry(
    entry: &mut tar::Entry<'_, std::fs::File>,
    mut sink: Option<&mut std::fs::File>,
) -> Result<(String, u64)> {
    let declared = entry.size();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut n = 0u64;
    loop {
        let k = entry
            .read(&mut buf)
            .map_err(|e| bad(format!("unreadable entry (truncated?): {e}")))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        if let Some(s) = sink.as_deref_mut() {
            s.write_all(&buf[..k])?;
        }
        n += k as u64;
    }
    if n != declared {
        return Err(bad("an entry ends early: the archive is truncated"));
    }
    Ok((hex::encode(h.finalize()), n))
}

/// The first pass: the manifest, then every entry checked against it (checksums, sizes, no
/// missing and no extra entry); the non-blob entries are extracted to `out`.
fn verify(archive_path: &Path, out: &Path) -> Result<(Manifest, BTreeSet<String>)> {
    let mut manifest: Option<Manifest> = None;
    let mut seen: HashSet<String> = HashSet::new();
    let mut blobs = BTreeSet::new();
    let mut blob_bytes = 0u64;
    walk(archive_path, |kind, entry| {
        match kind {
            EntryKind::Manifest => {
                if manifest.is_some() {
                    return Err(bad("two manifests"));
                }
                if entry.size() > MAX_MANIFEST_BYTES {
                    return Err(bad("the manifest is too large"));
                }
                let mut text = Vec::new();
                entry
                    .take(MAX_MANIFEST_BYTES + 1)
                    .read_to_end(&mut text)
                    .map_err(|e| bad(format!("unreadable manifest: {e}")))?;
                let m: Manifest = serde_json::from_slice(&text)
                    .map_err(|e| bad(format!("manifest.json: {e}")))?;
                if m.format != FORMAT {
                    return Err(bad(format!(
                        "not an Enclave workspace archive (format {:?})",
                        m.format
                    )));
                }
                if m.format_version != FORMAT_VERSION {
                    return Err(bad(format!(
                        "archive format version {} (this server reads {FORMAT_VERSION})",
                        m.format_version
                    )));
                }
                if m.schema_version > schema_version() || m.schema_version < 1 {
                    return Err(bad(format!(
                        "made with workspace schema {} (this server has {}): upgrade this server first",
                        m.schema_version,
                        schema_version()
                    )));
                }
                for path in m.entries.keys() {
                    match classify(Path::new(path))? {
                        EntryKind::File(_) => {}
                        _ => return Err(bad(format!("manifest lists {path:?} as an entry"))),
                    }
                }
                manifest = Some(m);
            }
            EntryKind::File(rel) => {
                let m = manifest.as_ref().ok_or_else(|| bad("no manifest"))?;
                let want = m
                    .entries
                    .get(&rel)
                    .ok_or_else(|| bad(format!("{rel} is not in the manifest")))?;
                if !seen.insert(rel.clone()) {
                    return Err(bad(format!("{rel} appears twice")));
                }
                if entry.size() != want.bytes {
                    return Err(bad(format!("{rel}: size differs from the manifest")));
                }
                let dst = out.join(&rel);
                if let Some(dir) = dst.parent() {
                    crate::perms::create_dir_all(dir)?;
                }
                let mut f = std::fs::File::create(&dst)?;
                let (sha, _) = digest_entry(entry, Some(&mut f))?;
                if sha != want.sha256 {
                    return Err(bad(format!(
                        "{rel}: checksum mismatch (the archive was altered or damaged)"
                    )));
                }
            }
            EntryKind::Blob(name) => {
                let (sha, n) = digest_entry(entry, None)?;
                if sha != name {
                    return Err(bad(format!("blob {name}: its bytes do not match its name")));
                }
                if !blobs.insert(name.clone()) {
                    return Err(bad(format!("blob {name} appears twice")));
                }
                blob_bytes += n;
            }
        }
        Ok(())
    })?;
    let m = manifest.ok_or_else(|| bad("no manifest"))?;
    for rel in m.entries.keys() {
        if !seen.contains(rel) {
            return Err(bad(format!("{rel} is missing (truncated archive?)")));
        }
    }
    if blobs.len() as u64 != m.blobs.count
        || blob_bytes != m.blobs.bytes
        || names_digest(blobs.iter()) != m.blobs.names_sha256
    {
        return Err(bad(
            "the blobs differ from the manifest (missing, extra or truncated)",
        ));
    }
    Ok((m, blobs))
}

/// Imports an archive (a spooled file) as a new workspace of the context's org
/// (`WorkspaceCreate`, checked by tenancy, which also reserves the workspace, its documents and
/// its originals' bytes under the org's plan). Validates everything before the workspace's
/// record exists; on any failure the new store is removed.
pub fn import(
    app: &App,
    access: &OrgAccess,
    archive_path: &Path,
    opts: ImportOptions,
) -> Result<WorkspaceRecord> {
    access.require(Action::WorkspaceCreate)?;
    let work = Staging::new(app.data_dir(), "import-entries")?;
    let (manifest, blob_names) = verify(archive_path, work.path())?;
    let new = NewWorkspace {
        name: opts.name.unwrap_or_else(|| manifest.workspace.name.clone()),
        slug: Some(opts.slug.unwrap_or_else(|| manifest.workspace.slug.clone())),
        settings: Some(manifest.workspace.settings.clone()),
    };
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let asks = [
        (
            Counted::Documents,
            count(manifest.counts.get("documents").copied().unwrap_or(0)),
        ),
        (Counted::StorageBytes, count(manifest.blobs.bytes)),
    ];
    let rec = app
        .tenancy()
        .create_workspace_from(access, new, &asks, |id, dir| {
            workspace::create(dir)?;
            let handle = app.registry().get(id)?;
            fill_store(&handle, work.path(), &manifest, &blob_names, archive_path)?;
            handle.rebuild_index()?;
            Ok(())
        })?;
    tracing::info!(org_id = %rec.org_id, workspace_id = %rec.id, "workspace imported");
    Ok(rec)
}

fn json_to_sql(v: &Value, at: &str) -> Result<SqlValue> {
    Ok(match v {
        Value::Null => SqlValue::Null,
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                SqlValue::Integer(i)
            } else if let Some(f) = n.as_f64() {
                SqlValue::Real(f)
            } else {
                return Err(bad(format!("{at}: number out of range")));
            }
        }
        Value::String(s) => SqlValue::Text(s.clone()),
        Value::Object(o) if o.len() == 1 => match o.get("$base64") {
            Some(Value::String(s)) => SqlValue::Blob(
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| bad(format!("{at}: bad base64: {e}")))?,
            ),
            _ => return Err(bad(format!("{at}: a value must be a scalar"))),
        },
        _ => return Err(bad(format!("{at}: a value must be a scalar"))),
    })
}

fn columns_of(conn: &Connection, table: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
    let cols = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(cols)
}

/// Reads one line of at most [`MAX_LINE_BYTES`].
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, at: &str) -> Result<bool> {
    buf.clear();
    let n = r
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', buf)
        .map_err(|e| bad(format!("{at}: {e}")))?;
    if n == 0 {
        return Ok(false);
    }
    if buf.len() > MAX_LINE_BYTES {
        return Err(bad(format!(
            "{at}: a row is longer than {MAX_LINE_BYTES} bytes"
        )));
    }
    Ok(true)
}

fn sql_error(at: &str, e: rusqlite::Error) -> Error {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            bad(format!("{at}: {e}"))
        }
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
            Error::from(e)
        }
        rusqlite::Error::SqliteFailure(..) => bad(format!("{at}: {e}")),
        other => Error::from(other),
    }
}

/// Writes the archive's rows, vectors and blobs into a new, empty store (one transaction for
/// the rows), checking every reference.
fn fill_store(
    ws: &Workspace,
    entries: &Path,
    manifest: &Manifest,
    blob_names: &BTreeSet<String>,
    archive_path: &Path,
) -> Result<()> {
    let mut conn = ws.conn();
    let tx = conn.transaction()?;
    // The new store's own defaults give way to the archive's.
    tx.execute("DELETE FROM agents", [])?;
    let mut buf = Vec::new();
    for table in TABLES {
        let rel = format!("tables/{table}.jsonl");
        let path = entries.join(&rel);
        if !path.is_file() {
            return Err(bad(format!("{rel} is missing")));
        }
        let cols = columns_of(&tx, table)?;
        let mut r = BufReader::new(std::fs::File::open(&path)?);
        let mut line = 0u64;
        let mut stmts: BTreeMap<Vec<String>, rusqlite::CachedStatement<'_>> = BTreeMap::new();
        while read_line(&mut r, &mut buf, &rel)? {
            line += 1;
            let at = format!("{rel} line {line}");
            let obj: Map<String, Value> =
                serde_json::from_slice(&buf).map_err(|e| bad(format!("{at}: {e}")))?;
            let mut keys = Vec::with_capacity(obj.len());
            let mut vals = Vec::with_capacity(obj.len());
            for (k, v) in &obj {
                if !cols.iter().any(|c| c == k) {
                    return Err(bad(format!("{at}: {table} has no column {k:?}")));
                }
                keys.push(k.clone());
                vals.push(json_to_sql(v, &at)?);
            }
            if keys.is_empty() {
                return Err(bad(format!("{at}: an empty row")));
            }
            if !stmts.contains_key(&keys) {
                let sql = format!(
                    "INSERT INTO {table} ({}) VALUES ({})",
                    keys.iter()
                        .map(|k| format!("\"{k}\""))
                        .collect::<Vec<_>>()
                        .join(", "),
                    (1..=keys.len())
                        .map(|i| format!("?{i}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                stmts.insert(keys.clone(), tx.prepare_cached(&sql)?);
            }
            if let Some(stmt) = stmts.get_mut(&keys) {
                stmt.execute(rusqlite::params_from_iter(vals.iter()))
                    .map_err(|e| sql_error(&at, e))?;
            }
        }
        let want = manifest.counts.get(*table).copied().unwrap_or(0);
        if line != want {
            return Err(bad(format!(
                "{rel} has {line} rows, the manifest says {want}"
            )));
        }
    }
    // Vector spaces: replace the new store's default space with the archive's.
    let spaces = read_space_rows(&entries.join("vector_spaces.jsonl"), &mut buf)?;
    let active = spaces.iter().filter(|s| s.state == "active").count();
    let building = spaces.iter().filter(|s| s.state == "building").count();
    if active != 1 || building > 1 || spaces.len() != active + building {
        return Err(bad(
            "vector_spaces.jsonl: needs one active space and at most one building",
        ));
    }
    let mut tables = HashSet::new();
    for s in &spaces {
        // vec0 (`chunk_vectors`, `vec_<id>`) or int8 (`vq_<id>`): the archive's storage is kept.
        let named = s.table_name == "chunk_vectors"
            || s.table_name == format!("vec_{}", s.id)
            || s.table_name == format!("{}{}", vectors::INT8_PREFIX, s.id);
        if !named || !tables.insert(s.table_name.clone()) {
            return Err(bad(format!(
                "vector space {}: bad table name {:?}",
                s.id, s.table_name
            )));
        }
        if !(1..=8192).contains(&s.dim) {
            return Err(bad(format!("vector space {}: dimension {}", s.id, s.dim)));
        }
        s.embedder
            .validate()
            .map_err(|e| bad(format!("vector space {}: {e}", s.id)))?;
        if s.embedder.is_legacy() {
            return Err(bad(format!(
                "vector space {}: embedder holds a key or URL",
                s.id
            )));
        }
    }
    let fresh = vectors::all_tables(&tx)?;
    for (id, table) in &fresh {
        if !spaces.iter().any(|s| s.table_name == *table) {
            tx.execute_batch(&format!("DROP TABLE IF EXISTS {table}"))?;
            tx.execute("DELETE FROM vector_spaces WHERE id = ?1", [id])?;
        }
    }
    let mut vector_total = 0u64;
    for s in &spaces {
        let cfg = serde_json::to_string(&s.embedder).map_err(|e| Error::internal(e.to_string()))?;
        if fresh.iter().any(|(_, t)| *t == s.table_name) {
            tx.execute(
                "UPDATE vector_spaces SET id = ?1, embedder = ?2, dim = ?3, state = ?4, created_at = ?5
                 WHERE table_name = ?6",
                rusqlite::params![s.id, cfg, s.dim, s.state, s.created_at, s.table_name],
            )
            .map_err(|e| sql_error("vector_spaces.jsonl", e))?;
            if s.table_name == "chunk_vectors" && s.dim != 384 {
                return Err(bad("vector space chunk_vectors must have dimension 384"));
            }
        } else {
            tx.execute(
                "INSERT INTO vector_spaces (id, table_name, embedder, dim, state, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![s.id, s.table_name, cfg, s.dim, s.state, s.created_at],
            )
            .map_err(|e| sql_error("vector_spaces.jsonl", e))?;
            // The fresh store may hold the table without a space (see vectors::drop_space).
            tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", s.table_name))?;
            tx.execute_batch(&vectors::create_table_sql(
                &s.table_name,
                s.dim as usize,
                vectors::CHUNK_SIZE,
            ))?;
        }
        let space = vectors::Space::new(
            s.id,
            s.table_name.clone(),
            s.embedder.clone(),
            s.dim as usize,
        );
        vector_total += load_vectors(&tx, &space, &entries.join(format!("vectors/{}.f32", s.id)))?;
    }
    if manifest.counts.get("vectors").copied().unwrap_or(0) != vector_total {
        return Err(bad("the number of vectors differs from the manifest"));
    }
    for extra in manifest
        .entries
        .keys()
        .filter(|k| k.starts_with("vectors/"))
    {
        if !spaces
            .iter()
            .any(|s| *extra == format!("vectors/{}.f32", s.id))
        {
            return Err(bad(format!("{extra} belongs to no vector space")));
        }
    }
    // References the schema does not enforce.
    let broken: i64 = tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
        r.get(0)
    })?;
    if broken > 0 {
        return Err(bad(format!(
            "{broken} rows refer to rows that are not in the archive"
        )));
    }
    let missing: BTreeSet<String> = manifest.blobs.missing.iter().cloned().collect();
    {
        let mut stmt = tx.prepare("SELECT DISTINCT content_hash FROM documents")?;
        let hashes = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for h in hashes {
            if !is_sha256_hex(&h) {
                return Err(bad(format!(
                    "a document's content_hash {h:?} is not a SHA-256"
                )));
            }
            if !blob_names.contains(&h) && !missing.contains(&h) {
                return Err(bad(format!("blob {h} of a document is not in the archive")));
            }
        }
    }
    let defaults: i64 = tx.query_row(
        "SELECT count(*) FROM agents WHERE is_default = 1 AND deleted_at IS NULL",
        [],
        |r| r.get(0),
    )?;
    if defaults != 1 {
        return Err(bad("the archive must hold exactly one live default agent"));
    }
    // The index is rebuilt from these rows; the generation moves so nothing thinks it current.
    workspace::repair::bump_generation(&tx)?;
    // Blobs, from the archive's second pass, before the rows commit.
    copy_blobs(ws, archive_path, blob_names)?;
    tx.commit()?;
    Ok(())
}

fn read_space_rows(path: &Path, buf: &mut Vec<u8>) -> Result<Vec<SpaceRow>> {
    let mut r = BufReader::new(
        std::fs::File::open(path).map_err(|_| bad("vector_spaces.jsonl is missing"))?,
    );
    let mut out = Vec::new();
    while read_line(&mut r, buf, "vector_spaces.jsonl")? {
        let s: SpaceRow =
            serde_json::from_slice(buf).map_err(|e| bad(format!("vector_spaces.jsonl: {e}")))?;
        out.push(s);
        if out.len() > 2 {
            return Err(bad("vector_spaces.jsonl: too many spaces"));
        }
    }
    Ok(out)
}

fn load_vectors(conn: &Connection, space: &vectors::Space, path: &Path) -> Result<u64> {
    let rel = format!("vectors/{}.f32", space.id);
    let f = std::fs::File::open(path).map_err(|_| bad(format!("{rel} is missing")))?;
    let len = f.metadata()?.len();
    let rec = 8 + space.dim as u64 * 4;
    if len % rec != 0 {
        return Err(bad(format!(
            "{rel}: {len} bytes is not a whole number of vectors"
        )));
    }
    let mut r = BufReader::new(f);
    let mut buf = vec![0u8; rec as usize];
    let mut v = vec![0f32; space.dim];
    let mut chunk_exists = conn.prepare_cached("SELECT 1 FROM chunks WHERE id = ?1")?;
    let mut n = 0u64;
    let mut last = i64::MIN;
    for _ in 0..len / rec {
        r.read_exact(&mut buf)?;
        let mut id_bytes = [0u8; 8];
        id_bytes.copy_from_slice(&buf[..8]);
        let id = i64::from_le_bytes(id_bytes);
        if id <= last {
            return Err(bad(format!("{rel}: chunk ids out of order")));
        }
        last = id;
        for (i, x) in v.iter_mut().enumerate() {
            let o = 8 + i * 4;
            *x = f32::from_le_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
            if !x.is_finite() {
                return Err(bad(format!("{rel}: chunk {id} has a non-finite component")));
            }
        }
        if !chunk_exists.exists([id])? {
            return Err(bad(format!(
                "{rel}: vector of chunk {id}, which is not in the archive"
            )));
        }
        vectors::put_new(conn, space, id, &v).map_err(|e| match e {
            Error::Sqlite(s) => sql_error(&rel, s),
            e => e,
        })?;
        n += 1;
    }
    Ok(n)
}

fn copy_blobs(ws: &Workspace, archive_path: &Path, names: &BTreeSet<String>) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    walk(archive_path, |kind, entry| {
        if let EntryKind::Blob(name) = kind {
            let dir = ws.dir().join(BLOBS_DIR).join(&name[..2]);
            crate::perms::create_dir_all(&dir)?;
            let dst = dir.join(&name);
            let mut f = crate::perms::private_file_options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&dst)?;
            // Checked again: the file could have changed between the passes.
            let (sha, _) = digest_entry(entry, Some(&mut f))?;
            if sha != name {
                return Err(bad(format!("blob {name} changed while it was imported")));
            }
            f.sync_all()?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_relative_paths_are_entries() {
        let ok = |p: &str| classify(Path::new(p)).is_ok();
        assert!(ok("manifest.json"));
        assert!(ok("tables/documents.jsonl"));
        assert!(ok("vector_spaces.jsonl"));
        assert!(ok("vectors/12.f32"));
        assert!(ok(&format!("blobs/{}", "a".repeat(64))));
        for bad in [
            "../manifest.json",
            "/etc/passwd",
            "tables/../../x",
            "./manifest.json",
            "tables/sqlite_master.jsonl",
            "tables/documents.json",
            "vectors/x.f32",
            "vectors/1/2.f32",
            "blobs/ABCDEF",
            &format!("blobs/{}", "A".repeat(64)),
            &format!("blobs/../{}", "a".repeat(64)),
            "other.txt",
        ] {
            assert!(!ok(bad), "{bad} accepted");
        }
        assert!(!ok(&format!("tables/{}.jsonl", "d".repeat(300))));
    }

    #[test]
    fn capped_reader_refuses_one_byte_more() {
        let mut r = Capped {
            inner: &b"abcdef"[..],
            left: 6,
            what: "x",
        };
        let mut out = Vec::new();
        assert_eq!(r.read_to_end(&mut out).expect("fits"), 6);
        let mut r = Capped {
            inner: &b"abcdefg"[..],
            left: 6,
            what: "x",
        };
        let e = r.read_to_end(&mut Vec::new()).expect_err("over");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn values_round_trip_between_sql_and_json() {
        for (v, want) in [
            (ValueRef::Null, SqlValue::Null),
            (ValueRef::Integer(i64::MIN), SqlValue::Integer(i64::MIN)),
            (ValueRef::Real(0.1), SqlValue::Real(0.1)),
            (ValueRef::Text("té".as_bytes()), SqlValue::Text("té".into())),
            (
                ValueRef::Blob(&[0, 1, 255]),
                SqlValue::Blob(vec![0, 1, 255]),
            ),
        ] {
            let back = json_to_sql(&sql_to_json(v), "t").expect("parses");
            assert_eq!(want, back);
        }
        assert!(json_to_sql(&serde_json::json!([1]), "t").is_err());
        assert!(json_to_sql(&serde_json::json!(true), "t").is_err());
        assert!(json_to_sql(&serde_json::json!({"a": 1}), "t").is_err());
    }
}
