-- Calls with nothing but a spoken message cannot be kept by the older schema.
DELETE FROM voice_calls WHERE voice_message_url IS NULL;
ALTER TABLE voice_calls DROP CONSTRAINT voice_calls_says_something;
ALTER TABLE voice_calls DROP COLUMN placed_at;
ALTER TABLE voice_calls DROP COLUMN language;
ALTER TABLE voice_calls DROP COLUMN spoken_message;
ALTER TABLE voice_calls ALTER COLUMN voice_message_url SET NOT NULL;
