-- A care-alert call says something even without a recording (issue 33): the spoken message
-- alerts writes (the alert's type, never the client's name), in the coordinator's language,
-- then the recording if there is one.
ALTER TABLE voice_calls ALTER COLUMN voice_message_url DROP NOT NULL;
ALTER TABLE voice_calls ADD COLUMN spoken_message text NOT NULL DEFAULT '' CHECK (length(spoken_message) <= 500);
ALTER TABLE voice_calls ADD COLUMN language text NOT NULL DEFAULT 'en-US'
    CHECK (language ~ '^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$');
-- When the provider took the call (raise → provider asked to ring is measured to here).
ALTER TABLE voice_calls ADD COLUMN placed_at timestamptz;
ALTER TABLE voice_calls ADD CONSTRAINT voice_calls_says_something CHECK (voice_message_url IS NOT NULL OR spoken_message <> '');
