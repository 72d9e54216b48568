-- Push notifications (issue 33): each person's devices, and one send per (notification, device).
--
-- A token belongs to one person at a time (an app install signed in as someone else moves it),
-- hence unique per platform. Forced row-level security: a person sees and removes only their
-- own devices; the service registers them (a token can move between people) and sends.
CREATE TABLE push_devices (
    id uuid PRIMARY KEY DEFAULT uuid_time_ordered(),
    person_id uuid NOT NULL,
    platform text NOT NULL CHECK (platform IN ('fcm', 'apns')),
    token text NOT NULL CHECK (length(token) BETWEEN 1 AND 4096),
    name text NOT NULL DEFAULT '' CHECK (length(name) <= 60),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT push_devices_token UNIQUE (platform, token)
);
CREATE INDEX push_devices_person ON push_devices (person_id);
CREATE TRIGGER push_devices_touch BEFORE UPDATE ON push_devices FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
ALTER TABLE push_devices ENABLE ROW LEVEL SECURITY;
ALTER TABLE push_devices FORCE ROW LEVEL SECURITY;
CREATE POLICY push_devices_own ON push_devices FOR ALL
    USING (coalesce(current_setting('caremesh.actor_id', true), '') IN (person_id::text, 'service:messaging'))
    WITH CHECK (coalesce(current_setting('caremesh.actor_id', true), '') IN (person_id::text, 'service:messaging'));

-- One send per notification and device, claimed with a lease, retried with backoff until sent,
-- failed, or expired. A device removed (by its person, or because its provider said the token
-- is no longer valid) leaves its sends without one: they fail ("device removed").
CREATE TABLE push_sends (
    id uuid PRIMARY KEY DEFAULT uuid_time_ordered(),
    notification_id uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    device_id uuid REFERENCES push_devices (id) ON DELETE SET NULL,
    status text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    lease_until timestamptz,
    provider_message_id text,
    last_error text NOT NULL DEFAULT '' CHECK (length(last_error) <= 500),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT push_sends_once UNIQUE (notification_id, device_id)
);
CREATE INDEX push_sends_due ON push_sends (next_attempt_at) WHERE status = 'queued';
CREATE INDEX push_sends_device ON push_sends (device_id);
CREATE TRIGGER push_sends_touch BEFORE UPDATE ON push_sends FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
ALTER TABLE push_sends ENABLE ROW LEVEL SECURITY;
ALTER TABLE push_sends FORCE ROW LEVEL SECURITY;
CREATE POLICY push_sends_service ON push_sends FOR ALL
    USING (coalesce(current_setting('caremesh.actor_id', true), '') = 'service:messaging')
    WITH CHECK (coalesce(current_setting('caremesh.actor_id', true), '') = 'service:messaging');
