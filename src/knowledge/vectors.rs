//! Vector spaces: one sqlite-vec `vec0` table per embedder configuration. sqlite-vec allocates
//! vectors a chunk at a time; spaces made since issue 16 use chunks of [`CHUNK_SIZE`] (32), so a
//! workspace of 200 vectors preallocates 24 spare slots instead of 56 (older spaces keep their
//! 128: the size is the table's own and both read alike). Vectors are L2-normalised, so L2 distance
//! ranks like cosine (`cos = 1 - d²/2`). One space is `active` (searched); while the workspace
//! switches embedder a second one is `building`.

use rusqlite::{params, Connection, OptionalExtension};

use super::embedders::EmbedderConfig;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Space {
    pub id: i64,
    pub table: String,
    pub config: EmbedderConfig,
    pub dim: usize,
}

/// Up to this many allowed chunks, a filtered vector search of a small space reads their
/// vectors one by one (≈ 8 µs each) instead of post-filtering a deep KNN.
pub const EXACT_SCAN_LIMIT: usize = 2_000;
/// Vectors per sqlite-vec chunk of a new space (a multiple of 8, as sqlite-vec requires).
pub const CHUNK_SIZE: usize = 32;
/// sqlite-vec's largest `k`.
pub const MAX_K: usize = 4096;

fn space_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn finish(row: (i64, String, String, i64)) -> Result<Space> {
    let config: EmbedderConfig = serde_json::from_str(&row.2)
        .map_err(|e| Error::internal(format!("corrupt embedder configuration: {e}")))?;
    Ok(Space {
        id: row.0,
        table: row.1,
        config,
        dim: row.3 as usize,
    })
}

fn space_in_state(conn: &Connection, state: &str) -> Result<Option<Space>> {
    // Cached: read on every vector search.
    let row = conn
        .prepare_cached("SELECT id, table_name, embedder, dim FROM vector_spaces WHERE state = ?1")?
        .query_row([state], space_from_row)
        .optional()?;
    row.map(finish).transpose()
}

pub fn active(conn: &Connection) -> Result<Space> {
    space_in_state(conn, "active")?.ok_or_else(|| Error::internal("workspace has no vector space"))
}

pub fn building(conn: &Connection) -> Result<Option<Space>> {
    space_in_state(conn, "building")
}

/// Creates a space and its table (inside the caller's transaction).
pub fn create_space(
    conn: &Connection,
    config: &EmbedderConfig,
    dim: usize,
    state: &str,
) -> Result<Space> {
    let cfg = serde_json::to_string(config).map_err(|e| Error::internal(e.to_string()))?;
    conn.execute(
        "INSERT INTO vector_spaces (table_name, embedder, dim, state, created_at)
         VALUES ('pending-' || hex(randomblob(8)), ?1, ?2, ?3, ?4)",
        params![cfg, dim as i64, state, crate::db::now()],
    )?;
    let id = conn.last_insert_rowid();
    let table = format!("vec_{id}");
    conn.execute(
        "UPDATE vector_spaces SET table_name = ?2 WHERE id = ?1",
        params![id, table],
    )?;
    conn.execute_batch(&format!(
        "CREATE VIRTUAL TABLE {table} USING vec0 (
            chunk_id INTEGER PRIMARY KEY,
            embedding float[{dim}],
            chunk_size = {CHUNK_SIZE}
        )"
    ))?;
    Ok(Space {
        id,
        table,
        config: config.clone(),
        dim,
    })
}

/// Drops a space and its table.
pub fn drop_space(conn: &Connection, space: &Space) -> Result<()> {
    conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", space.table))?;
    conn.execute("DELETE FROM vector_codes WHERE space_id = ?1", [space.id])?;
    conn.execute("DELETE FROM vector_spaces WHERE id = ?1", [space.id])?;
    Ok(())
}

/// Every space: (id, table name).
pub fn all_tables(conn: &Connection) -> Result<Vec<(i64, String)>> {
    let mut stmt = conn.prepare_cached("SELECT id, table_name FROM vector_spaces")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The vector of a [`to_blob`] blob (trailing bytes short of a float are ignored).
pub fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Stores (or replaces) the vector of a chunk, and its code (`vector_codes`).
pub fn put(conn: &Connection, space: &Space, chunk_id: i64, v: &[f32]) -> Result<()> {
    let table = &space.table;
    conn.prepare_cached(&format!("DELETE FROM {table} WHERE chunk_id = ?1"))?
        .execute([chunk_id])?;
    conn.prepare_cached(&format!(
        "INSERT INTO {table} (chunk_id, embedding) VALUES (?1, ?2)"
    ))?
    .execute(params![chunk_id, to_blob(v)])?;
    conn.prepare_cached(
        "INSERT OR REPLACE INTO vector_codes (space_id, chunk_id, code) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![space.id, chunk_id, code_of(v)])?;
    Ok(())
}

/// Removes the vectors (and codes) of chunks from every space.
pub fn delete_chunks(conn: &Connection, chunk_ids: &[i64]) -> Result<()> {
    for (space_id, table) in all_tables(conn)? {
        let mut stmt = conn.prepare_cached(&format!("DELETE FROM {table} WHERE chunk_id = ?1"))?;
        let mut codes =
            conn.prepare_cached("DELETE FROM vector_codes WHERE space_id = ?1 AND chunk_id = ?2")?;
        for id in chunk_ids {
            stmt.execute([id])?;
            codes.execute([space_id, *id])?;
        }
    }
    Ok(())
}

/// Cosine similarity of L2-normalised vectors from their L2 distance.
pub fn similarity(distance: f64) -> f32 {
    (1.0 - distance * distance / 2.0) as f32
}

/// The `k` nearest chunks: (chunk id, cosine similarity), best first.
pub fn knn(conn: &Connection, space: &Space, query: &[f32], k: usize) -> Result<Vec<(i64, f32)>> {
    let k = k.clamp(1, MAX_K);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT chunk_id, distance FROM {} WHERE embedding MATCH ?1 AND k = ?2 ORDER BY distance",
        space.table
    ))?;
    let rows = stmt.query_map(params![to_blob(query), k as i64], |r| {
        Ok((r.get::<_, i64>(0)?, similarity(r.get::<_, f64>(1)?)))
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Exact nearest chunks among the chunks of `document_ids` (a JSON array).
pub fn scan_documents(
    conn: &Connection,
    space: &Space,
    query: &[f32],
    document_ids_json: &str,
    k: usize,
) -> Result<Vec<(i64, f32)>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT v.chunk_id, vec_distance_l2(v.embedding, ?1) AS d
         FROM chunks c JOIN {} v ON v.chunk_id = c.id
         WHERE c.document_id IN (SELECT value FROM json_each(?2))
         ORDER BY d LIMIT ?3",
        space.table
    ))?;
    let rows = stmt.query_map(params![to_blob(query), document_ids_json, k as i64], |r| {
        Ok((r.get::<_, i64>(0)?, similarity(r.get::<_, f64>(1)?)))
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The stored form of a vector's code (`vector_codes.code`): sign bit `i` (set when the
/// component is positive) in byte `i / 8`, bit `i % 8`.
pub fn code_of(v: &[f32]) -> Vec<u8> {
    let mut bytes = vec![0u8; v.len().div_ceil(8)];
    for (i, x) in v.iter().enumerate() {
        if *x > 0.0 {
            bytes[i / 8] |= 1 << (i % 8);
        }
    }
    bytes
}
