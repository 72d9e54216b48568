-- Notifications (issue 33): what messaging tells people, and on which channel each went.
--
-- One notification per (event, person): `event_id` with the person is unique, so an event
-- applied twice notifies once. Each person's notifications are numbered without gaps in commit
-- order (`seq`, taken from `notification_people.last_seq` under that row's lock, which a
-- transaction holds until it commits): a live stream resumes after the last `seq` it sent and
-- can tell a missed one from a late one. Forced row-level security: a person sees only their
-- own; the service itself (as `service:messaging`) writes and reads them all.

CREATE TABLE notification_people (
    person_id uuid PRIMARY KEY,
    last_seq bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0)
);

CREATE TABLE notifications (
    id uuid PRIMARY KEY DEFAULT uuid_time_ordered(),
    person_id uuid NOT NULL REFERENCES notification_people (person_id),
    seq bigint NOT NULL CHECK (seq > 0),
    kind text NOT NULL CHECK (kind IN ('SOS_OFFERED', 'SOS_ACCEPTED', 'SOS_UPDATED', 'CHAT_MESSAGE')),
    critical boolean NOT NULL,
    -- Short and never PHI ("An SOS near you").
    title text NOT NULL CHECK (length(title) BETWEEN 1 AND 100),
    body text NOT NULL CHECK (length(body) <= 300),
    -- Ids and codes only: what it is about.
    data jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
    event_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    read_at timestamptz,
    CONSTRAINT notifications_person_seq UNIQUE (person_id, seq),
    CONSTRAINT notifications_once_per_event UNIQUE (event_id, person_id)
);
CREATE INDEX notifications_unread ON notifications (person_id, seq) WHERE read_at IS NULL;

ALTER TABLE notifications ENABLE ROW LEVEL SECURITY;
ALTER TABLE notifications FORCE ROW LEVEL SECURITY;
CREATE POLICY notifications_own ON notifications FOR ALL
    USING (coalesce(current_setting('caremesh.actor_id', true), '') IN (person_id::text, 'service:messaging'))
    WITH CHECK (coalesce(current_setting('caremesh.actor_id', true), '') IN (person_id::text, 'service:messaging'));

-- One delivery per channel: the stream (sent when the notification is announced), push, SMS,
-- email; each with its status, retried with backoff until it is final.
CREATE TABLE notification_deliveries (
    notification_id uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    channel text NOT NULL CHECK (channel IN ('stream', 'push', 'sms', 'email')),
    status text NOT NULL CHECK (status IN ('queued', 'sent', 'delivered', 'failed', 'read')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz,
    last_error text NOT NULL DEFAULT '' CHECK (length(last_error) <= 500),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (notification_id, channel)
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (next_attempt_at) WHERE status = 'queued';

-- Single-use stream tickets for browsers (EventSource sends no Authorization header): only a
-- hash is kept; a ticket works once, within its minute.
CREATE TABLE notification_stream_tickets (
    ticket_hash bytea PRIMARY KEY CHECK (length(ticket_hash) = 32),
    person_id uuid NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);
CREATE INDEX notification_stream_tickets_expiry ON notification_stream_tickets (expires_at);
