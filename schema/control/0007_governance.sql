-- Governance (issue 12, part A): plans with a full set of limits, per-org overrides, soft
-- deletion with a grace period.

-- Plans: custom plans are the operator's; built-in ones cannot be deleted.
ALTER TABLE plans ADD COLUMN builtin INTEGER NOT NULL DEFAULT 0;
ALTER TABLE plans ADD COLUMN created_at TEXT NOT NULL DEFAULT '';
ALTER TABLE plans ADD COLUMN updated_at TEXT NOT NULL DEFAULT '';

-- Every limit of the built-in plans, null = unlimited. Keys missing from a plan's JSON are
-- unlimited too (governance::plans::Limits).
UPDATE plans SET builtin = 1, limits = '{"workspaces": 3, "documents": 10000,
    "storage_bytes": 1073741824, "members": 5, "api_keys": 10, "upload_bytes": 26214400,
    "requests_per_minute_per_key": 600, "requests_per_minute_per_org": 1200,
    "chat_tokens_per_month": 1000000, "embedding_chunks_per_month": 200000}'
  WHERE id = 'free';
UPDATE plans SET builtin = 1, limits = '{"workspaces": 50, "documents": 500000,
    "storage_bytes": 53687091200, "members": 100, "api_keys": 500, "upload_bytes": 104857600,
    "requests_per_minute_per_key": 3000, "requests_per_minute_per_org": 12000,
    "chat_tokens_per_month": 50000000, "embedding_chunks_per_month": 10000000}'
  WHERE id = 'team';
UPDATE plans SET builtin = 1, limits = '{"workspaces": null, "documents": null,
    "storage_bytes": null, "members": null, "api_keys": null, "upload_bytes": null,
    "requests_per_minute_per_key": null, "requests_per_minute_per_org": null,
    "chat_tokens_per_month": null, "embedding_chunks_per_month": null}'
  WHERE id = 'enterprise';

-- An org's overrides of its plan's limits (a JSON object; a key set to null is unlimited).
ALTER TABLE orgs ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
-- Soft deletion: a deleted org or workspace keeps its data until purge_after (then the
-- background upkeep removes its folder and sets purged_at). Rows deleted before this migration
-- have no purge_after: they were meant to be gone and are purged as before.
ALTER TABLE orgs ADD COLUMN purge_after TEXT;
ALTER TABLE orgs ADD COLUMN purged_at TEXT;
ALTER TABLE workspaces ADD COLUMN purge_after TEXT;
ALTER TABLE workspaces ADD COLUMN purged_at TEXT;
-- Set on the workspaces an org deletion marked: restoring the org restores exactly these.
ALTER TABLE workspaces ADD COLUMN deleted_with_org INTEGER NOT NULL DEFAULT 0;
