//! SQLite plumbing shared by the control plane and the workspace stores: opening connections
//! with our pragmas, loading sqlite-vec, and applying numbered migrations from `schema/`.

use std::path::Path;
use std::sync::Once;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};

/// One numbered migration, embedded from `schema/<db>/NNNN_name.sql`.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

static VEC_INIT: Once = Once::new();

/// Registers sqlite-vec as an auto extension, once per process, before any connection opens.
pub fn register_sqlite_vec() {
    VEC_INIT.call_once(|| {
        // SAFETY: `sqlite3_vec_init` has the signature SQLite expects of an extension entry point;
        // sqlite-vec's own documentation registers it exactly this way.
        unsafe {
            type EntryPoint = unsafe extern "C" fn(
                *mut rusqlite::ffi::sqlite3,
                *mut *mut std::os::raw::c_char,
                *const rusqlite::ffi::sqlite3_api_routines,
            ) -> std::os::raw::c_int;
            let entry: EntryPoint = std::mem::transmute(sqlite_vec::sqlite3_vec_init as *const ());
            rusqlite::ffi::sqlite3_auto_extension(Some(entry));
        }
    });
}

/// Opens (or, with `create`, creates) a database in WAL mode with the pragmas we rely on.
pub fn open(path: &Path, create: bool) -> Result<Connection> {
    register_sqlite_vec();
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
        // Created here with mode 0600 first: SQLite gives `-wal` and `-shm` the mode of the
        // database file.
        crate::perms::private_file_options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
    }
    crate::perms::tighten_database(path);
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL + synchronous=NORMAL: a killed process loses no committed transaction.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Keeps the database's `-wal` and `-shm` files when its last connection closes (the WAL
/// checkpointed and truncated to zero bytes instead of deleted). Reopening then creates no
/// file: creating and deleting the two files on every open and close was most of a cold
/// open's time, and all of its tail.
pub fn persist_wal(conn: &Connection) -> Result<()> {
    let mut on: std::os::raw::c_int = 1;
    // SAFETY: a live connection handle, a NUL-terminated schema name, and the `int*` argument
    // SQLITE_FCNTL_PERSIST_WAL takes.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&mut on as *mut std::os::raw::c_int).cast(),
        )
    };
    if rc != rusqlite::ffi::SQLITE_OK {
        return Err(Error::internal(format!("persistent WAL refused ({rc})")));
    }
    Ok(())
}

/// Applies every migration newer than the database's `user_version`, each in its own
/// transaction, and records it in `schema_migrations`. Fast when nothing is pending: one pragma.
pub fn migrate(conn: &mut Connection, migrations: &[Migration]) -> Result<()> {
    let latest = migrations.last().map_or(0, |m| m.version);
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current == latest {
        return Ok(());
    }
    if current > latest {
        return Err(Error::internal(format!(
            "database schema version {current} is newer than this binary knows ({latest})"
        )));
    }
    for m in migrations.iter().filter(|m| m.version > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
        )?;
        tx.execute_batch(m.sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![m.version, m.name, now()],
        )?;
        tx.pragma_update(None, "user_version", m.version)?;
        tx.commit()?;
    }
    Ok(())
}

/// The current time as RFC 3339 with milliseconds, UTC: the one timestamp format we store.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses a JSON column, tolerating nothing: a corrupt column is an internal error.
pub fn json_column(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| Error::internal(format!("corrupt JSON column: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_vec_is_loaded_on_every_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open(&dir.path().join("t.db"), true).expect("open");
        let v: String = conn
            .query_row("select vec_version()", [], |r| r.get(0))
            .expect("vec_version");
        assert!(v.starts_with('v'));
    }

    #[test]
    fn migrations_apply_once_and_are_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.db");
        let migs = [
            Migration {
                version: 1,
                name: "one",
                sql: "CREATE TABLE a (x INTEGER);",
            },
            Migration {
                version: 2,
                name: "two",
                sql: "CREATE TABLE b (y INTEGER);",
            },
        ];
        let mut conn = open(&path, true).expect("open");
        migrate(&mut conn, &migs).expect("first");
        migrate(&mut conn, &migs).expect("second is a no-op");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 2);
        let newer = [Migration {
            version: 1,
            name: "one",
            sql: "",
        }];
        assert!(
            migrate(&mut conn, &newer).is_err(),
            "a downgrade must be refused"
        );
    }

    #[test]
    fn open_without_create_refuses_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(open(&dir.path().join("missing.db"), false).is_err());
        assert!(!dir.path().join("missing.db").exists());
    }
}
