-- Tasks waiting for another attempt (pending after at least one failed), so a progress view can
-- say how many are retrying without scanning the batch.

ALTER TABLE batch ADD COLUMN retrying INTEGER NOT NULL DEFAULT 0;

UPDATE batch SET retrying = (
    SELECT count(*) FROM task WHERE task.batch_id = batch.id AND task.status = 'pending' AND task.attempt > 0);

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
        retrying = retrying + (new.status = 'pending' AND new.attempt > 0)
                            - (old.status = 'pending' AND old.attempt > 0),
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

-- Reports group a batch's failed attempts.
CREATE INDEX task_attempt_by_batch ON task_attempt (batch_id);
