-- Identity: users, sessions, memberships, invitations, workspace API keys, the signing keys of
-- tenant tokens, and the operator audit log. Secrets are never stored: only SHA-256 digests of
-- high-entropy tokens, and Argon2id hashes (PHC strings) of passwords.

CREATE TABLE users (
    id              TEXT PRIMARY KEY,            -- UUID v7
    email           TEXT NOT NULL,               -- stored lowercased
    name            TEXT NOT NULL DEFAULT '',
    password_hash   TEXT NOT NULL,               -- Argon2id PHC string
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE UNIQUE INDEX users_email ON users (email);

CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_sha256    TEXT NOT NULL,               -- hex digest of the opaque bearer token
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL
);
CREATE UNIQUE INDEX sessions_token ON sessions (token_sha256);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE memberships (
    org_id          TEXT NOT NULL REFERENCES orgs (id),
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE invitations (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES orgs (id),
    email           TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    token_sha256    TEXT NOT NULL,
    invited_by      TEXT,                        -- user id, or NULL for the operator
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    accepted_at     TEXT
);
CREATE UNIQUE INDEX invitations_token ON invitations (token_sha256);
CREATE INDEX invitations_org ON invitations (org_id);

CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES orgs (id),
    workspace_id    TEXT NOT NULL REFERENCES workspaces (id),
    name            TEXT NOT NULL,
    prefix          TEXT NOT NULL,               -- public part, shown in lists, used for lookup
    secret_sha256   TEXT NOT NULL,               -- hex SHA-256 of the whole key
    scopes          TEXT NOT NULL,               -- comma-separated: search,chat,ingest,manage
    created_by      TEXT,                        -- user id, or NULL (operator / command line)
    created_at      TEXT NOT NULL,
    expires_at      TEXT,
    revoked_at      TEXT,
    last_used_at    TEXT                         -- flushed from memory periodically
);
CREATE UNIQUE INDEX api_keys_prefix ON api_keys (prefix);
CREATE INDEX api_keys_workspace ON api_keys (workspace_id, id);

-- HMAC-SHA256 secrets that sign tenant tokens. The newest unretired one signs; every unretired
-- one verifies (so a rotation does not cut off tokens already handed out, unless asked to).
CREATE TABLE token_signing_keys (
    kid             TEXT PRIMARY KEY,
    secret_hex      TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    retired_at      TEXT
);

-- What the operator did across orgs: who, what, which org and workspace, when.
CREATE TABLE operator_audit (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              TEXT NOT NULL,
    actor           TEXT NOT NULL,               -- 'operator' (HTTP) or 'cli'
    action          TEXT NOT NULL,               -- e.g. 'POST /v1/orgs/{org}/suspend'
    path            TEXT NOT NULL DEFAULT '',
    status          INTEGER,
    org_id          TEXT,
    workspace_id    TEXT,
    request_id      TEXT,
    client          TEXT
);
CREATE INDEX operator_audit_org ON operator_audit (org_id, id);
