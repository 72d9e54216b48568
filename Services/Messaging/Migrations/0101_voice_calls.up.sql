-- Voice calls placed for other services (alerts' care-alert calls, seed 000): the requester's
-- call id is the row's id, so its CallStatusChanged events need no provider ids. A call is
-- 'requested' until a provider took it; then the provider's statuses, forward only.
CREATE TABLE voice_calls (
    id uuid PRIMARY KEY,
    reference text NOT NULL CHECK (length(reference) BETWEEN 1 AND 200),
    requested_by text NOT NULL,
    phone_number text NOT NULL CHECK (phone_number ~ '^\+[1-9][0-9]{6,14}$'),
    voice_message_url text NOT NULL CHECK (voice_message_url ~ '^https?://' AND length(voice_message_url) <= 2000),
    ring_timeout_s integer NOT NULL CHECK (ring_timeout_s BETWEEN 5 AND 600),
    status text NOT NULL DEFAULT 'requested'
        CHECK (status IN ('requested', 'queued', 'ringing', 'in_progress', 'completed', 'busy', 'no_answer', 'failed',
                          'canceled', 'machine')),
    provider text,
    provider_call_id text,
    hangup_requested boolean NOT NULL DEFAULT false,
    hung_up boolean NOT NULL DEFAULT false,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz,
    retry_count integer NOT NULL DEFAULT 0 CHECK (retry_count BETWEEN 0 AND 3),
    error_message text,
    duration_s integer CHECK (duration_s >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT voice_calls_provider_id UNIQUE (provider, provider_call_id),
    CONSTRAINT voice_calls_placed CHECK (status IN ('requested', 'failed', 'canceled') OR provider_call_id IS NOT NULL)
);
CREATE INDEX voice_calls_due ON voice_calls (next_attempt_at) WHERE status = 'requested';
CREATE INDEX voice_calls_hangups ON voice_calls (updated_at)
    WHERE hangup_requested AND NOT hung_up AND status IN ('queued', 'ringing', 'in_progress');
CREATE INDEX voice_calls_reference ON voice_calls (reference);
CREATE TRIGGER voice_calls_touch BEFORE UPDATE ON voice_calls FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
