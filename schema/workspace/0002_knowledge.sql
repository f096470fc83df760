-- Knowledge: document fingerprints (dedup), pending external ids (atomic replacement), job
-- phases, vector spaces (one vec0 table per embedder/dimension) and the full-text generation.

-- SHA-256 of (content hash, title, metadata): identical documents are not indexed twice.
ALTER TABLE documents ADD COLUMN fingerprint TEXT;
CREATE INDEX documents_fingerprint ON documents (fingerprint);
-- The external id a pending document takes over once it is indexed (replacing the holder).
ALTER TABLE documents ADD COLUMN pending_external_id TEXT;
CREATE INDEX documents_pending_external_id ON documents (pending_external_id)
    WHERE pending_external_id IS NOT NULL;
CREATE INDEX documents_status ON documents (status, id);

-- Ingestion jobs go through phases: queued -> (extract, chunk, full text) -> embedding -> done.
ALTER TABLE jobs ADD COLUMN phase TEXT NOT NULL DEFAULT 'queued';
CREATE INDEX jobs_phase ON jobs (status, phase, id);
CREATE INDEX jobs_document ON jobs (document_id);

-- chunks.embedded: 0 = waiting for a vector in the active space, 1 = has one, 2 = gave up.
CREATE INDEX chunks_unembedded ON chunks (embedded, id) WHERE embedded = 0;

-- Vector spaces: a vec0 table per embedder configuration. One is 'active' (searched); while the
-- workspace switches embedder, a second one is 'building' (filled by a re-embedding job) and
-- replaces the active one when complete.
CREATE TABLE vector_spaces (
    id          INTEGER PRIMARY KEY,
    table_name  TEXT NOT NULL UNIQUE,
    embedder    TEXT NOT NULL,              -- JSON configuration (secrets redacted on output)
    dim         INTEGER NOT NULL CHECK (dim > 0 AND dim <= 8192),
    state       TEXT NOT NULL CHECK (state IN ('active', 'building')),
    created_at  TEXT NOT NULL
);
CREATE UNIQUE INDEX vector_spaces_state ON vector_spaces (state);

-- The table of the initial schema serves the default embedder.
INSERT INTO vector_spaces (table_name, embedder, dim, state, created_at)
VALUES ('chunk_vectors', '{"kind":"minilm"}', 384, 'active', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

-- Bumped by every transaction that changes the set of chunks; the Tantivy commit records the
-- generation it reflects, so a mismatch on open means the index must be repaired.
INSERT OR IGNORE INTO workspace_meta (key, value) VALUES ('fts_generation', '0');
