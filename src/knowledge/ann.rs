//! Binary codes of a workspace's vectors, held in memory while the workspace is open, so that
//! vector search over a large workspace does not push every float vector through sqlite-vec's
//! brute-force KNN (≈ 30–50 ms per 100k vectors of 256 dimensions on our machines, most of it
//! per-chunk overhead, not arithmetic).
//!
//! A code is the sign bits of a vector (`dim / 8` bytes). A search ranks every code by Hamming
//! distance to the query's signs, re-scores the best `candidates` asymmetrically (the float
//! query against the candidate's signs, through one lookup table per code byte), and ranks the
//! best `rerank` of those by their exact cosine, read from the vector table, the vectors' only
//! store. When the space holds no more than `rerank` vectors the answer is exact.
//!
//! The codes are derived data: built from the vector table on first use (an int8 space's
//! rows, or a vec0 space's `vector_codes`), and kept current by the workspace connection's
//! SQLite update hook (an observer of the store's row changes, registered by
//! `knowledge::caches`) on an int8 table itself or on a vec0 table's rowid shadow table, which
//! marks the chunk of every inserted or deleted vector dirty. The next search re-reads dirty chunks from SQLite, so a
//! rolled-back write leaves nothing behind. Writes by another connection (another process on
//! the same data directory) do not reach the hook; SQLite's `PRAGMA data_version` tells of
//! them, and the codes are then rebuilt. Lock order: the connection, then the codes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;

use super::vectors::{self, code_of, Space, Storage};
use crate::error::Result;

/// Tuning of the approximate path.
#[derive(Debug, Clone, Copy)]
pub struct AnnParams {
    /// Spaces of fewer vectors hold no codes: sqlite-vec's exact KNN serves them.
    pub min_vectors: usize,
    /// Hamming-ranked candidates re-scored asymmetrically (at least this many, or `20 × k`).
    pub candidates: usize,
    /// Asymmetric-ranked candidates re-ranked exactly (at least this many, or `2 × k`).
    pub rerank: usize,
}

impl Default for AnnParams {
    fn default() -> Self {
        AnnParams {
            min_vectors: 10_000,
            candidates: 2000,
            rerank: 60,
        }
    }
}

/// The codes of one vector table.
#[derive(Debug, Default)]
struct Codes {
    dim: usize,
    /// u64 words per code.
    words: usize,
    ids: Vec<i64>,
    bits: Vec<u64>,
    pos: HashMap<i64, usize>,
}

impl Codes {
    fn new(dim: usize) -> Self {
        Codes {
            dim,
            words: dim.div_ceil(64),
            ..Default::default()
        }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn encode(&self, v: &[f32], out: &mut [u64]) {
        words_of(&code_of(&v[..v.len().min(self.dim)]), out);
    }

    fn upsert(&mut self, id: i64, v: &[f32]) {
        self.upsert_code(id, &code_of(&v[..v.len().min(self.dim)]));
    }

    /// Inserts or replaces a code in its stored form (`code_of`).
    fn upsert_code(&mut self, id: i64, code: &[u8]) {
        let w = self.words;
        let mut words = vec![0u64; w];
        words_of(code, &mut words);
        match self.pos.get(&id) {
            Some(&p) => self.bits[p * w..(p + 1) * w].copy_from_slice(&words),
            None => {
                self.pos.insert(id, self.ids.len());
                self.ids.push(id);
                self.bits.extend_from_slice(&words);
            }
        }
    }

    fn remove(&mut self, id: i64) {
        let Some(p) = self.pos.remove(&id) else {
            return;
        };
        let w = self.words;
        let last = self.ids.len() - 1;
        if p != last {
            let moved = self.ids[last];
            self.ids[p] = moved;
            self.bits.copy_within(last * w..(last + 1) * w, p * w);
            self.pos.insert(moved, p);
        }
        self.ids.truncate(last);
        self.bits.truncate(last * w);
    }
}

#[derive(Debug, Default)]
struct State {
    /// Codes by vector table name (only the searched, active table is kept).
    tables: HashMap<String, Codes>,
    /// Vector counts of searched tables too small for codes (forgotten on any change).
    small: HashMap<String, usize>,
    /// SQLite's `data_version` when the above was read: another connection's (another
    /// process's) commit changes it, and everything is read again.
    epoch: Option<i64>,
    /// Chunks whose vector changed since the codes were last brought up to date.
    dirty: HashMap<String, HashSet<i64>>,
}

/// The in-memory codes of one open workspace.
#[derive(Debug, Clone, Default)]
pub struct Ann {
    state: Arc<Mutex<State>>,
}

const ROWIDS_SUFFIX: &str = "_rowids";

impl Ann {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a row change reported by the connection's update hook: an inserted or deleted
    /// vector (a row of a vector table's rowid shadow table) makes its chunk dirty.
    pub fn note(&self, table: &str, rowid: i64) {
        let t = if table.starts_with(vectors::INT8_PREFIX) {
            table
        } else if let Some(t) = table.strip_suffix(ROWIDS_SUFFIX) {
            t
        } else {
            return;
        };
        let mut st = self.lock();
        if st.tables.contains_key(t) {
            st.dirty.entry(t.to_string()).or_default().insert(rowid);
        }
        st.small.remove(t);
    }

