-- Durable timers and background jobs. A job is claimed with FOR UPDATE SKIP LOCKED inside the
-- transaction that runs it and records its outcome, so it runs once across instances and a
-- crash leaves it scheduled for another.
CREATE TABLE jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL CHECK (kind <> ''),
    payload bytea NOT NULL DEFAULT '\x'::bytea,
    run_at timestamptz NOT NULL DEFAULT now(),
    state text NOT NULL DEFAULT 'scheduled' CHECK (state IN ('scheduled', 'done', 'failed', 'cancelled')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts integer NOT NULL DEFAULT 10 CHECK (max_attempts > 0),
    unique_key text,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CHECK ((state = 'scheduled') = (finished_at IS NULL))
);

CREATE INDEX jobs_due ON jobs (run_at, id) WHERE state = 'scheduled';
-- At most one scheduled job per (kind, unique_key): re-scheduling the same timer is a no-op.
CREATE UNIQUE INDEX jobs_unique_scheduled ON jobs (kind, unique_key) WHERE state = 'scheduled' AND unique_key IS NOT NULL;
