-- API tokens issued by an admin: only their SHA-256 is kept.
CREATE TABLE api_tokens (
    id              TEXT PRIMARY KEY,
    name            TEXT,
    role            TEXT NOT NULL,
    hash            TEXT NOT NULL UNIQUE,
    created_wall_ms BIGINT NOT NULL
);
