-- Issue 16 (disk): vectors are stored as int8 (a byte per dimension and a scale, see
-- knowledge::quant) in a plain table `vq_<space id>` instead of sqlite-vec's float `vec0`
-- table. Spaces that hold vectors keep their vec0 table (both are read alike); the default
-- space of a workspace without chunks (every new workspace) moves to int8 here. SQL cannot
-- create or drop a table conditionally, so `vq_1` is made in every store and, where the default
-- space keeps its vec0 table, stays unused (one page) until an embedder change drops the
-- unused one of `chunk_vectors` / `vq_1` (knowledge::vectors::drop_space).
CREATE TABLE IF NOT EXISTS vq_1 (chunk_id INTEGER PRIMARY KEY, v BLOB NOT NULL) STRICT;
UPDATE vector_spaces SET table_name = 'vq_1'
WHERE id = 1 AND table_name = 'chunk_vectors' AND NOT EXISTS (SELECT 1 FROM chunks);
