-- tem-core schema, Postgres flavour: the same tables, columns and meanings as the SQLite schema
-- (see migrations/sqlite), shaped for many writer processes.
--
-- Timestamps are BIGINT milliseconds since the Unix epoch (UTC); every integer is BIGINT so one
-- decoder serves both backends. JSON columns hold UTF-8 JSON text, cast to jsonb where SQL reads it.
--
-- Concurrency rule: a write transaction locks the batch rows it will touch (in id order) before
-- any task row, so the counters below, the shared concurrency cap and the criteria check are
-- exact, and two transactions never wait on each other in opposite orders.

CREATE TABLE batch (
    id                    BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code                  TEXT    NOT NULL UNIQUE,
    type                  TEXT    NOT NULL,
    status                TEXT    NOT NULL DEFAULT 'active'
                          CHECK (status IN ('active', 'interrupted', 'completed', 'cancelled')),
    metadata              TEXT,
    interruption_criteria TEXT,
    retry_policy          TEXT,
    created_at            BIGINT  NOT NULL,
    started_at            BIGINT,
    finished_at           BIGINT,
    total                 BIGINT  NOT NULL DEFAULT 0,
    pending               BIGINT  NOT NULL DEFAULT 0,
    running               BIGINT  NOT NULL DEFAULT 0,
    completed             BIGINT  NOT NULL DEFAULT 0,
    failed                BIGINT  NOT NULL DEFAULT 0,
    cancelled             BIGINT  NOT NULL DEFAULT 0,
    retrying              BIGINT  NOT NULL DEFAULT 0,
    retried               BIGINT  NOT NULL DEFAULT 0,
    rate_limited          BIGINT  NOT NULL DEFAULT 0,
    overloaded            BIGINT  NOT NULL DEFAULT 0,
    timed_out             BIGINT  NOT NULL DEFAULT 0,
    lost                  BIGINT  NOT NULL DEFAULT 0,
    consecutive_failures  BIGINT  NOT NULL DEFAULT 0,
    first_finished_at     BIGINT,
    last_finished_at      BIGINT,
    run_started_at        BIGINT,
    interrupted_at        BIGINT,
    interruption_reason   TEXT,
    interruption_message  TEXT,
    base_completed        BIGINT  NOT NULL DEFAULT 0,
    base_failed           BIGINT  NOT NULL DEFAULT 0,
    base_rate_limited     BIGINT  NOT NULL DEFAULT 0,
    base_overloaded       BIGINT  NOT NULL DEFAULT 0
);

CREATE INDEX batch_by_status ON batch (status, id);

CREATE TABLE task (
    id               BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id         BIGINT  NOT NULL REFERENCES batch (id) ON DELETE CASCADE,
    type             TEXT    NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    priority         BIGINT  NOT NULL DEFAULT 0,
    run_after        BIGINT  NOT NULL,
    attempt          BIGINT  NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts     BIGINT  NOT NULL CHECK (max_attempts >= 1),
    cost             BIGINT  NOT NULL DEFAULT 1 CHECK (cost >= 0),
    payload          TEXT    NOT NULL,
    result           TEXT,
    last_error       TEXT,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    lease_token      BIGINT  NOT NULL DEFAULT 0,
    created_at       BIGINT  NOT NULL,
    claimed_at       BIGINT,
    first_started_at BIGINT,
    finished_at      BIGINT
);

-- The claim walks this index in (priority DESC, id) order inside one batch.
CREATE INDEX task_claim ON task (batch_id, priority DESC, id) INCLUDE (run_after, type)
    WHERE status = 'pending';
CREATE INDEX task_lease ON task (lease_expires_at) WHERE status = 'running';
CREATE INDEX task_by_batch ON task (batch_id);

CREATE TABLE task_attempt (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id     BIGINT  NOT NULL REFERENCES task (id) ON DELETE CASCADE,
    batch_id    BIGINT  NOT NULL,
    attempt     BIGINT  NOT NULL,
    worker      TEXT,
    started_at  BIGINT  NOT NULL,
    finished_at BIGINT  NOT NULL,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('succeeded', 'retryable', 'non_retryable',
                        'rate_limited', 'overloaded', 'timeout', 'lease_expired', 'aborted')),
    http_status BIGINT,
    message     TEXT,
    retry_at    BIGINT
);

