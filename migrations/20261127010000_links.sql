-- Service-wide settings, such as the secret team links are signed with.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Each team's dashboard link: its generation (every re-issue or revocation
-- moves it on, so earlier tokens fail), when it expires, whether revoked.
CREATE TABLE team_links (
    exercise_id    TEXT NOT NULL REFERENCES exercises (id) ON DELETE CASCADE,
    team_id        TEXT NOT NULL,
    generation     BIGINT NOT NULL,
    expires_unix   BIGINT NOT NULL,
    revoked        BOOLEAN NOT NULL,
    PRIMARY KEY (exercise_id, team_id)
);
