-- tem-core schema, SQLite flavour.
--
-- Every timestamp is an INTEGER count of milliseconds since the Unix epoch (UTC), so ordering,
-- arithmetic and durations are exact (no mixed text formats, no one-second quantisation).
-- JSON columns hold UTF-8 JSON text.

CREATE TABLE batch (
    id                    INTEGER PRIMARY KEY,
    code                  TEXT    NOT NULL UNIQUE,
    type                  TEXT    NOT NULL,
    status                TEXT    NOT NULL DEFAULT 'active'
                          CHECK (status IN ('active', 'interrupted', 'completed', 'cancelled')),
    metadata              TEXT,   -- JSON object supplied by the caller
    interruption_criteria TEXT,   -- JSON object, see interrupt.rs
    retry_policy          TEXT,   -- JSON object: max_attempts, backoff base/cap/jitter
    created_at            INTEGER NOT NULL,
    started_at            INTEGER, -- first claim of any of its tasks
    finished_at           INTEGER, -- reached completed/cancelled (cleared on resume)

    -- Task counts by status, maintained in the same transaction as every status change so that
    -- stats and "is this batch done?" are O(1) instead of a scan of the batch.
    total                 INTEGER NOT NULL DEFAULT 0,
    pending               INTEGER NOT NULL DEFAULT 0,
    running               INTEGER NOT NULL DEFAULT 0,
    completed             INTEGER NOT NULL DEFAULT 0,
    failed                INTEGER NOT NULL DEFAULT 0,
    cancelled             INTEGER NOT NULL DEFAULT 0,

    -- Attempt outcome counters (every attempt, not only terminal ones).
    retried               INTEGER NOT NULL DEFAULT 0,
    rate_limited          INTEGER NOT NULL DEFAULT 0,
    overloaded            INTEGER NOT NULL DEFAULT 0,
    timed_out             INTEGER NOT NULL DEFAULT 0,
    lost                  INTEGER NOT NULL DEFAULT 0,
    -- Terminal task failures since the last task success (tasks, not attempts).
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    first_finished_at     INTEGER,
    last_finished_at      INTEGER
);

CREATE INDEX batch_by_status ON batch (status, id);

CREATE TABLE task (
    id               INTEGER PRIMARY KEY,
    batch_id         INTEGER NOT NULL REFERENCES batch (id) ON DELETE CASCADE,
    type             TEXT    NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    priority         INTEGER NOT NULL DEFAULT 0,
    run_after        INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    cost             INTEGER NOT NULL DEFAULT 1 CHECK (cost >= 0),
    payload          TEXT    NOT NULL,
    result           TEXT,
    last_error       TEXT,
    -- The lease: who runs the task and until when. `lease_token` changes on every claim and
    -- fences every write of the holder (a worker whose lease was taken over cannot overwrite).
    -- A completed task keeps `lease_owner`: the worker of its successful attempt.
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    lease_token      INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    claimed_at       INTEGER, -- start of the current (or last) attempt
    first_started_at INTEGER,
    finished_at      INTEGER
);

-- The claim walks this index in (priority DESC, id) order inside one batch and never touches
-- the table for rows it skips: run_after and type are covered.
CREATE INDEX task_claim ON task (batch_id, priority DESC, id, run_after, type)
    WHERE status = 'pending';
-- The rescuer finds expired leases without scanning finished tasks.
CREATE INDEX task_lease ON task (lease_expires_at) WHERE status = 'running';
-- Inspection and bulk transitions by batch (resume, retry-failed, cancel, export). Status is
-- deliberately not in this index: batch_id never changes, so the hot path never updates it.
CREATE INDEX task_by_batch ON task (batch_id);

-- One row per attempt that did not succeed (failed, timed out, rate-limited, lost, aborted), so
-- a user can see why every attempt failed. A successful attempt is the task row itself
-- (claimed_at .. finished_at, lease_owner, attempt): copying it here would double the writes of
-- the common case for no information.
CREATE TABLE task_attempt (
    id          INTEGER PRIMARY KEY,
    task_id     INTEGER NOT NULL REFERENCES task (id) ON DELETE CASCADE,
    batch_id    INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    worker      TEXT,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('succeeded', 'retryable', 'non_retryable',
                        'rate_limited', 'overloaded', 'timeout', 'lease_expired', 'aborted')),
    http_status INTEGER,
    message     TEXT,
    retry_at    INTEGER  -- when the next attempt may start; NULL when this one was the last
);

CREATE INDEX task_attempt_by_task ON task_attempt (task_id, id);

-- Counters kept by triggers: every change of a task's status, and every recorded attempt,
-- updates its batch's row in the same statement, so the counters cannot disagree with the rows
-- whichever code path (or hand-written SQL) made the change.
CREATE TRIGGER task_inserted AFTER INSERT ON task
BEGIN
    UPDATE batch SET
        total = total + 1,
        pending = pending + (new.status = 'pending'),
        running = running + (new.status = 'running'),
        completed = completed + (new.status = 'completed'),
        failed = failed + (new.status = 'failed'),
        cancelled = cancelled + (new.status = 'cancelled')
    WHERE id = new.batch_id;
END;

CREATE TRIGGER task_status_changed AFTER UPDATE OF status ON task
WHEN old.status <> new.status
BEGIN
    UPDATE batch SET
        pending = pending + (new.status = 'pending') - (old.status = 'pending'),
        running = running + (new.status = 'running') - (old.status = 'running'),
        completed = completed + (new.status = 'completed') - (old.status = 'completed'),
        failed = failed + (new.status = 'failed') - (old.status = 'failed'),
        cancelled = cancelled + (new.status = 'cancelled') - (old.status = 'cancelled'),
        started_at = CASE WHEN new.status = 'running' THEN coalesce(started_at, new.claimed_at)
                          ELSE started_at END,
        consecutive_failures = CASE new.status WHEN 'completed' THEN 0
                                               WHEN 'failed' THEN consecutive_failures + 1
                                               ELSE consecutive_failures END,
        first_finished_at = CASE WHEN new.status IN ('completed', 'failed')
                                 THEN coalesce(first_finished_at, new.finished_at)
                                 ELSE first_finished_at END,
        last_finished_at = CASE WHEN new.status IN ('completed', 'failed')
                                THEN max(coalesce(last_finished_at, 0), coalesce(new.finished_at, 0))
                                ELSE last_finished_at END
    WHERE id = new.batch_id;
END;

CREATE TRIGGER attempt_recorded AFTER INSERT ON task_attempt
BEGIN
    UPDATE batch SET
        retried = retried + (new.retry_at IS NOT NULL),
        rate_limited = rate_limited + (new.outcome = 'rate_limited'),
        overloaded = overloaded + (new.outcome = 'overloaded'),
        timed_out = timed_out + (new.outcome = 'timeout'),
        lost = lost + (new.outcome = 'lease_expired')
    WHERE id = new.batch_id;
END;

-- An active batch whose last task finished completes by itself.
CREATE TRIGGER batch_drained AFTER UPDATE OF pending, running ON batch
WHEN new.status = 'active' AND new.pending = 0 AND new.running = 0 AND new.total > 0
BEGIN
    UPDATE batch SET status = 'completed', finished_at = coalesce(new.last_finished_at, old.last_finished_at)
    WHERE id = new.id;
END;

-- A limit key paused until a time, e.g. after a 429 with Retry-After. Shared by every worker
-- process on the database so that nobody keeps hammering a provider that asked us to wait.
CREATE TABLE limit_pause (
    key        TEXT    PRIMARY KEY,
    until      INTEGER NOT NULL,
    reason     TEXT
) WITHOUT ROWID;
