-- What this service consumed from others: per source, how far it read (the cursor) and which
-- events it applied, both updated in the same transaction as the effect.
CREATE TABLE event_cursors (
    source text PRIMARY KEY,
    position bigint NOT NULL CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE applied_events (
    source text NOT NULL,
    event_id uuid NOT NULL,
    seq bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
);