    /// The `k` nearest chunks of `space` to the L2-normalised `query`: (chunk id, cosine),
    /// best first; `None` when the space is smaller than `params.min_vectors` (it holds no
    /// codes: search it with sqlite-vec). `conn` is the workspace's connection, held by the
    /// caller for the duration.
    pub fn search(
        &self,
        conn: &Connection,
        space: &Space,
        query: &[f32],
        k: usize,
        params: &AnnParams,
        allowed: Option<&HashSet<u64>>,
    ) -> Result<Option<Vec<(i64, f32)>>> {
        let (table, dim) = (space.table.as_str(), space.dim);
        let mut st = self.lock();
        if !Self::refresh(&mut st, conn, space, params.min_vectors)? {
            return Ok(None);
        }
        let Some(codes) = st.tables.get(table) else {
            return Ok(None);
        };
        let rerank = params.rerank.max(2 * k);
        let candidates = params.candidates.max(20 * k).max(rerank);
        let n = codes.len();
        let admitted = |i: usize| allowed.is_none_or(|a| a.contains(&(codes.ids[i] as u64)));

        // 1. Hamming distance of every code to the query's signs.
        let w = codes.words;
        let mut q = vec![0u64; w];
        codes.encode(query, &mut q);
        let mut ranked: Vec<(u32, u32)> = Vec::with_capacity(if allowed.is_some() { 0 } else { n });
        let popcnt = popcount_fn();
        for i in 0..n {
            if !admitted(i) {
                continue;
            }
            let d = popcnt(&codes.bits[i * w..(i + 1) * w], &q);
            ranked.push((d, i as u32));
        }
        keep_best(&mut ranked, candidates, |a| a.0 as f32);

        // 2. Asymmetric score of the candidates: Σ q_i · (±1 by the candidate's sign bit).
        let lut = byte_tables(query, dim);
        let bytes = dim.div_ceil(8);
        let mut scored: Vec<(f32, u32)> = ranked
            .iter()
            .map(|&(_, i)| {
                let code = &codes.bits[i as usize * w..(i as usize + 1) * w];
                let mut s = 0.0f32;
                for b in 0..bytes {
                    let byte = (code[b / 8] >> ((b % 8) * 8)) as u8;
                    s += lut[b * 256 + byte as usize];
                }
                (-s, i)
            })
            .collect();
        keep_best(&mut scored, rerank, |a| a.0);

        // 3. Exact cosine from the stored vectors.
        let ids: Vec<i64> = scored.iter().map(|&(_, i)| codes.ids[i as usize]).collect();
        drop(st);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(s) = vectors::score(conn, space, id, query)? {
                out.push((id, s));
            }
        }
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(k);
        Ok(Some(out))
    }

