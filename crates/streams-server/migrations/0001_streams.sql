-- One row per stream: what it was created with. Everything an append changes (bytes, producer
-- state, Stream-Seq, closure) lives in the stream's segment file instead, so that it is
-- committed with the data by the same fdatasync.
CREATE TABLE streams (
    id              INTEGER PRIMARY KEY,
    path            TEXT    NOT NULL UNIQUE,
    content_type    TEXT    NOT NULL,
    ttl_secs        INTEGER,
    expires_at      TEXT,
    expires_at_ms   INTEGER,
    fork_source     INTEGER REFERENCES streams (id),
    fork_at         INTEGER NOT NULL DEFAULT 0,
    fork_sub_offset INTEGER NOT NULL DEFAULT 0,
    created_ms      INTEGER NOT NULL,
    -- Renewals by reads are written lazily (about once a second); appends also stamp their
    -- records, and recovery takes the later of the two.
    last_access_ms  INTEGER NOT NULL,
    soft_deleted    INTEGER NOT NULL DEFAULT 0
) STRICT;
