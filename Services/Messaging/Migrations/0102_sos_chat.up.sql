-- SOS chat (seed 001's chat_messages): one chat per SOS, opened by dispatch's SosCreated, its
-- participants from dispatch's events (the requester; the volunteer who accepted, until they
-- drop out), closed (read only) when the SOS is resolved or cancelled. SOS and user ids belong
-- to dispatch and identity (no foreign key across schemas).
CREATE TABLE sos_chats (
    sos_id uuid PRIMARY KEY,
    requester_id uuid NOT NULL,
    open boolean NOT NULL DEFAULT true,
    -- The number of the chat's latest message: a post locks the row and takes the next, so
    -- numbers follow commit order and a reader paging by number never skips one.
    last_number bigint NOT NULL DEFAULT 0 CHECK (last_number >= 0),
    last_message_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER sos_chats_touch BEFORE UPDATE ON sos_chats FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE sos_chat_participants (
    sos_id uuid NOT NULL REFERENCES sos_chats (sos_id) ON DELETE CASCADE,
    user_id uuid NOT NULL,
    role text NOT NULL CHECK (role IN ('requester', 'responder')),
    -- A volunteer who cancelled after accepting leaves the chat (and can no longer read it).
    active boolean NOT NULL DEFAULT true,
    -- Everything up to this number is read by this participant.
    read_up_to bigint NOT NULL DEFAULT 0 CHECK (read_up_to >= 0),
    joined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sos_id, user_id)
);
CREATE INDEX sos_chat_participants_user ON sos_chat_participants (user_id) WHERE active;

CREATE TABLE chat_messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    sos_id uuid NOT NULL REFERENCES sos_chats (sos_id) ON DELETE CASCADE,
    number bigint NOT NULL CHECK (number >= 1),
    sender_id uuid NOT NULL,
    content text NOT NULL CHECK (length(btrim(content)) BETWEEN 1 AND 2000),
    client_message_id text CHECK (length(client_message_id) BETWEEN 1 AND 100),
    -- Read by a participant other than the sender.
    is_read boolean NOT NULL DEFAULT false,
    read_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chat_messages_number UNIQUE (sos_id, number),
    CONSTRAINT chat_messages_client_id UNIQUE (sos_id, sender_id, client_message_id),
    CONSTRAINT chat_messages_read CHECK (is_read = (read_at IS NOT NULL))
);
-- The seed's two indexes (the first as the unique (sos_id, number) above, the chat's order).
CREATE INDEX idx_chat_sos_id ON chat_messages (sos_id, created_at);
CREATE INDEX idx_chat_sender_id ON chat_messages (sender_id);
