-- The persistence schema of `serve`: exercises, their delivery records and the
-- control audit log. Portable SQL: the same file runs on SQLite and PostgreSQL.
-- Times are BIGINT unix milliseconds (wall clock).

CREATE TABLE exercises (
    id                   TEXT PRIMARY KEY,
    name                 TEXT,
    scenario_json        TEXT NOT NULL,
    state                TEXT NOT NULL,
    run                  BIGINT NOT NULL,
    speed                DOUBLE PRECISION NOT NULL,
    duration_secs        BIGINT NOT NULL,
    started_wall_ms      BIGINT,
    paused_total_ms      BIGINT NOT NULL,
    paused_since_wall_ms BIGINT,
    created_wall_ms      BIGINT NOT NULL,
    updated_wall_ms      BIGINT NOT NULL,
    -- The node holding the lease, and the fencing epoch every write will check.
    owner                TEXT,
    epoch                BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX exercises_by_created ON exercises (created_wall_ms, id);

-- One row per (team, inject) pair of one run of an exercise.
CREATE TABLE deliveries (
    exercise_id       TEXT NOT NULL REFERENCES exercises (id) ON DELETE CASCADE,
    run               BIGINT NOT NULL,
    team_id           TEXT NOT NULL,
    inject_id         TEXT NOT NULL,
    -- Order within the run.
    position          BIGINT NOT NULL,
    due_secs          BIGINT NOT NULL,
    status            TEXT NOT NULL,
    attempts          BIGINT NOT NULL,
    due_wall_ms       BIGINT,
    published_wall_ms BIGINT,
    -- Written once: the first confirmation stands.
    acked_wall_ms     BIGINT,
    received_wall_ms  BIGINT,
    latency_ms        DOUBLE PRECISION,
    late              BOOLEAN NOT NULL,
    last_error        TEXT,
    -- The inject itself, for injects added live; NULL for scenario injects.
    inject_json       TEXT,
    PRIMARY KEY (exercise_id, run, team_id, inject_id)
);

-- Status first, on purpose: an index whose prefix is (exercise_id, run) competes
-- with the primary key, and PostgreSQL, before it has statistics for freshly
-- inserted rows, picks the smaller index and scans every record of the run for
-- each keyed update (10,000 single-row saves: 6 s instead of 0.2 s). Reading a
-- run in position order scans the primary key's (exercise_id, run) prefix and
-- sorts.
CREATE INDEX deliveries_by_status ON deliveries (status, exercise_id, run);

CREATE TABLE control_log (
    id          BIGINT PRIMARY KEY,
    exercise_id TEXT NOT NULL REFERENCES exercises (id) ON DELETE CASCADE,
    at_wall_ms  BIGINT NOT NULL,
    command     TEXT NOT NULL,
    reason      TEXT,
    source      TEXT NOT NULL,
    accepted    BOOLEAN NOT NULL,
    message     TEXT
);

CREATE INDEX control_log_by_exercise ON control_log (exercise_id, id);

-- Portable id assignment: SQLite's INTEGER PRIMARY KEY and PostgreSQL's identity
-- columns have no common spelling, so ids come from a counter row, taken under
-- the row lock of the inserting transaction.
CREATE TABLE id_counters (
    name    TEXT PRIMARY KEY,
    last_id BIGINT NOT NULL
);

INSERT INTO id_counters (name, last_id) VALUES ('control_log', 0);