CREATE INDEX task_attempt_by_task ON task_attempt (task_id, id);
CREATE INDEX task_attempt_by_batch ON task_attempt (batch_id);

CREATE TABLE batch_interruption (
    id         BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id   BIGINT  NOT NULL REFERENCES batch (id) ON DELETE CASCADE,
    reason     TEXT    NOT NULL CHECK (reason IN ('failed_tasks_exceeded',
                   'consecutive_failures_exceeded', 'error_rate_exceeded', 'rate_limited_exceeded',
                   'overloaded_exceeded', 'batch_runtime_exceeded', 'manual')),
    message    TEXT    NOT NULL,
    stats      TEXT    NOT NULL,
    created_at BIGINT  NOT NULL
);

CREATE INDEX batch_interruption_by_batch ON batch_interruption (batch_id, id);

-- A limit key paused until a time (Retry-After, an open circuit), for every process.
CREATE TABLE limit_pause (
    key    TEXT   PRIMARY KEY,
    until  BIGINT NOT NULL,
    reason TEXT
);

-- Limits shared by every process: one GCRA timestamp per rate or budget key (microseconds on
-- the database's clock, so machines with skewed clocks still share one schedule).
CREATE TABLE limit_rate (
    key     TEXT   PRIMARY KEY,
    tat_us  BIGINT NOT NULL
);

-- Counters, kept by statement-level triggers over transition tables: one UPDATE of each touched
-- batch row per statement, however many task rows the statement changed (a row-level trigger
-- would write one row version per task).
CREATE FUNCTION tem_task_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE batch SET
        total = batch.total + d.n,
        pending = batch.pending + d.pending,
        running = batch.running + d.running,
        completed = batch.completed + d.completed,
        failed = batch.failed + d.failed,
        cancelled = batch.cancelled + d.cancelled
    FROM (SELECT batch_id, count(*) AS n,
              count(*) FILTER (WHERE status = 'pending') AS pending,
              count(*) FILTER (WHERE status = 'running') AS running,
              count(*) FILTER (WHERE status = 'completed') AS completed,
              count(*) FILTER (WHERE status = 'failed') AS failed,
              count(*) FILTER (WHERE status = 'cancelled') AS cancelled
          FROM inserted GROUP BY batch_id) AS d
    WHERE batch.id = d.batch_id;
    RETURN NULL;
END $$;

CREATE TRIGGER task_inserted AFTER INSERT ON task
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION tem_task_inserted();

CREATE FUNCTION tem_task_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Successes and failures of one commit are applied by separate statements (successes
    -- first), as on SQLite, so a statement with a success resets the run of failures.
    UPDATE batch SET
        pending = batch.pending + d.pending,
        running = batch.running + d.running,
        completed = batch.completed + d.completed,
        failed = batch.failed + d.failed,
        cancelled = batch.cancelled + d.cancelled,
        retrying = batch.retrying + d.retrying,
        started_at = coalesce(batch.started_at, d.first_claim),
        run_started_at = coalesce(batch.run_started_at, d.first_claim),
        consecutive_failures = CASE WHEN d.succeeded > 0 THEN 0
                                    ELSE batch.consecutive_failures + d.new_failures END,
        first_finished_at = coalesce(batch.first_finished_at, d.first_finish),
        last_finished_at = greatest(batch.last_finished_at, d.last_finish)
    FROM (
        SELECT n.batch_id,
            count(*) FILTER (WHERE n.status = 'pending') - count(*) FILTER (WHERE o.status = 'pending') AS pending,
            count(*) FILTER (WHERE n.status = 'running') - count(*) FILTER (WHERE o.status = 'running') AS running,
            count(*) FILTER (WHERE n.status = 'completed') - count(*) FILTER (WHERE o.status = 'completed') AS completed,
            count(*) FILTER (WHERE n.status = 'failed') - count(*) FILTER (WHERE o.status = 'failed') AS failed,
            count(*) FILTER (WHERE n.status = 'cancelled') - count(*) FILTER (WHERE o.status = 'cancelled') AS cancelled,
            count(*) FILTER (WHERE n.status = 'pending' AND n.attempt > 0)
                - count(*) FILTER (WHERE o.status = 'pending' AND o.attempt > 0) AS retrying,
            min(n.claimed_at) FILTER (WHERE n.status = 'running') AS first_claim,
            count(*) FILTER (WHERE n.status = 'completed') AS succeeded,
            count(*) FILTER (WHERE n.status = 'failed') AS new_failures,
            min(n.finished_at) FILTER (WHERE n.status IN ('completed', 'failed')) AS first_finish,
            max(n.finished_at) FILTER (WHERE n.status IN ('completed', 'failed')) AS last_finish
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.status <> o.status
        GROUP BY n.batch_id) AS d
    WHERE batch.id = d.batch_id;
    RETURN NULL;
END $$;

CREATE TRIGGER task_changed AFTER UPDATE ON task
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tem_task_changed();

CREATE FUNCTION tem_attempt_recorded() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE batch SET
        retried = batch.retried + d.retried,
        rate_limited = batch.rate_limited + d.rate_limited,
        overloaded = batch.overloaded + d.overloaded,
        timed_out = batch.timed_out + d.timed_out,
        lost = batch.lost + d.lost
    FROM (SELECT batch_id,
              count(*) FILTER (WHERE retry_at IS NOT NULL) AS retried,
              count(*) FILTER (WHERE outcome = 'rate_limited') AS rate_limited,
              count(*) FILTER (WHERE outcome = 'overloaded') AS overloaded,
              count(*) FILTER (WHERE outcome = 'timeout') AS timed_out,
              count(*) FILTER (WHERE outcome = 'lease_expired') AS lost
          FROM recorded GROUP BY batch_id) AS d
    WHERE batch.id = d.batch_id;
    RETURN NULL;
END $$;

CREATE TRIGGER attempt_recorded AFTER INSERT ON task_attempt
    REFERENCING NEW TABLE AS recorded FOR EACH STATEMENT EXECUTE FUNCTION tem_attempt_recorded();

-- An active batch whose last task finished completes by itself (in the same row update).
CREATE FUNCTION tem_batch_drained() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'active' AND NEW.pending = 0 AND NEW.running = 0 AND NEW.total > 0 THEN
        NEW.status := 'completed';
        NEW.finished_at := coalesce(NEW.last_finished_at, OLD.last_finished_at);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER batch_drained BEFORE UPDATE OF pending, running ON batch
    FOR EACH ROW EXECUTE FUNCTION tem_batch_drained();

-- Every transition from active to interrupted, whoever makes it, logs exactly one row.
CREATE FUNCTION tem_batch_interrupted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO batch_interruption (batch_id, reason, message, stats, created_at)
    VALUES (NEW.id, coalesce(NEW.interruption_reason, 'manual'), coalesce(NEW.interruption_message, ''),
            json_build_object('total', NEW.total, 'pending', NEW.pending, 'running', NEW.running,
                'completed', NEW.completed, 'failed', NEW.failed, 'cancelled', NEW.cancelled,
                'retried', NEW.retried, 'rate_limited', NEW.rate_limited,
                'overloaded', NEW.overloaded, 'timed_out', NEW.timed_out, 'lost', NEW.lost,
                'consecutive_failures', NEW.consecutive_failures, 'retrying', NEW.retrying)::text,
            coalesce(NEW.interrupted_at, 0));
    RETURN NULL;
END $$;

CREATE TRIGGER batch_interrupted AFTER UPDATE OF status ON batch
    FOR EACH ROW WHEN (OLD.status = 'active' AND NEW.status = 'interrupted')
    EXECUTE FUNCTION tem_batch_interrupted();
