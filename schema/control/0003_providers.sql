-- Model providers of an organization (bring your own key). The API key is sealed with
-- ChaCha20-Poly1305 under the server's master key, with the org id as associated data: a sealed
-- key copied to another org's row does not open. Nothing here is ever returned in clear.

CREATE TABLE org_providers (
    org_id          TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name            TEXT NOT NULL CHECK (name IN ('openai-compatible')),
    base_url        TEXT NOT NULL,
    model           TEXT NOT NULL,
    key_nonce       BLOB,                    -- 12 bytes
    key_sealed      BLOB,                    -- ciphertext || tag
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (org_id, name)
);
