-- Control plane: plans, organizations, workspaces and server settings.
-- Users, memberships, invitations, API keys, usage and the operator audit log come in later
-- migrations (0002+).

CREATE TABLE plans (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    -- Weight of the plan's orgs in the job scheduler (higher = more share).
    priority    INTEGER NOT NULL CHECK (priority > 0),
    limits      TEXT NOT NULL DEFAULT '{}'
);

INSERT INTO plans (id, name, priority, limits) VALUES
    ('free',       'Free',       1, '{"workspaces": 3,    "documents": 10000}'),
    ('team',       'Team',       2, '{"workspaces": 50,   "documents": 500000}'),
    ('enterprise', 'Enterprise', 4, '{"workspaces": null, "documents": null}');

CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,            -- UUID v7, hyphenated
    name        TEXT NOT NULL,
    slug        TEXT NOT NULL,
    plan        TEXT NOT NULL REFERENCES plans (id),
    status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleted')),
    settings    TEXT NOT NULL DEFAULT '{}',  -- JSON object
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    deleted_at  TEXT
);

-- A slug is unique among the orgs that are not deleted.
CREATE UNIQUE INDEX orgs_slug ON orgs (slug) WHERE status <> 'deleted';

CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,            -- UUID v7, hyphenated; also the folder name
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    name        TEXT NOT NULL,
    slug        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted')),
    settings    TEXT NOT NULL DEFAULT '{}',  -- JSON object
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    deleted_at  TEXT
);

-- A slug is unique within its org among the workspaces that are not deleted.
CREATE UNIQUE INDEX workspaces_slug ON workspaces (org_id, slug) WHERE status <> 'deleted';
CREATE INDEX workspaces_org ON workspaces (org_id, id);

-- Server-wide settings, e.g. the hash of the operator token.
CREATE TABLE server_settings (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
