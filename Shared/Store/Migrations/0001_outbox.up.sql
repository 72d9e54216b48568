-- The events this service announces, written in the same transaction as the change.
-- `seq` is taken under a transaction-scoped advisory lock (see Outbox.append), so it grows in
-- commit order: a reader that has seen seq N never later finds a committed event below N.
CREATE TABLE outbox (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    type text NOT NULL CHECK (type <> ''),
    key text NOT NULL,
    payload bytea NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now()
);
