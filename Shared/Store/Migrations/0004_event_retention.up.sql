-- Retention of the platform tables (PlatformRetention): what the outbox may delete, and where
-- it stopped.
--
-- The services that pull this schema's events and how far they have read (their last pull's
-- `after`: everything up to it is applied on their side). The outbox never deletes an event a
-- consumer seen within the retention period has not read.
CREATE TABLE event_consumers (
    consumer text PRIMARY KEY CHECK (consumer <> ''),
    position bigint NOT NULL CHECK (position >= 0),
    seen_at timestamptz NOT NULL DEFAULT now()
);

-- The highest seq deleted from the outbox (one row, once something was): a pull from before it
-- fails OUT_OF_RANGE rather than silently skipping the events its consumer missed.
CREATE TABLE outbox_horizon (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    pruned_through bigint NOT NULL CHECK (pruned_through > 0)
);

CREATE INDEX applied_events_applied_at ON applied_events (applied_at);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state <> 'scheduled';
