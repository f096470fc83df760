-- Issue 12 (part B): the control plane's audit trail becomes a hash chain that records every
-- org- and server-level action by anyone (users, API keys, tenant tokens, the operator, the
-- command line), and the usage counters are kept per org, workspace and day.

-- operator_audit is the control plane's audit chain. Rows written before this migration have no
-- hash: they are reported by `enclave audit verify` as not verifiable, and the chain starts after
-- them.
ALTER TABLE operator_audit ADD COLUMN actor_id TEXT;      -- user id, API key id, token subject...
ALTER TABLE operator_audit ADD COLUMN target TEXT;        -- what was acted on, e.g. 'org:<id>'
ALTER TABLE operator_audit ADD COLUMN outcome TEXT;       -- success | denied | failed | error
ALTER TABLE operator_audit ADD COLUMN prev_hash TEXT;     -- hash of the entry before (hex)
ALTER TABLE operator_audit ADD COLUMN hash TEXT;          -- SHA-256 over prev_hash and this entry
CREATE INDEX operator_audit_at ON operator_audit (at);

-- Usage counters: one row per org, workspace ('' for org-wide counters), UTC day and metric.
-- Counters add up; gauges (storage_bytes, documents) keep the largest sample of the day.
CREATE TABLE usage_daily (
    org_id        TEXT NOT NULL,
    workspace_id  TEXT NOT NULL DEFAULT '',
    day           TEXT NOT NULL,              -- YYYY-MM-DD (UTC)
    metric        TEXT NOT NULL,
    value         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, day, workspace_id, metric)
) WITHOUT ROWID;
CREATE INDEX usage_daily_day ON usage_daily (day);
