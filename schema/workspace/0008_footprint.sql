-- Issue 16 (footprint). A document sent as text (a JSON body) has no original file: its text
-- waits here until the document is indexed (then the chunks hold it) and is deleted in the
-- same transaction that marks it indexed. Uploaded files keep their blob in `blobs/`.
CREATE TABLE IF NOT EXISTS document_bodies (
    document_id TEXT PRIMARY KEY REFERENCES documents (id) ON DELETE CASCADE,
    body        BLOB NOT NULL
) WITHOUT ROWID;
-- An ingestion job's payload carries the document's own vector only until it is stored in the
-- vector table (5 KB of JSON for 256 dimensions): finished jobs no longer keep it.
UPDATE jobs SET payload = '{}'
WHERE kind = 'ingest' AND payload <> '{}'
  AND (status IN ('succeeded', 'failed', 'cancelled') OR phase <> 'queued');
