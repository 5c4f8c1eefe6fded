-- API keys: only a SHA-256 of the key is stored; the key itself is shown once at creation.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    team TEXT NOT NULL,
    allowed_models TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked BIGINT NOT NULL DEFAULT 0
);
