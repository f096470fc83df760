//! The storage reserve: a file of [`RESERVE_BYTES`] under the data directory, written while
//! there is room and released (deleted) when a deletion fails for lack of space. Deleting a
//! document must record the deletion in SQLite (WAL pages) before its blob can be removed; on a
//! full disk the reserve gives it that room, so an operator can free space through the API. It
//! is written again, in the background, once the disk has room.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::Result;

/// The reserve file, under the data directory.
pub const RESERVE_FILE: &str = ".reserve";

/// Size of the reserve: room for the SQLite writes of many document deletions.
pub const RESERVE_BYTES: u64 = 8 << 20;

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(RESERVE_FILE)
}

/// Whether the reserve is in place.
pub fn is_held(data_dir: &Path) -> bool {
    std::fs::metadata(path(data_dir)).is_ok_and(|m| m.len() >= RESERVE_BYTES)
}

/// Bytes available to this process on the filesystem of `dir` (`None` when unknown).
fn available(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: a valid NUL-terminated path and a zeroed, writable statvfs struct.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
}

/// Writes the reserve if it is missing and the disk has room for twice its size (so that
/// writing it does not fill the disk again at once). Returns whether it wrote it; a full disk
/// is not an error (it is tried again later) and leaves no partial file.
pub fn ensure(data_dir: &Path) -> Result<bool> {
    // One writer at a time: the server's start-up upkeep and its periodic sweep both call this,
    // and two writers of the one temporary file made the second rename fail (`NotFound`).
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _writing = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    if is_held(data_dir) {
        return Ok(false);
    }
    if available(data_dir).is_some_and(|a| a < 2 * RESERVE_BYTES) {
        return Ok(false);
    }
    let tmp = data_dir.join(format!("{RESERVE_FILE}.tmp"));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        // Real blocks, not a sparse file: zeros written out.
        let block = vec![0u8; 1 << 20];
        let mut left = RESERVE_BYTES;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path(data_dir))
    })();
    match written {
        Ok(()) => Ok(true),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            if crate::error::io_is_storage_full(&e) {
                Ok(false)
            } else {
                Err(e.into())
            }
        }
    }
}

/// Deletes the reserve to make room. Returns whether there was one to release.
pub fn release(data_dir: &Path) -> bool {
    match std::fs::remove_file(path(data_dir)) {
        Ok(()) => {
            tracing::warn!(
                data_dir = %data_dir.display(),
                "the disk is full: released the storage reserve so that deletions can proceed"
            );
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_written_once_and_released() {
        let tmp = tempfile::tempdir().expect("tmp");
        assert!(!is_held(tmp.path()));
        assert!(ensure(tmp.path()).expect("ensure"));
        assert!(is_held(tmp.path()));
        assert!(!ensure(tmp.path()).expect("again"), "already held");
        assert!(release(tmp.path()));
        assert!(!release(tmp.path()), "nothing left to release");
        assert!(!is_held(tmp.path()));
    }

    #[test]
    fn concurrent_writers_write_it_once_without_error() {
        for _ in 0..5 {
            let tmp = tempfile::tempdir().expect("tmp");
            let dir = tmp.path().to_path_buf();
            let outcomes: Vec<bool> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4).map(|_| s.spawn(|| ensure(&dir))).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("thread").expect("no writer fails"))
                    .collect()
            });
            assert_eq!(outcomes.iter().filter(|w| **w).count(), 1, "{outcomes:?}");
            assert!(is_held(&dir));
            assert!(!dir.join(format!("{RESERVE_FILE}.tmp")).exists());
        }
    }
}
