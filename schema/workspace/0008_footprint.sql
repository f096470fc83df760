-- Issue 16 (footprint). What a document brings that its chunks will hold once indexed waits
-- here, not in a blob file nor in its job's payload, and the row is deleted in the transaction
-- that marks the document indexed (or failed): `body`, the text of a document sent as text (a
-- JSON body; uploaded files keep their blob in `blobs/`), and `embedding`, its own vector
-- (little-endian f32) when the embedder is user-provided.
CREATE TABLE IF NOT EXISTS document_bodies (
    document_id TEXT PRIMARY KEY REFERENCES documents (id) ON DELETE CASCADE,
    body        BLOB,
    embedding   BLOB
);
-- Payloads of older ingestion jobs carried the vector as JSON (5 KB for 256 dimensions), kept
-- after the job: finished jobs no longer keep it.
UPDATE jobs SET payload = '{}'
WHERE kind = 'ingest' AND payload <> '{}'
  AND (status IN ('succeeded', 'failed', 'cancelled') OR phase <> 'queued');