    /// Loads the codes of `space` if missing, or applies its dirty chunks; false when the
    /// space is too small to have codes.
    fn refresh(
        st: &mut State,
        conn: &Connection,
        space: &Space,
        min_vectors: usize,
    ) -> Result<bool> {
        let (table, dim) = (space.table.as_str(), space.dim);
        let epoch: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if st.epoch != Some(epoch) {
            st.tables.clear();
            st.small.clear();
            st.dirty.clear();
            st.epoch = Some(epoch);
        }
        // Only the searched table is kept: a replaced space's codes go.
        st.tables.retain(|t, c| t == table && c.dim == dim);
        st.dirty.retain(|t, _| t == table);
        st.small.retain(|t, _| t == table);
        let mut count = None;
        if !st.tables.contains_key(table) {
            let n = match st.small.get(table) {
                Some(n) => *n,
                None => vectors::count(conn, space)?,
            };
            if n < min_vectors {
                st.small.insert(table.to_string(), n);
                return Ok(false);
            }
            count = Some(n);
        }
        let rebuild = match (st.tables.get(table), st.dirty.get(table)) {
            (None, _) => true,
            // Bulk changes: one scan beats many point reads.
            (Some(c), Some(d)) => d.len() > 1000 && d.len() > c.len() / 4,
            (Some(_), None) => false,
        };
        if rebuild {
            let started = std::time::Instant::now();
            let codes = load(conn, space, count)?;
            if codes.len() >= 10_000 {
                tracing::info!(
                    table,
                    vectors = codes.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "vector codes built"
                );
            }
            st.dirty.remove(table);
            st.tables.insert(table.to_string(), codes);
            return Ok(true);
        }
        let Some(dirty) = st.dirty.remove(table) else {
            return Ok(true);
        };
        let Some(codes) = st.tables.get_mut(table) else {
            return Ok(false);
        };
        for id in dirty {
            match vectors::get(conn, space, id)? {
                Some(v) => codes.upsert(id, &v),
                None => codes.remove(id),
            }
        }
        // A space that shrank well below the threshold gives its memory back.
        if codes.len() < min_vectors / 2 {
            let n = codes.len();
            st.tables.remove(table);
            st.small.insert(table.to_string(), n);
            return Ok(false);
        }
        Ok(true)
    }
}

/// The codes of `space`: an int8 space's from its rows; a vec0 space's from `vector_codes` when
/// its rows match the vector count (`count`, if known), else computed from the vectors
/// themselves and written back for next time.
fn load(conn: &Connection, space: &Space, count: Option<usize>) -> Result<Codes> {
    let table = &space.table;
    let mut codes = Codes::new(space.dim);
    if space.storage == Storage::Int8 {
        // Computed from the int8 rows (a quarter of the floats), never stored.
        vectors::for_each(conn, space, |id, v| {
            codes.upsert(id, &v);
            Ok(())
        })?;
        return Ok(codes);
    }
    let vectors = match count {
        Some(n) => n,
        None => vectors::count(conn, space)?,
    };
    let stored: i64 = conn.query_row(
        "SELECT count(*) FROM vector_codes WHERE space_id = ?1",
        [space.id],
        |r| r.get(0),
    )?;
    if stored.max(0) as usize == vectors {
        let mut stmt =
            conn.prepare_cached("SELECT chunk_id, code FROM vector_codes WHERE space_id = ?1")?;
        let mut rows = stmt.query([space.id])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            if let Ok(code) = r.get_ref(1)?.as_blob() {
                codes.upsert_code(id, code);
            }
        }
        return Ok(codes);
    }
    let mut stmt = conn.prepare(&format!("SELECT chunk_id, embedding FROM {table}"))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        if let Some(v) = r.get_ref(1)?.as_blob().ok().and_then(floats) {
            codes.upsert(id, &v);
        }
    }
    // Written back (a space from before `vector_codes`, or out of step): best effort, the
    // codes in memory serve this search either way.
    let written = (|| -> Result<()> {
        let tx = conn.unchecked_transaction()?;
        tx.execute("DELETE FROM vector_codes WHERE space_id = ?1", [space.id])?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO vector_codes (space_id, chunk_id, code) VALUES (?1, ?2, ?3)",
            )?;
            let w = codes.words;
            for (i, id) in codes.ids.iter().enumerate() {
                let bytes: Vec<u8> = codes.bits[i * w..(i + 1) * w]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .take(space.dim.div_ceil(8))
                    .collect();
                ins.execute(rusqlite::params![space.id, id, bytes])?;
            }
        }
        tx.commit()?;
        Ok(())
    })();
    if let Err(e) = written {
        tracing::warn!(table = %table, error = %e, "could not store vector codes");
    }
    Ok(codes)
}

