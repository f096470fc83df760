-- Agents (behaviour configurations), chat sessions and their messages.

CREATE TABLE agents (
    id            TEXT PRIMARY KEY,          -- UUID, hyphenated
    slug          TEXT NOT NULL,             -- unique among live agents of the workspace
    name          TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    type          TEXT NOT NULL DEFAULT 'assistant',
    system_prompt TEXT NOT NULL DEFAULT '',
    provider      TEXT,                      -- NULL: the org's provider if it has one, else extractive
    model         TEXT,                      -- NULL: the provider's default model
    temperature   REAL,
    max_tokens    INTEGER,
    tools         TEXT NOT NULL DEFAULT '[]',  -- JSON array of tool names
    public        INTEGER NOT NULL DEFAULT 1,  -- visible to everyone of the org who may read agents
    owner_id      TEXT,                      -- the creating user; NULL for operator / API key / default
    is_default    INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    deleted_at    TEXT                       -- soft delete
);
CREATE UNIQUE INDEX agents_live_slug ON agents (slug) WHERE deleted_at IS NULL;

-- Every workspace has a default agent, including those created before agents existed: the
-- migration runs once per store, when it is opened. Its id is a random (v4) UUID.
INSERT INTO agents (id, slug, name, description, system_prompt, tools, public, is_default,
                    created_at, updated_at)
VALUES (
    lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4'
        || substr(lower(hex(randomblob(2))), 2) || '-'
        || substr('89ab', 1 + abs(random() % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-'
        || lower(hex(randomblob(6))),
    'default',
    'Assistant',
    'Answers from this workspace''s documents, with citations.',
    'You are a helpful assistant. Answer from the passages of the knowledge base and cite them.',
    '["search", "get_document"]',
    1,
    1,
    strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
    strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
);

CREATE TABLE chat_sessions (
    id            TEXT PRIMARY KEY,          -- UUID v7
    agent_id      TEXT NOT NULL REFERENCES agents (id),
    owner         TEXT NOT NULL,             -- who started it: user:<id>, key:<id>, token:<key>:<sub>, operator
    title         TEXT NOT NULL DEFAULT '',
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX chat_sessions_owner ON chat_sessions (owner, id);

CREATE TABLE chat_messages (
    id            INTEGER PRIMARY KEY,
    session_id    TEXT NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    role          TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content       TEXT NOT NULL,
    citations     TEXT NOT NULL DEFAULT '[]',  -- JSON: [{marker, chunk_id, document_id, title, snippet}]
    tool_calls    TEXT NOT NULL DEFAULT '[]',  -- JSON: the tools the agent ran for this answer
    usage         TEXT,                        -- JSON: {prompt_tokens, completion_tokens, total_tokens}
    provider      TEXT,
    model         TEXT,
    created_at    TEXT NOT NULL
);
CREATE INDEX chat_messages_session ON chat_messages (session_id, id);
