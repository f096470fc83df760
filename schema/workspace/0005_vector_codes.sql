-- The sign bits of every vector (bit i in byte i / 8, bit i % 8), written with the vector in the
-- same transaction. Large spaces load them into memory for approximate search
-- (knowledge::ann): reading these ~40-byte rows is ~15x faster than reading the float vectors
-- back out of vec0. A space whose rows here do not match its vector count is rebuilt from vec0.
CREATE TABLE IF NOT EXISTS vector_codes (
    space_id    INTEGER NOT NULL,
    chunk_id    INTEGER NOT NULL,
    code        BLOB NOT NULL,
    PRIMARY KEY (space_id, chunk_id)
) WITHOUT ROWID;
