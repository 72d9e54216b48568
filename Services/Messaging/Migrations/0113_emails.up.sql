-- Emails sent for identity (issue 33: account recovery and security), through the email
-- provider. One per correlator; claimed with a lease as SMS are; not sent after `expires_at`
-- (a code that expired is of no use). The body holds a code until it is sent or given up:
-- then it is blanked, so the table never keeps a live secret longer than it must.
CREATE TABLE emails (
    id uuid PRIMARY KEY DEFAULT uuid_time_ordered(),
    kind text NOT NULL CHECK (kind IN ('password_reset', 'email_verification', 'account_locked')),
    to_address text NOT NULL CHECK (length(to_address) BETWEEN 3 AND 320 AND position('@' IN to_address) > 1),
    subject text NOT NULL CHECK (length(subject) BETWEEN 1 AND 200),
    body_text text NOT NULL CHECK (length(body_text) <= 10000),
    client_correlator text NOT NULL UNIQUE CHECK (length(client_correlator) BETWEEN 1 AND 100),
    requested_by text NOT NULL,
    status text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed')),
    provider text,
    provider_message_id text,
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz,
    expires_at timestamptz NOT NULL,
    error_message text,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX emails_due ON emails (next_attempt_at) WHERE status = 'queued';
CREATE TRIGGER emails_touch BEFORE UPDATE ON emails FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
