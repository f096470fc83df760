-- One workspace's own database. There is no workspace_id column anywhere: isolation is physical.

-- Key/value facts about this store (embedder configuration, index schema version, ...).
CREATE TABLE workspace_meta (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL
);

CREATE TABLE documents (
    id            TEXT PRIMARY KEY,          -- UUID v7, hyphenated
    external_id   TEXT UNIQUE,               -- the client's own id, unique in the workspace
    title         TEXT NOT NULL DEFAULT '',
    source_name   TEXT,                      -- original file name, when uploaded as a file
    mime_type     TEXT NOT NULL,
    content_hash  TEXT NOT NULL,             -- SHA-256 (hex) of the original: its address in blobs/
    byte_size     INTEGER NOT NULL,
    metadata      TEXT NOT NULL DEFAULT '{}',
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'indexing', 'indexed', 'failed')),
    error         TEXT,
    chunk_count   INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX documents_content_hash ON documents (content_hash);

-- Chunks are the unit of retrieval. Their integer id is shared with the Tantivy index and the
-- vector table, which are both derived from this table.
CREATE TABLE chunks (
    id            INTEGER PRIMARY KEY,
    document_id   TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ordinal       INTEGER NOT NULL,
    heading_path  TEXT NOT NULL DEFAULT '',
    text          TEXT NOT NULL,
    token_count   INTEGER NOT NULL DEFAULT 0,
    embedded      INTEGER NOT NULL DEFAULT 0,
    UNIQUE (document_id, ordinal)
);

-- L2-normalised embeddings (so L2 ranks like cosine). chunk_size 128 keeps small stores small.
CREATE VIRTUAL TABLE chunk_vectors USING vec0 (
    chunk_id INTEGER PRIMARY KEY,
    embedding float[384],
    chunk_size = 128
);

-- Background jobs (ingestion, re-embedding). They persist here and survive restarts.
CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,          -- UUID v7
    kind          TEXT NOT NULL,
    document_id   TEXT,
    status        TEXT NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    progress      REAL NOT NULL DEFAULT 0,
    attempts      INTEGER NOT NULL DEFAULT 0,
    payload       TEXT NOT NULL DEFAULT '{}',
    error         TEXT,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT
);
CREATE INDEX jobs_status ON jobs (status, id);

-- The workspace's own audit trail.
CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY,
    at            TEXT NOT NULL,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    detail        TEXT NOT NULL DEFAULT '{}'
);
