-- SMS (seed 004): templates, the consent ledger, messages with their delivery state, and the
-- log of every provider webhook. Patient and user ids belong to identity (no foreign key across
-- schemas). Phone numbers are E.164.

CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END;
$$;

-- Reminder texts per type and language (seeded by the service at start, editable by admins).
-- The counts are computed by the service (Swift's characters, GSM-7 or UCS-2 segments).
CREATE TABLE sms_templates (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9_]{1,100}$'),
    template_type text NOT NULL CHECK (template_type IN ('7_day_reminder', '1_day_reminder', 'overdue_reminder')),
    message_template text NOT NULL CHECK (length(message_template) BETWEEN 1 AND 1600),
    character_count integer NOT NULL CHECK (character_count >= 1),
    encoding text NOT NULL CHECK (encoding IN ('GSM-7', 'UCS-2')),
    segments integer NOT NULL CHECK (segments >= 1),
    language_code text NOT NULL DEFAULT 'en' CHECK (language_code ~ '^[a-z]{2}$'),
    is_active boolean NOT NULL DEFAULT true,
    created_by text,
    updated_by text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sms_templates_one_per_language UNIQUE (template_type, language_code)
);
CREATE INDEX sms_templates_language ON sms_templates (language_code);
CREATE INDEX sms_templates_active ON sms_templates (is_active);
CREATE TRIGGER sms_templates_touch BEFORE UPDATE ON sms_templates FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Consent as an append-only ledger (seed 004's sms_consent kept as history): each opt-in or
-- opt-out with its method and evidence. The latest entry of a number decides; none is no
-- consent. Sends take a shared advisory lock on the number and consent changes an exclusive
-- one, so a send and a STOP for one number are serialized.
CREATE TABLE sms_consent (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    patient_id uuid,
    phone_number text NOT NULL CHECK (phone_number ~ '^\+[1-9][0-9]{6,14}$'),
    consent_given boolean NOT NULL,
    consent_method text NOT NULL CHECK (consent_method IN ('registration', 'verbal', 'written', 'sms_reply', 'admin')),
    evidence text NOT NULL DEFAULT '' CHECK (length(evidence) <= 500),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX sms_consent_phone_latest ON sms_consent (phone_number, seq DESC);
CREATE INDEX sms_consent_patient ON sms_consent (patient_id) WHERE patient_id IS NOT NULL;

CREATE FUNCTION sms_consent_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sms_consent is an append-only ledger' USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER sms_consent_no_change BEFORE UPDATE OR DELETE ON sms_consent
    FOR EACH ROW EXECUTE FUNCTION sms_consent_append_only();

-- Every SMS, from acceptance to its final status. The sender claims due rows (scheduled or
-- pending, next_attempt_at passed, no live lease) with FOR UPDATE SKIP LOCKED.
CREATE TABLE sms_messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    patient_id uuid,
    notification_id uuid,
    phone_number text NOT NULL CHECK (phone_number ~ '^\+[1-9][0-9]{6,14}$'),
    message_content text NOT NULL CHECK (length(message_content) BETWEEN 1 AND 1600),
    message_type text NOT NULL CHECK (message_type IN ('7_day_reminder', '1_day_reminder', 'overdue_reminder', 'custom',
                                                       'announcement', 'opt_out_confirmation', 'opt_in_confirmation', 'help')),
    language_code text CHECK (language_code ~ '^[a-z]{2}$'),
    encoding text NOT NULL CHECK (encoding IN ('GSM-7', 'UCS-2')),
    segments integer NOT NULL CHECK (segments >= 1),
    client_correlator text NOT NULL UNIQUE CHECK (length(client_correlator) BETWEEN 1 AND 100),
    sender_address text NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('scheduled', 'pending', 'sent', 'delivered', 'failed', 'cancelled')),
    delivery_status text,
    delivery_description text,
    provider text,
    provider_message_id text,
    scheduled_at timestamptz,
    sent_at timestamptz,
    delivered_at timestamptz,
    failed_at timestamptz,
    cancelled_at timestamptz,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz,
    retry_count integer NOT NULL DEFAULT 0 CHECK (retry_count BETWEEN 0 AND 3),
    error_message text,
    callback_data text CHECK (length(callback_data) <= 200),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sms_messages_provider_id UNIQUE (provider, provider_message_id),
    CONSTRAINT sms_messages_scheduled CHECK (status <> 'scheduled' OR scheduled_at IS NOT NULL),
    -- A provider's receipt can arrive before the sender recorded the provider's id: only sent_at is sure.
    CONSTRAINT sms_messages_sent CHECK (status NOT IN ('sent', 'delivered') OR sent_at IS NOT NULL),
    CONSTRAINT sms_messages_delivered CHECK (status <> 'delivered' OR delivered_at IS NOT NULL),
    CONSTRAINT sms_messages_failed CHECK (status <> 'failed' OR failed_at IS NOT NULL),
    CONSTRAINT sms_messages_cancelled CHECK (status <> 'cancelled' OR cancelled_at IS NOT NULL),
    CONSTRAINT sms_messages_order CHECK (delivered_at IS NULL OR sent_at IS NULL OR delivered_at >= sent_at)
);
CREATE INDEX sms_messages_due ON sms_messages (next_attempt_at) WHERE status IN ('scheduled', 'pending');
CREATE INDEX sms_messages_patient ON sms_messages (patient_id, created_at DESC) WHERE patient_id IS NOT NULL;
CREATE INDEX sms_messages_phone ON sms_messages (phone_number, created_at DESC);
CREATE INDEX sms_messages_status ON sms_messages (status);
CREATE INDEX sms_messages_scheduled_at ON sms_messages (scheduled_at) WHERE scheduled_at IS NOT NULL;
CREATE INDEX sms_messages_type ON sms_messages (message_type);
CREATE TRIGGER sms_messages_touch BEFORE UPDATE ON sms_messages FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Every provider webhook as it arrived (headers, body, source address) and what became of it.
-- Headers and bodies hold phone numbers and message text: PHI. Row-level security (forced, so
-- it binds the owner too) shows rows only to a transaction that set an acting admin or the
-- service itself:
--   SELECT set_config('caremesh.actor_id', $1, true), set_config('caremesh.actor_roles', $2, true)
CREATE FUNCTION webhook_log_access_allowed() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('caremesh.actor_id', true), '') <> ''
       AND string_to_array(coalesce(current_setting('caremesh.actor_roles', true), ''), ',') && ARRAY['admin', 'service']
