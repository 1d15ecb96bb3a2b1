-- Batch control: interruption by criteria or by hand, with a log, and resume.

-- The current run: from the first claim after creation or after the last resume. The batch
-- runtime criterion is measured from here (not from creation, and not from a run long ago).
ALTER TABLE batch ADD COLUMN run_started_at INTEGER;
ALTER TABLE batch ADD COLUMN interrupted_at INTEGER;
ALTER TABLE batch ADD COLUMN interruption_reason TEXT;
ALTER TABLE batch ADD COLUMN interruption_message TEXT;

-- Counter values when the batch was last resumed. Criteria judge what happened since, so a batch
-- interrupted for too many 429s is not interrupted again by the same 429s the moment it resumes;
-- the totals stay for reports.
ALTER TABLE batch ADD COLUMN base_completed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batch ADD COLUMN base_failed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batch ADD COLUMN base_rate_limited INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batch ADD COLUMN base_overloaded INTEGER NOT NULL DEFAULT 0;

-- One row per interruption: why, in words, and the counters at that moment.
CREATE TABLE batch_interruption (
    id         INTEGER PRIMARY KEY,
    batch_id   INTEGER NOT NULL REFERENCES batch (id) ON DELETE CASCADE,
    reason     TEXT    NOT NULL CHECK (reason IN ('failed_tasks_exceeded',
                   'consecutive_failures_exceeded', 'error_rate_exceeded', 'rate_limited_exceeded',
                   'overloaded_exceeded', 'batch_runtime_exceeded', 'manual')),
    message    TEXT    NOT NULL,
    stats      TEXT    NOT NULL, -- JSON: the batch's counters when it was interrupted
    created_at INTEGER NOT NULL
);

CREATE INDEX batch_interruption_by_batch ON batch_interruption (batch_id, id);

-- The status trigger also starts the run clock.
DROP TRIGGER task_status_changed;

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
        run_started_at = CASE WHEN new.status = 'running' THEN coalesce(run_started_at, new.claimed_at)
                              ELSE run_started_at END,
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

-- Every transition from active to interrupted, whoever makes it, logs exactly one row.
CREATE TRIGGER batch_interrupted AFTER UPDATE OF status ON batch
WHEN old.status = 'active' AND new.status = 'interrupted'
BEGIN
    INSERT INTO batch_interruption (batch_id, reason, message, stats, created_at)
    VALUES (new.id, coalesce(new.interruption_reason, 'manual'), coalesce(new.interruption_message, ''),
            json_object('total', new.total, 'pending', new.pending, 'running', new.running,
                        'completed', new.completed, 'failed', new.failed, 'cancelled', new.cancelled,
                        'retried', new.retried, 'rate_limited', new.rate_limited,
                        'overloaded', new.overloaded, 'timed_out', new.timed_out, 'lost', new.lost,
                        'consecutive_failures', new.consecutive_failures),
            coalesce(new.interrupted_at, 0));
END;
