-- Patient–practitioner conversations (seed 003's conversations and messages, PHI).
--
-- One conversation per patient and practitioner, opened by the service when dispatch's
-- AppointmentBooked first pairs them. Row-level security is enabled and forced (it binds the
-- owning role too): a conversation and its messages are visible only inside a transaction whose
-- acting user is one of the two, set with
--   SELECT set_config('caremesh.actor_id', $1, true), set_config('caremesh.actor_roles', $2, true)
-- A session without an acting user sees nothing; staff and admins see nothing either (they get
-- the audit trail, which holds no PHI). Messages can be neither changed nor removed.

-- The acting user as a uuid; NULL when none is set or the actor is a service.
CREATE FUNCTION conversation_actor() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN s ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN s::uuid END
    FROM (SELECT lower(coalesce(current_setting('caremesh.actor_id', true), '')) AS s) actor
$$;

CREATE TABLE conversations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Identity's user ids (no foreign key across schemas).
    patient_id uuid NOT NULL,
    practitioner_id uuid NOT NULL,
    -- The number of the latest message: a post locks the row and takes the next.
    last_number bigint NOT NULL DEFAULT 0 CHECK (last_number >= 0),
    last_message_at timestamptz,
    -- Each side's read mark: everything up to this number has been read by them.
    patient_read_up_to bigint NOT NULL DEFAULT 0 CHECK (patient_read_up_to BETWEEN 0 AND last_number),
    practitioner_read_up_to bigint NOT NULL DEFAULT 0 CHECK (practitioner_read_up_to BETWEEN 0 AND last_number),
    -- The appointment that paired them first.
    opened_by_appointment uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conversations_pair UNIQUE (patient_id, practitioner_id),
    CONSTRAINT conversations_two_people CHECK (patient_id <> practitioner_id)
);
CREATE INDEX conversations_practitioner ON conversations (practitioner_id);
CREATE TRIGGER conversations_touch BEFORE UPDATE ON conversations FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversations FORCE ROW LEVEL SECURITY;
-- The two participants read it and move their read marks and its counter.
CREATE POLICY conversations_participants ON conversations FOR SELECT
    USING (conversation_actor() IN (patient_id, practitioner_id));
CREATE POLICY conversations_participants_update ON conversations FOR UPDATE
    USING (conversation_actor() IN (patient_id, practitioner_id))
    WITH CHECK (conversation_actor() IN (patient_id, practitioner_id));
-- Only the service opens one (from dispatch's events), through open_conversation; it cannot
-- read any (INSERT … ON CONFLICT would need it to: the new row must pass SELECT policies).
CREATE POLICY conversations_opened_by_service ON conversations FOR INSERT
    WITH CHECK (coalesce(current_setting('caremesh.actor_id', true), '') = 'service:messaging');

-- Opens the pair's conversation unless it is open already (acting as the service).
CREATE FUNCTION open_conversation(patient uuid, practitioner uuid, appointment uuid) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO conversations (patient_id, practitioner_id, opened_by_appointment) VALUES (patient, practitioner, appointment);
EXCEPTION WHEN unique_violation THEN
    NULL;
END;
$$;

CREATE TABLE conversation_messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE RESTRICT,
    number bigint NOT NULL CHECK (number >= 1),
    sender_id uuid NOT NULL,
    content text NOT NULL CHECK (length(btrim(content)) BETWEEN 1 AND 4000),
    client_message_id text CHECK (length(client_message_id) BETWEEN 1 AND 100),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conversation_messages_number UNIQUE (conversation_id, number),
    CONSTRAINT conversation_messages_client_id UNIQUE (conversation_id, sender_id, client_message_id)
);
CREATE INDEX conversation_messages_sender ON conversation_messages (sender_id);

ALTER TABLE conversation_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversation_messages FORCE ROW LEVEL SECURITY;
-- Visible with its conversation (the subquery is itself under the conversation's policy).
CREATE POLICY conversation_messages_read ON conversation_messages FOR SELECT
    USING (EXISTS (SELECT 1 FROM conversations c WHERE c.id = conversation_id));
-- A participant posts as themself only. No UPDATE or DELETE policy: messages are immutable.
CREATE POLICY conversation_messages_post ON conversation_messages FOR INSERT
    WITH CHECK (sender_id = conversation_actor() AND EXISTS (SELECT 1 FROM conversations c WHERE c.id = conversation_id));

-- Every access to a conversation: who, in which role, what, how many messages. Never holds PHI
-- (ids, roles and counts only). Append-only, even for the owning role.
CREATE TABLE conversation_audit (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    actor_id uuid NOT NULL,
    actor_roles text[] NOT NULL,
    action text NOT NULL CHECK (action IN ('LIST', 'READ', 'POST')),
    -- NULL for a listing of the actor's conversations.
    conversation_id uuid,
    -- Conversations listed, messages read, or 1 for a post.
    item_count int NOT NULL CHECK (item_count >= 0),
    request_id text NOT NULL DEFAULT '',
    at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conversation_audit_target CHECK ((action = 'LIST') = (conversation_id IS NULL))
);
CREATE INDEX conversation_audit_conversation ON conversation_audit (conversation_id, at DESC);
CREATE INDEX conversation_audit_actor ON conversation_audit (actor_id, at DESC);
CREATE INDEX conversation_audit_at ON conversation_audit (at DESC);

CREATE FUNCTION conversation_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'conversation_audit is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER conversation_audit_immutable BEFORE UPDATE OR DELETE ON conversation_audit
    FOR EACH ROW EXECUTE FUNCTION conversation_audit_append_only();
CREATE TRIGGER conversation_audit_no_truncate BEFORE TRUNCATE ON conversation_audit
    FOR EACH STATEMENT EXECUTE FUNCTION conversation_audit_append_only();