$$;

CREATE TABLE sms_webhook_logs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind text NOT NULL CHECK (kind ~ '^[a-z]{1,20}$'),
    provider text NOT NULL CHECK (provider ~ '^[a-z]{1,20}$'),
    webhook_type text NOT NULL CHECK (webhook_type IN ('delivery_status', 'inbound_message', 'call_status', 'unknown')),
    request_url text NOT NULL,
    request_headers jsonb NOT NULL,
    -- The body as JSON (a form body as an object of its fields), and as received.
    request_body jsonb NOT NULL,
    raw_body bytea NOT NULL,
    request_ip text CHECK (length(request_ip) <= 64),
    idempotency_key text,
    processed boolean NOT NULL DEFAULT false,
    duplicate boolean NOT NULL DEFAULT false,
    processing_error text,
    related_sms_message_id uuid REFERENCES sms_messages (id) ON DELETE SET NULL,
    response_status integer NOT NULL DEFAULT 200,
    response_body text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sms_webhook_logs_type ON sms_webhook_logs (webhook_type);
CREATE INDEX sms_webhook_logs_unprocessed ON sms_webhook_logs (created_at) WHERE NOT processed;
CREATE INDEX sms_webhook_logs_created_at ON sms_webhook_logs (created_at);
CREATE INDEX sms_webhook_logs_message ON sms_webhook_logs (related_sms_message_id) WHERE related_sms_message_id IS NOT NULL;

ALTER TABLE sms_webhook_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE sms_webhook_logs FORCE ROW LEVEL SECURITY;
CREATE POLICY sms_webhook_logs_access ON sms_webhook_logs FOR ALL
    USING (webhook_log_access_allowed()) WITH CHECK (webhook_log_access_allowed());

-- What each provider's webhooks have already applied: a status callback by message id and
-- status, an inbound message by its id. A repeat is logged as a duplicate and not applied.
CREATE TABLE webhook_applied (
    provider text NOT NULL,
    idempotency_key text NOT NULL,
    log_id uuid NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, idempotency_key)
);
