-- Several `serve` processes on one PostgreSQL database (SPEC section 8).
-- Portable SQL like every migration; only PostgreSQL uses these tables
-- (SQLite is single-node). Times are BIGINT unix milliseconds, always computed
-- by the database (`now()`), never by a node.

-- One row per node, kept alive by its heartbeat.
CREATE TABLE nodes (
    node_id      TEXT PRIMARY KEY,
    -- Where its peers reach its HTTP API (NODE_ADDRESS).
    address      TEXT NOT NULL,
    -- 'cluster' (external broker) or 'single' (embedded broker: no peers allowed).
    mode         TEXT NOT NULL,
    started_ms   BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL,
    expires_ms   BIGINT NOT NULL,
    -- Set by SIGTERM: the node hands its exercises over and takes no new ones.
    draining     BOOLEAN NOT NULL
);

-- Who runs each exercise. The epoch is the fencing token: every claim raises
-- it, nothing lowers it, and every write of the exercise's state, clock or
-- delivery records checks it in the same transaction.
CREATE TABLE leases (
    exercise_id TEXT PRIMARY KEY REFERENCES exercises (id) ON DELETE CASCADE,
    -- NULL: free to claim.
    owner       TEXT,
    epoch       BIGINT NOT NULL,
    acquired_ms BIGINT,
    renewed_ms  BIGINT,
    expires_ms  BIGINT NOT NULL,
    -- Takeovers of this exercise so far (claims from another node's lease).
    takeovers   BIGINT NOT NULL
);

CREATE INDEX leases_by_owner ON leases (owner);
CREATE INDEX leases_by_expiry ON leases (expires_ms);
