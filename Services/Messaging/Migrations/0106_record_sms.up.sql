-- Records a send in one call (SmsDesk.record): the same correlator again returns the earlier
-- message; else the number's consent is read under its advisory lock (shared; a consent change
-- holds it exclusively), each statement with a fresh snapshot as PL/pgSQL takes them, so a
-- consent change committed while this waited for the lock is seen; then the row is inserted.
-- outcome: 'created', 'existing' (message is the earlier one), 'no_consent' (nothing written)
-- or 'raced' (a concurrent send with the correlator won and is not yet visible).
CREATE FUNCTION record_sms(p_correlator text, p_to text, p_patient uuid, p_body text, p_type text, p_language text,
                           p_encoding text, p_segments integer, p_sender text, p_scheduled_at timestamptz,
                           p_callback_data text, p_created_by text, p_needs_consent boolean, p_lock_key bigint,
                           OUT outcome text, OUT message sms_messages)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT m.* INTO message FROM sms_messages m WHERE m.client_correlator = p_correlator;
    IF FOUND THEN
        outcome := 'existing';
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock_shared(p_lock_key);
    IF p_needs_consent AND NOT coalesce((SELECT c.consent_given FROM sms_consent c WHERE c.phone_number = p_to
                                         ORDER BY c.seq DESC LIMIT 1), false) THEN
        outcome := 'no_consent';
        RETURN;
    END IF;
    INSERT INTO sms_messages (patient_id, phone_number, message_content, message_type, language_code, encoding, segments,
                              client_correlator, sender_address, status, scheduled_at, next_attempt_at, callback_data, created_by)
    VALUES (p_patient, p_to, p_body, p_type, p_language, p_encoding, p_segments, p_correlator, p_sender,
            CASE WHEN p_scheduled_at IS NULL THEN 'pending' ELSE 'scheduled' END, p_scheduled_at, coalesce(p_scheduled_at, now()),
            p_callback_data, p_created_by)
    ON CONFLICT (client_correlator) DO NOTHING
    RETURNING * INTO message;
    IF FOUND THEN
        outcome := 'created';
        RETURN;
    END IF;
    SELECT m.* INTO message FROM sms_messages m WHERE m.client_correlator = p_correlator;
    outcome := CASE WHEN FOUND THEN 'existing' ELSE 'raced' END;
END
$$;
