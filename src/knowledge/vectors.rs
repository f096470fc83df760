//! Vector spaces: one table per embedder configuration. Vectors are L2-normalised, so the dot
//! product is the cosine. One space is `active` (searched); while the workspace switches
//! embedder a second one is `building`.
//!
//! A space stores its vectors one of two ways ([`Storage`], told by its table's name):
//! - **int8** (`vq_<id>`, every space made since issue 16 unless `vector_storage = "f32"`): a
//!   plain table `(chunk_id INTEGER PRIMARY KEY, v BLOB)`, `v` the vector's bytes and scale
//!   ([`super::quant`]): 260 bytes for 256 dimensions instead of 1 KiB. Searched by a scan of
//!   the table through our own kernel (exact over the stored vectors); the binary codes of
//!   large spaces ([`super::ann`]) are computed from these rows, not stored.
//! - **vec0** (`chunk_vectors`, `vec_<id>`): sqlite-vec's float table, which allocates vectors a
//!   chunk at a time (spaces made since issue 16 use chunks of [`CHUNK_SIZE`]). Older spaces
//!   stay readable and writable as they are (no re-embedding); their codes live in
//!   `vector_codes`.

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension};

use super::embedders::EmbedderConfig;
use super::quant;
use crate::config::VectorStorage;
use crate::error::{Error, Result};

/// How a space stores its vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Plain table of int8 vectors and their scale (`vq_<id>`).
    Int8,
    /// sqlite-vec `vec0` table of floats (`chunk_vectors`, `vec_<id>`).
    Vec0,
}

/// Table names of int8 spaces start with this.
pub const INT8_PREFIX: &str = "vq_";

impl Storage {
    /// The storage of a space's table, by its name.
    pub fn of_table(table: &str) -> Storage {
        if table.starts_with(INT8_PREFIX) {
            Storage::Int8
        } else {
            Storage::Vec0
        }
    }
}

#[derive(Debug, Clone)]
pub struct Space {
    pub id: i64,
    pub table: String,
    pub config: EmbedderConfig,
    pub dim: usize,
    pub storage: Storage,
}

impl Space {
    pub fn new(id: i64, table: String, config: EmbedderConfig, dim: usize) -> Space {
        let storage = Storage::of_table(&table);
        Space {
            id,
            table,
            config,
            dim,
            storage,
        }
    }
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
    Ok(Space::new(row.0, row.1, config, row.3 as usize))
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

/// The SQL that creates the table of a space.
pub fn create_table_sql(table: &str, dim: usize, chunk_size: usize) -> String {
    match Storage::of_table(table) {
        Storage::Int8 => {
            format!("CREATE TABLE {table} (chunk_id INTEGER PRIMARY KEY, v BLOB NOT NULL) STRICT")
        }
        Storage::Vec0 => format!(
            "CREATE VIRTUAL TABLE {table} USING vec0 (
                chunk_id INTEGER PRIMARY KEY,
                embedding float[{dim}],
                chunk_size = {chunk_size}
            )"
        ),
    }
}

/// Creates a space and its table (inside the caller's transaction), stored as `storage` says.
pub fn create_space(
    conn: &Connection,
    config: &EmbedderConfig,
    dim: usize,
    state: &str,
    storage: VectorStorage,
) -> Result<Space> {
    let cfg = serde_json::to_string(config).map_err(|e| Error::internal(e.to_string()))?;
    conn.execute(
        "INSERT INTO vector_spaces (table_name, embedder, dim, state, created_at)
         VALUES ('pending-' || hex(randomblob(8)), ?1, ?2, ?3, ?4)",
        params![cfg, dim as i64, state, crate::db::now()],
    )?;
    let id = conn.last_insert_rowid();
    let table = match storage {
        VectorStorage::Int8 => format!("{INT8_PREFIX}{id}"),
        VectorStorage::F32 => format!("vec_{id}"),
    };
    conn.execute(
        "UPDATE vector_spaces SET table_name = ?2 WHERE id = ?1",
        params![id, table],
    )?;
    // A table of that name belongs to no space (the id is new): an orphan, see `drop_space`.
    conn.execute_batch(&format!("DROP TABLE IF EXISTS {table}"))?;
    conn.execute_batch(&create_table_sql(&table, dim, CHUNK_SIZE))?;
    Ok(Space::new(id, table, config.clone(), dim))
}