/// Little-endian words of a stored code (missing bytes are zero).
fn words_of(code: &[u8], out: &mut [u64]) {
    for (w, word) in out.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        for (k, byte) in b.iter_mut().enumerate() {
            *byte = code.get(w * 8 + k).copied().unwrap_or(0);
        }
        *word = u64::from_le_bytes(b);
    }
}

/// Keeps the `n` smallest entries of `v` (by `key`), sorted.
fn keep_best<T: Copy>(v: &mut Vec<T>, n: usize, key: impl Fn(&T) -> f32) {
    if v.len() > n && n > 0 {
        v.select_nth_unstable_by(n - 1, |a, b| key(a).total_cmp(&key(b)));
        v.truncate(n);
    }
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
}

/// For each byte position `b` of a code and each byte value: Σ over its 8 bits of
/// `±query[8b + t]` (plus when the bit is set).
fn byte_tables(query: &[f32], dim: usize) -> Vec<f32> {
    let bytes = dim.div_ceil(8);
    let mut lut = vec![0f32; bytes * 256];
    for b in 0..bytes {
        let q: [f32; 8] = std::array::from_fn(|t| query.get(b * 8 + t).copied().unwrap_or(0.0));
        for value in 0..256usize {
            lut[b * 256 + value] = (0..8)
                .map(|t| if value >> t & 1 == 1 { q[t] } else { -q[t] })
                .sum();
        }
    }
    lut
}

