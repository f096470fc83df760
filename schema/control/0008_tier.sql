-- Tiered storage (issue 17): which generation of a workspace the object store holds, and
-- whether that copy is the current one ('offloaded': a local folder may be opened only if it is
-- exactly that generation) or the local folder is ('local': written since, or never offloaded).
-- No row: local, never offloaded.
CREATE TABLE workspace_tier (
    workspace_id TEXT PRIMARY KEY REFERENCES workspaces(id) ON DELETE CASCADE,
    generation INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('local', 'offloaded')),
    -- Bytes of the generation's files (what a local copy of it takes).
    bytes INTEGER NOT NULL DEFAULT 0,
    -- Documents in that generation (quotas count an offloaded workspace without hydrating it).
    documents INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
);
CREATE INDEX workspace_tier_state ON workspace_tier (state);