/// Tables a migration may have left without a space: the default space's vec0 table once
/// migration 0009 moved an empty default space to int8, and that int8 table in stores whose
/// default space kept its vectors.
const MAYBE_ORPHANS: [&str; 2] = ["chunk_vectors", "vq_1"];

/// Drops a space and its table, and any table of [`MAYBE_ORPHANS`] that no space uses.
pub fn drop_space(conn: &Connection, space: &Space) -> Result<()> {
    conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", space.table))?;
    conn.execute("DELETE FROM vector_codes WHERE space_id = ?1", [space.id])?;
    conn.execute("DELETE FROM vector_spaces WHERE id = ?1", [space.id])?;
    for table in MAYBE_ORPHANS {
        let used: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM vector_spaces WHERE table_name = ?1)",
            [table],
            |r| r.get(0),
        )?;
        if !used {
            conn.execute_batch(&format!("DROP TABLE IF EXISTS {table}"))?;
        }
    }
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

/// The vector of a chunk as stored (an int8 space's dequantised: a unit vector), if it has one.
pub fn get(conn: &Connection, space: &Space, chunk_id: i64) -> Result<Option<Vec<f32>>> {
    let column = match space.storage {
        Storage::Int8 => "v",
        Storage::Vec0 => "embedding",
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {column} FROM {} WHERE chunk_id = ?1",
        space.table
    ))?;
    let blob: Option<Vec<u8>> = stmt.query_row([chunk_id], |r| r.get(0)).optional()?;
    Ok(blob.and_then(|b| decode(space, &b)))
}

/// The cosine of `query` and a chunk's stored vector, if it has one (what a scan scores).
pub fn score(
    conn: &Connection,
    space: &Space,
    chunk_id: i64,
    query: &[f32],
) -> Result<Option<f32>> {
    if space.storage == Storage::Vec0 {
        return Ok(get(conn, space, chunk_id)?
            .filter(|v| v.len() == query.len())
            .map(|v| v.iter().zip(query).map(|(a, b)| a * b).sum()));
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT v FROM {} WHERE chunk_id = ?1",
        space.table
    ))?;
    let mut rows = stmt.query([chunk_id])?;
    let Some(r) = rows.next()? else {
        return Ok(None);
    };
    let blob = r
        .get_ref(0)?
        .as_blob()
        .map_err(|e| Error::internal(e.to_string()))?;
    Ok(quant::score(query, blob))
}

/// A stored vector's floats, if the blob is one of `space`'s.
pub fn decode(space: &Space, blob: &[u8]) -> Option<Vec<f32>> {
    match space.storage {
        Storage::Int8 => quant::dequantize(blob, space.dim),
        Storage::Vec0 => (blob.len() == space.dim * 4).then(|| from_blob(blob)),
    }
}

/// Every vector of `space`, in chunk id order: calls `f(chunk_id, floats)`.
pub fn for_each(
    conn: &Connection,
    space: &Space,
    mut f: impl FnMut(i64, Vec<f32>) -> Result<()>,
) -> Result<()> {
    let column = match space.storage {
        Storage::Int8 => "v",
        Storage::Vec0 => "embedding",
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT chunk_id, {column} FROM {} ORDER BY chunk_id",
        space.table
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let blob = r
            .get_ref(1)?
            .as_blob()
            .map_err(|e| Error::internal(e.to_string()))?;
        let v = decode(space, blob).ok_or_else(|| {
            Error::internal(format!(
                "vector of chunk {id} has {} bytes, not one of {} dimensions",
                blob.len(),
                space.dim
            ))
        })?;
        f(id, v)?;
    }
    Ok(())
}

/// The number of vectors in a space.
pub fn count(conn: &Connection, space: &Space) -> Result<usize> {
    let table = match space.storage {
        Storage::Int8 => space.table.clone(),
        Storage::Vec0 => format!("{}_rowids", space.table),
    };
    let n: i64 = conn
        .prepare_cached(&format!("SELECT count(*) FROM {table}"))?
        .query_row([], |r| r.get(0))?;
    Ok(n.max(0) as usize)
}

/// Stores (or replaces) the vector of a chunk (and, in a vec0 space, its code in
/// `vector_codes`).
pub fn put(conn: &Connection, space: &Space, chunk_id: i64, v: &[f32]) -> Result<()> {
    let table = &space.table;
    match space.storage {
        Storage::Int8 => {
            conn.prepare_cached(&format!(
                "INSERT OR REPLACE INTO {table} (chunk_id, v) VALUES (?1, ?2)"
            ))?
            .execute(params![chunk_id, quant::quantize(v)])?;
        }
        Storage::Vec0 => {
            conn.prepare_cached(&format!("DELETE FROM {table} WHERE chunk_id = ?1"))?
                .execute([chunk_id])?;
            put_vec0(conn, space, chunk_id, v)?;
        }
    }
    Ok(())
}