fn floats(blob: &[u8]) -> Option<Vec<f32>> {
    if !blob.len().is_multiple_of(4) {
        return None;
    }
    Some(
        blob.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

#[cfg(test)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn popcount_generic(a: &[u64], b: &[u64]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn popcount_hw(a: &[u64], b: &[u64]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// Hamming distance, with the CPU's popcount instruction when it has one.
fn popcount_fn() -> fn(&[u64], &[u64]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU supports popcnt, checked just above.
            return |a, b| unsafe { popcount_hw(a, b) };
        }
    }
    popcount_generic
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::quant::tests::unit;
    use rand::SeedableRng;

    fn install(ann: &Ann, conn: &Connection) {
        let ann = ann.clone();
        conn.update_hook(Some(
            move |_: rusqlite::hooks::Action, _: &str, table: &str, rowid: i64| {
                ann.note(table, rowid)
            },
        ))
        .expect("hook");
    }

    /// Creates space 1's vector table and `vector_codes` on `conn`.
    fn create_tables(conn: &Connection, dim: usize) {
        conn.execute_batch(&format!(
            "CREATE VIRTUAL TABLE vec_1 USING vec0 (chunk_id INTEGER PRIMARY KEY,
             embedding float[{dim}], chunk_size = 128); {}",
            include_str!("../../schema/workspace/0005_vector_codes.sql")
        ))
        .expect("table");
    }

    fn table(dim: usize) -> Connection {
        crate::db::register_sqlite_vec();
        let conn = Connection::open_in_memory().expect("db");
        create_tables(&conn, dim);
        conn
    }

    /// `n` random unit vectors (ids 1..=n) put into `conn`, with an `Ann` hooked to it.
    fn filled(
        conn: &Connection,
        dim: usize,
        n: i64,
        rng: &mut rand::rngs::StdRng,
    ) -> (Ann, HashMap<i64, Vec<f32>>) {
        let ann = Ann::default();
        install(&ann, conn);
        let mut vs = HashMap::new();
        for id in 1..=n {
            let v = unit(rng, dim);
            put(conn, id, &v);
            vs.insert(id, v);
        }
        (ann, vs)
    }

    fn space(dim: usize) -> Space {
        Space::new(
            1,
            "vec_1".into(),
            crate::knowledge::EmbedderConfig::Static,
            dim,
        )
    }

    fn put(conn: &Connection, id: i64, v: &[f32]) {
        crate::knowledge::vectors::put(conn, &space(v.len()), id, v).expect("put");
    }

    fn exact(vs: &HashMap<i64, Vec<f32>>, q: &[f32], k: usize) -> Vec<i64> {
        let mut all: Vec<(i64, f32)> = vs.iter().map(|(id, v)| (*id, dot(v, q))).collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.into_iter().take(k).map(|x| x.0).collect()
    }

    #[test]
    fn small_spaces_are_exact_and_writes_rollbacks_and_deletes_are_seen() {
        let dim = 48;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut conn = table(dim);
        let (ann, mut vs) = filled(&conn, dim, 40, &mut rng);
        let q = unit(&mut rng, dim);
        // Below the threshold a space holds no codes.
        let none = ann
            .search(&conn, &space(dim), &q, 5, &AnnParams::default(), None)
            .expect("search");
        assert!(none.is_none() && ann.lock().tables.is_empty());
        let p = AnnParams {
            min_vectors: 0,
            ..AnnParams::default()
        };
        let got = |conn: &Connection| -> Vec<i64> {
            ann.search(conn, &space(dim), &q, 5, &p, None)
                .expect("search")
                .expect("codes")
                .into_iter()
                .map(|x| x.0)
                .collect()
        };
        assert_eq!(got(&conn), exact(&vs, &q, 5));
        // A committed insert of the query itself comes first.
        put(&conn, 100, &q);
        vs.insert(100, q.clone());
        assert_eq!(got(&conn)[0], 100);
        // A deleted vector disappears.
        conn.execute("DELETE FROM vec_1 WHERE chunk_id = 100", [])
            .expect("delete");
        vs.remove(&100);
        assert_eq!(got(&conn), exact(&vs, &q, 5));
        // A rolled-back insert leaves nothing behind.
        {
            let tx = conn.transaction().expect("tx");
            put(&tx, 200, &q);
            tx.rollback().expect("rollback");
        }
        assert_eq!(got(&conn), exact(&vs, &q, 5));
        // A filter admits only its chunks.
        let allowed: HashSet<u64> = (1..=10).collect();
        let filtered = ann
            .search(&conn, &space(dim), &q, 3, &p, Some(&allowed))
            .expect("filtered")
            .expect("codes");
        let only: HashMap<i64, Vec<f32>> = vs
            .iter()
            .filter(|(id, _)| allowed.contains(&(**id as u64)))
            .map(|(a, b)| (*a, b.clone()))
            .collect();
        assert_eq!(
            filtered.into_iter().map(|x| x.0).collect::<Vec<_>>(),
            exact(&only, &q, 3)
        );
    }

    #[test]
    fn an_int8_space_is_searched_from_its_rows_and_its_writes_are_seen() {
        let dim = 48;
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        crate::db::register_sqlite_vec();
        let conn = Connection::open_in_memory().expect("db");
        let q8 = Space::new(
            1,
            "vq_1".into(),
            crate::knowledge::EmbedderConfig::Static,
            dim,
        );
        conn.execute_batch(&vectors::create_table_sql("vq_1", dim, 8))
            .expect("table");
        let ann = Ann::default();
        install(&ann, &conn);
        for id in 1..=300 {
            vectors::put_new(&conn, &q8, id, &unit(&mut rng, dim)).expect("put");
        }
        let p = AnnParams {
            min_vectors: 0,
            candidates: 300,
            rerank: 300,
        };
        let q = unit(&mut rng, dim);
        // Every candidate re-ranked: the answer is the exact scan's, scores included.
        let got = |conn: &Connection| {
            ann.search(conn, &q8, &q, 5, &p, None)
                .expect("search")
                .expect("codes")
        };
        assert_eq!(got(&conn), vectors::knn(&conn, &q8, &q, 5).expect("knn"));
        // No codes are stored for an int8 space.
        let codes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'vector_codes'",
                [],
                |r| r.get(0),
            )
            .expect("schema");
        assert_eq!(codes, 0);
        // An insert, a replacement and a delete reach the codes through the update hook.
        vectors::put_new(&conn, &q8, 1000, &q).expect("insert");
        assert_eq!(got(&conn)[0].0, 1000);
        let away: Vec<f32> = q.iter().map(|x| -x).collect();
        vectors::put(&conn, &q8, 1000, &away).expect("replace");
        assert_ne!(got(&conn)[0].0, 1000);
        vectors::put(&conn, &q8, 1000, &q).expect("replace back");
        assert_eq!(got(&conn)[0].0, 1000);
        conn.execute("DELETE FROM vq_1 WHERE chunk_id = 1000", [])
            .expect("delete");
        assert_eq!(got(&conn), vectors::knn(&conn, &q8, &q, 5).expect("knn"));
    }

    #[test]
    fn another_connections_writes_are_seen() {
        let dim = 16;
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("v.db");
        crate::db::register_sqlite_vec();
        let conn = Connection::open(&path).expect("db");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("wal");
        create_tables(&conn, dim);
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let (ann, _) = filled(&conn, dim, 20, &mut rng);
        let p = AnnParams {
            min_vectors: 0,
            ..AnnParams::default()
        };
        let q = unit(&mut rng, dim);
        let top = |conn: &Connection| {
            ann.search(conn, &space(dim), &q, 1, &p, None)
                .expect("search")
                .expect("codes")[0]
                .0
        };
        assert_ne!(top(&conn), 99);
        // Another process adds the query itself: the next search rebuilds and finds it.
        let other = Connection::open(&path).expect("other");
        put(&other, 99, &q);
        drop(other);
        assert_eq!(top(&conn), 99);
    }

    #[test]
    fn large_spaces_keep_most_of_the_exact_neighbours() {
        // Random vectors are the hard case for sign codes; real embeddings do better.
        let dim = 64;
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let conn = table(dim);
        let (ann, vs) = filled(&conn, dim, 3000, &mut rng);
        let p = AnnParams {
            min_vectors: 1000,
            candidates: 600,
            rerank: 60,
        };
        let mut hit = 0;
        for _ in 0..20 {
            let q = unit(&mut rng, dim);
            let want = exact(&vs, &q, 10);
            let got = ann
                .search(&conn, &space(dim), &q, 10, &p, None)
                .expect("search")
                .expect("codes");
            hit += got.iter().filter(|x| want.contains(&x.0)).count();
        }
        assert!(hit >= 150, "recall@10 {hit}/200");
    }

    #[test]
    fn codes_are_stored_with_the_vectors_and_written_back_when_missing() {
        let dim = 20;
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let conn = table(dim);
        let vs: Vec<Vec<f32>> = (0..30).map(|_| unit(&mut rng, dim)).collect();
        for (i, v) in vs.iter().enumerate() {
            put(&conn, i as i64 + 1, v);
        }
        let stored = |conn: &Connection| -> HashMap<i64, Vec<u8>> {
            let mut stmt = conn
                .prepare("SELECT chunk_id, code FROM vector_codes WHERE space_id = 1")
                .expect("select");
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("rows")
                .collect::<rusqlite::Result<_>>()
                .expect("codes")
        };
        let first = stored(&conn);
        assert_eq!(first.len(), 30);
        assert_eq!(first[&1], code_of(&vs[0]));
        // Loaded from the table, the codes equal those computed from the vectors.
        let from_table = load(&conn, &space(dim), None).expect("load");
        conn.execute("DELETE FROM vector_codes", []).expect("clear");
        let from_vectors = load(&conn, &space(dim), None).expect("load");
        assert_eq!(from_table.ids.len(), from_vectors.ids.len());
        for (i, id) in from_vectors.ids.iter().enumerate() {
            let j = from_table.pos[id];
            let w = from_table.words;
            assert_eq!(
                from_table.bits[j * w..(j + 1) * w],
                from_vectors.bits[i * w..(i + 1) * w]
            );
        }
        // ... and the missing rows were written back.
        assert_eq!(stored(&conn), first);
    }

    #[test]
    fn codes_swap_remove_keeps_positions() {
        let mut c = Codes::new(70);
        let a = vec![1.0; 70];
        let mut b = vec![-1.0; 70];
        b[69] = 1.0;
        c.upsert(1, &a);
        c.upsert(2, &b);
        c.upsert(3, &a);
        c.remove(1);
        assert_eq!(c.len(), 2);
        assert_eq!(c.pos[&3], 0);
        assert_eq!(c.bits.len(), 2 * c.words);
        assert_eq!(c.bits[0], u64::MAX);
        c.remove(42);
        assert_eq!(c.len(), 2);
    }
}
