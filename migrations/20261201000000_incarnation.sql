-- Which life of an exercise id a row is: a random value drawn when the
-- exercise is created. Team links name it, so a link of a deleted exercise
-- opens nothing in a new one of the same id. Empty for exercises stored
-- before it existed; they draw theirs at the next start.
ALTER TABLE exercises ADD COLUMN incarnation TEXT NOT NULL DEFAULT '';
