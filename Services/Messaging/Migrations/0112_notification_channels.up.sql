-- Notifications reach people on the channels they chose (issue 33). Each notification is routed
-- once, after it is recorded: its person's contact points are read from identity, their choices
-- applied, and a delivery made per channel (`route_at`: when routing is due; NULL once done,
-- and for the notifications recorded before this migration, which stay stream-only).
ALTER TABLE notifications ADD COLUMN route_at timestamptz;
ALTER TABLE notifications ALTER COLUMN route_at SET DEFAULT now();
ALTER TABLE notifications ADD COLUMN route_attempts integer NOT NULL DEFAULT 0 CHECK (route_attempts >= 0);
CREATE INDEX notifications_to_route ON notifications (route_at) WHERE route_at IS NOT NULL;

-- An SMS delivery is the SMS it became (its status is that message's).
ALTER TABLE notification_deliveries ADD COLUMN sms_message_id uuid;

ALTER TABLE sms_messages DROP CONSTRAINT sms_messages_message_type_check;
ALTER TABLE sms_messages ADD CONSTRAINT sms_messages_message_type_check
    CHECK (message_type IN ('7_day_reminder', '1_day_reminder', 'overdue_reminder', 'custom', 'announcement',
                            'opt_out_confirmation', 'opt_in_confirmation', 'help', 'notification', 'sos_reply'));

-- An SOS offer texted to a volunteer carries a code they answer with (`YES 4821`, `NO 4821`),
-- good only from the phone it was sent to, until it expires. A phone's code is unique among
-- its codes (an expired one may be given again).
CREATE TABLE sos_reply_codes (
    phone_number text NOT NULL CHECK (phone_number ~ '^\+[1-9][0-9]{6,14}$'),
    code text NOT NULL CHECK (code ~ '^[0-9]{4}$'),
    person_id uuid NOT NULL,
    sos_id uuid NOT NULL,
    notification_id uuid NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (phone_number, code)
);
CREATE INDEX sos_reply_codes_expiry ON sos_reply_codes (expires_at);

-- Answers texted back, applied through dispatch (its AnswerOffer) by a worker, each once, and
-- answered by SMS. `outcome` is what came of it; the reply SMS is `reply_sms_id`.
CREATE TABLE sos_sms_answers (
    id uuid PRIMARY KEY DEFAULT uuid_time_ordered(),
    -- The inbound message (provider and its id): a webhook applied twice answers once.
    inbound_ref text NOT NULL UNIQUE,
    phone_number text NOT NULL CHECK (phone_number ~ '^\+[1-9][0-9]{6,14}$'),
    code text NOT NULL CHECK (code ~ '^[0-9]{4}$'),
    accept boolean NOT NULL,
    language text NOT NULL DEFAULT 'en' CHECK (language ~ '^[a-z]{2}$'),
    outcome text CHECK (outcome IN ('accepted', 'declined', 'taken', 'refused', 'unknown_code', 'ignored')),
    person_id uuid,
    sos_id uuid,
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    reply_sms_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    answered_at timestamptz
);
CREATE INDEX sos_sms_answers_due ON sos_sms_answers (next_attempt_at) WHERE outcome IS NULL;

-- A person records their own SMS consent in the app (RecordMySmsConsent).
ALTER TABLE sms_consent DROP CONSTRAINT sms_consent_consent_method_check;
ALTER TABLE sms_consent ADD CONSTRAINT sms_consent_consent_method_check
    CHECK (consent_method IN ('registration', 'verbal', 'written', 'sms_reply', 'admin', 'app'));
