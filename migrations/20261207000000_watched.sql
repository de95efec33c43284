-- Whether a team dashboard was open when a delivery first went out (only
-- then does its receipt measure on-screen latency), the exercise second it
-- went out, and the exercise second of each control action.
ALTER TABLE deliveries ADD COLUMN watched BOOLEAN;
ALTER TABLE deliveries ADD COLUMN sent_secs BIGINT;
ALTER TABLE control_log ADD COLUMN exercise_secs BIGINT;
-- Deliveries stored before this change went out when nobody recorded
-- whether a dashboard was open: their receipts keep measuring latency as
-- they did (from the due time), rather than losing it.
UPDATE deliveries SET watched = TRUE WHERE published_wall_ms IS NOT NULL;
