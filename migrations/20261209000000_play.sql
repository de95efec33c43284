-- Two-way play (SPEC section 9). Each delivery record's play state (its
-- outcome, answer window, first answer, condition) as JSON, and every
-- response, post, score and decision of a run, appended, never changed:
-- an edited response is a later row for the same (team, inject).
ALTER TABLE deliveries ADD COLUMN play TEXT;

CREATE TABLE play_events (
    id            BIGINT PRIMARY KEY,
    exercise_id   TEXT NOT NULL REFERENCES exercises (id) ON DELETE CASCADE,
    run           BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    team_id       TEXT,
    subject       TEXT,
    body          TEXT NOT NULL,
    by_name       TEXT,
    source        TEXT NOT NULL,
    wall_ms       BIGINT NOT NULL,
    exercise_secs BIGINT NOT NULL
);

CREATE INDEX play_events_by_exercise ON play_events (exercise_id, run, id);

INSERT INTO id_counters (name, last_id) VALUES ('play_events', 0);
