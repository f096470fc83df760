//! Durability and portability: the workspace archive (export / import), backups of the whole
//! data directory (full and incremental, to a folder or S3-compatible object storage) and their
//! restore. Domain code: nothing here knows HTTP.

pub mod archive;
pub mod backup;
pub mod objstore;
pub mod tier;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::Result;

/// A private scratch folder under `data/.trash/` (so whatever a crash leaves there is removed
/// by the next start's trash cleanup), removed when dropped.
pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    pub fn new(data_dir: &Path, kind: &str) -> Result<Staging> {
        let dir = data_dir
            .join(crate::app::TRASH_DIR)
            .join(format!("{kind}-{}", crate::ids::new_id().simple()));
        crate::perms::create_dir_all(&dir)?;
        Ok(Staging { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SHA-256 (hex) and length of a file, read in 64 KiB pieces.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Whether `s` is a SHA-256 in lower-case hex (a blob's name).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A consistent copy of an open SQLite database (`VACUUM INTO`: one read transaction, so the
/// copy is a snapshot even while others write; the copy has no WAL).
pub fn snapshot_db(conn: &rusqlite::Connection, to: &Path) -> Result<()> {
    let target = to
        .to_str()
        .ok_or_else(|| crate::Error::internal("snapshot path is not UTF-8"))?;
    conn.execute("VACUUM INTO ?1", [target])?;
    Ok(())
}
