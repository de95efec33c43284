-- Turn-based exercises: the turn under way (or just over); 0 before the start
-- and for exercises without turns.
ALTER TABLE exercises ADD COLUMN turn BIGINT NOT NULL DEFAULT 0;