/// Stores the vector of a chunk that has none in `space` (a chunk just made): one insert, no
/// delete first. A chunk that has one already is an error.
pub fn put_new(conn: &Connection, space: &Space, chunk_id: i64, v: &[f32]) -> Result<()> {
    match space.storage {
        Storage::Int8 => {
            conn.prepare_cached(&format!(
                "INSERT INTO {} (chunk_id, v) VALUES (?1, ?2)",
                space.table
            ))?
            .execute(params![chunk_id, quant::quantize(v)])?;
            Ok(())
        }
        Storage::Vec0 => put_vec0(conn, space, chunk_id, v),
    }
}

fn put_vec0(conn: &Connection, space: &Space, chunk_id: i64, v: &[f32]) -> Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO {} (chunk_id, embedding) VALUES (?1, ?2)",
        space.table
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
        for id in chunk_ids {
            stmt.execute([id])?;
        }
        if Storage::of_table(&table) == Storage::Vec0 {
            let mut codes = conn
                .prepare_cached("DELETE FROM vector_codes WHERE space_id = ?1 AND chunk_id = ?2")?;
            for id in chunk_ids {
                codes.execute([space_id, *id])?;
            }
        }
    }
    Ok(())
}

/// Cosine similarity of L2-normalised vectors from their L2 distance.
pub fn similarity(distance: f64) -> f32 {
    (1.0 - distance * distance / 2.0) as f32
}

/// Keeps the best `k` (highest score, then lowest chunk id) of `hits`, sorted best first.
fn best(mut hits: Vec<(i64, f32)>, k: usize) -> Vec<(i64, f32)> {
    let order = |a: &(i64, f32), b: &(i64, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if hits.len() > k && k > 0 {
        hits.select_nth_unstable_by(k - 1, order);
        hits.truncate(k);
    }
    hits.sort_by(order);
    hits
}

/// Scores every row `stmt` returns as (chunk id, int8 vector) against `query`, keeping those
/// `admit` lets through.
fn scan_rows(
    rows: &mut rusqlite::Rows<'_>,
    query: &[f32],
    admit: impl Fn(i64) -> bool,
) -> Result<Vec<(i64, f32)>> {
    let mut hits = Vec::new();
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        if !admit(id) {
            continue;
        }
        let blob = r
            .get_ref(1)?
            .as_blob()
            .map_err(|e| Error::internal(e.to_string()))?;
        if let Some(s) = quant::score(query, blob) {
            hits.push((id, s));
        }
    }
    Ok(hits)
}

/// The `k` nearest chunks: (chunk id, cosine similarity), best first.
pub fn knn(conn: &Connection, space: &Space, query: &[f32], k: usize) -> Result<Vec<(i64, f32)>> {
    match space.storage {
        Storage::Int8 => nearest_int8(conn, space, query, k, None),
        Storage::Vec0 => {
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
    }
}

/// The `k` nearest chunks of an int8 space among `allowed` (all when `None`): an exact scan of
/// the table.
pub fn nearest_int8(
    conn: &Connection,
    space: &Space,
    query: &[f32],
    k: usize,
    allowed: Option<&HashSet<u64>>,
) -> Result<Vec<(i64, f32)>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT chunk_id, v FROM {}", space.table))?;
    let mut rows = stmt.query([])?;
    let hits = scan_rows(&mut rows, query, |id| {
        allowed.is_none_or(|a| a.contains(&(id as u64)))
    })?;
    Ok(best(hits, k.max(1)))
}

