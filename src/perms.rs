//! File modes of the data directory: everything Enclave creates is its owner's only (folders
//! `0700`, files `0600`). `control.db` holds the tenant-token signing secrets and `master.key`
//! the key that seals provider keys: no other local user may read either.
//!
//! Three layers: the process umask is `0o077` from the first line of `main` (so every file a
//! library creates, Tantivy's segments included, is private); the folders and files Enclave
//! creates itself get explicit modes (`create_dir_all`, `open_new_file`), which also holds in a
//! process that never set the umask (the test harness, an embedding program); and what an older
//! version created world-readable is tightened at start (`tighten_data_dir`: the data folder,
//! which makes everything below it unreachable to others, and the control plane's files) and
//! when a workspace is opened (`tighten_workspace_dir`). Nothing walks all of `data/`.

use std::path::Path;

/// Mode of every folder Enclave creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file Enclave creates.
pub const FILE_MODE: u32 = 0o600;
/// The process umask set by `main`: no bit for group or others.
pub const UMASK: u32 = 0o077;

/// Sets the process umask to [`UMASK`]. Called once, first thing in `main`.
pub fn restrict_umask() {
    #[cfg(unix)]
    // SAFETY: umask only swaps the process's file-mode creation mask; it cannot fail.
    unsafe {
        libc::umask(UMASK as libc::mode_t);
    }
}

/// `create_dir_all` with [`DIR_MODE`] for every folder it creates (existing ones are left as
/// they are).
pub fn create_dir_all(path: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(DIR_MODE);
    }
    b.create(path)
}

/// Options that create a file with [`FILE_MODE`] (when it does not exist yet).
pub fn private_file_options() -> std::fs::OpenOptions {
    #[allow(unused_mut)]
    let mut o = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(FILE_MODE);
    }
    o
}

/// Removes group and other bits from `path`'s mode when it has any. A missing path is fine; a
/// failure (a file owned by someone else) is logged, never fatal.
pub fn tighten(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(_) => return,
        };
        if meta.file_type().is_symlink() || meta.permissions().mode() & 0o077 == 0 {
            return;
        }
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            tracing::warn!(path = %path.display(), error = %e, "could not make this private");
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
}

/// Tightens an SQLite database and its `-wal` and `-shm` files to [`FILE_MODE`] (SQLite gives
/// the two the mode of the database file).
pub fn tighten_database(db: &Path) {
    tighten(db, FILE_MODE);
    for suffix in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        tighten(Path::new(&p), FILE_MODE);
    }
}

/// At start: the data folder itself (`0700` makes everything below it unreachable to other
/// users), the control plane's database, the master key, the lock and the queue and trash
/// folders. A handful of `stat` calls, whatever the number of workspaces.
pub fn tighten_data_dir(dir: &Path) {
    tighten(dir, DIR_MODE);
    tighten_database(&dir.join(crate::control::CONTROL_DB));
    tighten(&dir.join(crate::crypto::MASTER_KEY_FILE), FILE_MODE);
    tighten(&dir.join(crate::app::LOCK_FILE), FILE_MODE);
    tighten(&dir.join(crate::app::TRASH_DIR), DIR_MODE);
    tighten(&dir.join(crate::knowledge::scheduler::QUEUE_DIR), DIR_MODE);
}

/// When a workspace is opened: its folder and the folders and database inside it (files deeper
/// in `index/` and `blobs/` are behind those folders).
pub fn tighten_workspace_dir(dir: &Path) {
    tighten(dir, DIR_MODE);
    tighten(&dir.join(crate::workspace::INDEX_DIR), DIR_MODE);
    tighten(&dir.join(crate::workspace::BLOBS_DIR), DIR_MODE);
    tighten_database(&dir.join(crate::workspace::DB_FILE));
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn created_folders_and_files_are_private_whatever_the_umask() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b");
        create_dir_all(&dir).expect("mkdir");
        assert_eq!(mode(&tmp.path().join("a")), DIR_MODE);
        assert_eq!(mode(&dir), DIR_MODE);
        let f = dir.join("f");
        private_file_options()
            .write(true)
            .create_new(true)
            .open(&f)
            .expect("create");
        assert_eq!(mode(&f), FILE_MODE);
    }

    #[test]
    fn tightening_removes_group_and_other_bits_only_where_set() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = tmp.path().join("x.db");
        for p in ["x.db", "x.db-wal"] {
            std::fs::write(tmp.path().join(p), b"").expect("write");
            std::fs::set_permissions(tmp.path().join(p), std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
        }
        tighten_database(&db);
        assert_eq!(mode(&db), FILE_MODE);
        assert_eq!(mode(&tmp.path().join("x.db-wal")), FILE_MODE);
        // A missing -shm is not an error; an owner-only mode is left alone.
        let own = tmp.path().join("own");
        std::fs::write(&own, b"").expect("write");
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        tighten(&own, FILE_MODE);
        assert_eq!(mode(&own), 0o400);
    }
}
