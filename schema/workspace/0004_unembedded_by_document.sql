-- "Has this document chunks still waiting for vectors?" is asked once per document after each
-- embedding batch. With only the (embedded, id) index it walked every unembedded chunk of the
-- workspace, so bulk ingestion slowed as the backlog grew; this partial index answers it directly.
CREATE INDEX IF NOT EXISTS chunks_unembedded_by_document ON chunks (document_id) WHERE embedded = 0;