/// Exact nearest chunks among the chunks of `document_ids` (a JSON array).
pub fn scan_documents(
    conn: &Connection,
    space: &Space,
    query: &[f32],
    document_ids_json: &str,
    k: usize,
) -> Result<Vec<(i64, f32)>> {
    if space.storage == Storage::Int8 {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT v.chunk_id, v.v
             FROM chunks c JOIN {} v ON v.chunk_id = c.id
             WHERE c.document_id IN (SELECT value FROM json_each(?1))",
            space.table
        ))?;
        let mut rows = stmt.query([document_ids_json])?;
        let hits = scan_rows(&mut rows, query, |_| true)?;
        return Ok(best(hits, k.max(1)));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::quant::tests::unit;
    use crate::workspace::MIGRATIONS;
    use rand::{Rng, SeedableRng};

    fn space(table: &str, dim: usize) -> Space {
        Space::new(1, table.into(), EmbedderConfig::Static, dim)
    }

    #[test]
    fn int8_search_ranks_like_f32_up_to_ties_within_the_error_bound() {
        crate::db::register_sqlite_vec();
        let conn = Connection::open_in_memory().expect("db");
        let dim = 256;
        let (q8, f32s) = (space("vq_1", dim), space("vec_2", dim));
        conn.execute_batch(&create_table_sql(&q8.table, dim, CHUNK_SIZE))
            .expect("int8 table");
        conn.execute_batch(&create_table_sql(&f32s.table, dim, CHUNK_SIZE))
            .expect("vec0 table");
        conn.execute_batch(include_str!("../../schema/workspace/0005_vector_codes.sql"))
            .expect("codes");
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // Clustered vectors, as embeddings are: close neighbours make the order delicate.
        let centres: Vec<Vec<f32>> = (0..8).map(|_| unit(&mut rng, dim)).collect();
        let mut all = Vec::new();
        for id in 1..=600i64 {
            let c = &centres[id as usize % centres.len()];
            let noise = unit(&mut rng, dim);
            let v: Vec<f32> = c.iter().zip(&noise).map(|(a, b)| a + 0.6 * b).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            let v: Vec<f32> = v.into_iter().map(|x| x / n).collect();
            put_new(&conn, &q8, id, &v).expect("put int8");
            put(&conn, &f32s, id, &v).expect("put f32");
            all.push((id, v));
        }
        // Both read back as (nearly) the same vector.
        let back = get(&conn, &q8, 5).expect("get").expect("some");
        let cos: f32 = back.iter().zip(&all[4].1).map(|(a, b)| a * b).sum();
        assert!(cos > 0.9999, "{cos}");
        assert_eq!(count(&conn, &q8).expect("count"), 600);
        assert_eq!(count(&conn, &f32s).expect("count"), 600);
        let mut max_diff = 0f32;
        for _ in 0..30 {
            let c = &centres[rng.random_range(0..centres.len())];
            let noise = unit(&mut rng, dim);
            let q: Vec<f32> = c.iter().zip(&noise).map(|(a, b)| a + 0.5 * b).collect();
            let n = q.iter().map(|x| x * x).sum::<f32>().sqrt();
            let q: Vec<f32> = q.into_iter().map(|x| x / n).collect();
            let a = knn(&conn, &q8, &q, 10).expect("int8 knn");
            let b = knn(&conn, &f32s, &q, 10).expect("f32 knn");
            assert_eq!(a.len(), 10);
            let exact: std::collections::HashMap<i64, f32> = all
                .iter()
                .map(|(id, v)| (*id, v.iter().zip(&q).map(|(x, y)| x * y).sum()))
                .collect();
            for (x, y) in a.iter().zip(&b) {
                max_diff = max_diff.max((x.1 - y.1).abs());
                if x.0 != y.0 {
                    // A swap only between chunks whose true scores are within the bound.
                    let gap = (exact[&x.0] - exact[&y.0]).abs();
                    assert!(gap < 4e-3, "order differs beyond the bound: {a:?} vs {b:?}");
                }
            }
            // Each int8 score is its chunk's float cosine up to the quantisation error.
            for (id, s) in &a {
                assert!(
                    (s - exact[id]).abs() < 2e-3,
                    "chunk {id}: {s} vs {}",
                    exact[id]
                );
            }
            // A filtered scan keeps only the allowed chunks, in the same order.
            let allowed: HashSet<u64> = a.iter().step_by(2).map(|x| x.0 as u64).collect();
            let f = nearest_int8(&conn, &q8, &q, 3, Some(&allowed)).expect("filtered");
            let want: Vec<i64> = a.iter().step_by(2).take(3).map(|x| x.0).collect();
            assert_eq!(f.iter().map(|x| x.0).collect::<Vec<_>>(), want);
        }
        assert!(max_diff < 2e-3, "scores differ by {max_diff}");
        // Replacing and deleting work alike.
        put(&conn, &q8, 1, &all[1].1).expect("replace");
        assert!(
            put_new(&conn, &q8, 1, &all[1].1).is_err(),
            "put_new of an existing chunk"
        );
        conn.execute_batch(
            "CREATE TABLE vector_spaces (id INTEGER PRIMARY KEY, table_name TEXT NOT NULL);
             INSERT INTO vector_spaces VALUES (1, 'vq_1'), (2, 'vec_2');",
        )
        .expect("spaces");
        delete_chunks(&conn, &[1, 2]).expect("delete");
        assert_eq!(count(&conn, &q8).expect("count"), 598);
        assert_eq!(count(&conn, &f32s).expect("count"), 598);
        assert!(get(&conn, &q8, 1).expect("get").is_none());
    }

    fn doc_with_chunk(conn: &Connection, chunk: i64) {
        let doc = format!("doc-{chunk}");
        conn.execute(
            "INSERT INTO documents (id, mime_type, content_hash, byte_size, created_at, updated_at)
             VALUES (?1, 'text/plain', 'x', 1, 'now', 'now')",
            [&doc],
        )
        .expect("document");
        conn.execute(
            "INSERT INTO chunks (id, document_id, ordinal, text) VALUES (?1, ?2, 0, 'text')",
            params![chunk, doc],
        )
        .expect("chunk");
    }

    #[test]
    fn a_vec0_store_from_before_int8_keeps_its_vectors_and_a_new_store_is_int8() {
        let tmp = tempfile::tempdir().expect("tmp");
        // A store made by the previous version, with a vector in its default vec0 space.
        let mut old = crate::db::open(&tmp.path().join("old.db"), true).expect("open");
        crate::db::migrate(&mut old, &MIGRATIONS[..8]).expect("old migrations");
        doc_with_chunk(&old, 7);
        let v: Vec<f32> = (0..384).map(|i| if i == 3 { 1.0 } else { 0.0 }).collect();
        let before = active(&old).expect("active");
        assert_eq!(
            (before.table.as_str(), before.storage),
            ("chunk_vectors", Storage::Vec0)
        );
        put(&old, &before, 7, &v).expect("put");
        // The upgrade keeps it where it is, searchable and writable.
        crate::db::migrate(&mut old, MIGRATIONS).expect("upgrade");
        let space = active(&old).expect("active");
        assert_eq!(space.table, "chunk_vectors");
        assert_eq!(space.storage, Storage::Vec0);
        let hits = knn(&old, &space, &v, 5).expect("knn");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].0, 7);
        assert!((hits[0].1 - 1.0).abs() < 1e-6);
        doc_with_chunk(&old, 8);
        put_new(&old, &space, 8, &v).expect("put_new");
        assert_eq!(count(&old, &space).expect("count"), 2);
        // Dropping it (an embedder change) also drops the int8 table no space uses.
        let replacement = create_space(
            &old,
            &EmbedderConfig::Static,
            8,
            "building",
            VectorStorage::Int8,
        )
        .expect("create");
        assert_eq!(replacement.storage, Storage::Int8);
        drop_space(&old, &space).expect("drop");
        let tables = |c: &Connection| -> Vec<String> {
            c.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND (name GLOB 'vq_*' OR name GLOB 'vec_*' OR name GLOB 'chunk_vectors*') ORDER BY name")
                .expect("schema")
                .query_map([], |r| r.get(0))
                .expect("rows")
                .collect::<rusqlite::Result<_>>()
                .expect("names")
        };
        assert_eq!(tables(&old), vec![replacement.table.clone()]);

        // A new store's default space is int8; its unused vec0 table goes at the first change.
        let mut new = crate::db::open(&tmp.path().join("new.db"), true).expect("open");
        crate::db::migrate(&mut new, MIGRATIONS).expect("migrations");
        let space = active(&new).expect("active");
        assert_eq!(
            (space.table.as_str(), space.storage),
            ("vq_1", Storage::Int8)
        );
        doc_with_chunk(&new, 1);
        put_new(&new, &space, 1, &v).expect("put");
        assert_eq!(knn(&new, &space, &v, 3).expect("knn")[0].0, 1);
        new.execute("DELETE FROM chunks", []).expect("clear");
        delete_chunks(&new, &[1]).expect("delete");
        drop_space(&new, &space).expect("drop");
        let f32s = create_space(
            &new,
            &EmbedderConfig::Static,
            8,
            "active",
            VectorStorage::F32,
        )
        .expect("f32 space");
        assert_eq!(
            (f32s.table.as_str(), f32s.storage),
            ("vec_1", Storage::Vec0)
        );
        assert!(
            tables(&new).iter().all(|t| t.starts_with("vec_1")),
            "{:?}",
            tables(&new)
        );
    }
}
