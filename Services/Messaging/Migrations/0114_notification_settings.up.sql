-- A person's own notification settings (issue 33): their time zone, quiet hours during which
-- non-critical notifications wait, and the channels each kind does not go on ("KIND:channel",
-- e.g. 'CHAT_MESSAGE:push'). Forced row-level security: a person sees and changes only their
-- own; the service reads them all when it routes.
CREATE TABLE notification_settings (
    person_id uuid PRIMARY KEY,
    time_zone text NOT NULL DEFAULT 'UTC' CHECK (length(time_zone) BETWEEN 1 AND 64),
    quiet_start text CHECK (quiet_start ~ '^([01][0-9]|2[0-3]):[0-5][0-9]$'),
    quiet_end text CHECK (quiet_end ~ '^([01][0-9]|2[0-3]):[0-5][0-9]$'),
    channels_off text[] NOT NULL DEFAULT '{}' CHECK (cardinality(channels_off) <= 64),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notification_settings_quiet CHECK ((quiet_start IS NULL) = (quiet_end IS NULL)),
    CONSTRAINT notification_settings_quiet_span CHECK (quiet_start IS NULL OR quiet_start <> quiet_end)
);
ALTER TABLE notification_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE notification_settings FORCE ROW LEVEL SECURITY;
CREATE POLICY notification_settings_own ON notification_settings FOR ALL
    USING (coalesce(current_setting('caremesh.actor_id', true), '') IN (person_id::text, 'service:messaging'))
    WITH CHECK (coalesce(current_setting('caremesh.actor_id', true), '') IN (person_id::text, 'service:messaging'));
