-- Rate limits across restarts: per batch and limit key, the GCRA timestamp (TAT, microseconds
-- since the Unix epoch) a run may have spent up to, written in the claim that spends it, so a run
-- that was killed and rerun starts at least as spent as the one it follows. Same shape and keys
-- as Postgres's `limit_rate`, which there holds the shared schedule itself.
CREATE TABLE limit_rate (
    key     TEXT    PRIMARY KEY,
    tat_us  INTEGER NOT NULL
) WITHOUT ROWID;
