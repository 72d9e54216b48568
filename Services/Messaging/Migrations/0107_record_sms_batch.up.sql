-- Records many sends in one call (SmsDesk's group commit of SendSms), each as record_sms would:
-- the number's consent read under its advisory lock (shared; a consent change holds it
-- exclusively), the row inserted, or the earlier message of a correlator used before. The locks
-- are taken first, in key order, by one statement; the consent is then read by the next, with
-- a fresh snapshot (PL/pgSQL takes one per statement), so a consent change committed while
-- this waited is seen. Of one correlator given twice in a batch, the first consented item is
-- created and the other is its repeat ('existing').
-- One row per item: o_ord (1-based, as given), o_outcome as record_sms's ('created',
-- 'existing', 'no_consent' with no message, 'raced'), o_message.
CREATE FUNCTION record_sms_batch(p_correlators text[], p_to text[], p_patients uuid[], p_bodies text[], p_types text[],
                                 p_languages text[], p_encodings text[], p_segments integer[], p_senders text[],
                                 p_scheduled_at timestamptz[], p_callback_data text[], p_created_by text[],
                                 p_needs_consent boolean[], p_lock_keys bigint[])
RETURNS TABLE (o_ord integer, o_outcome text, o_message sms_messages)
LANGUAGE plpgsql AS $$
DECLARE
    v_consented integer[];
    v_created integer[];
BEGIN
    PERFORM pg_advisory_xact_lock_shared(k.key) FROM (SELECT DISTINCT key FROM unnest(p_lock_keys) AS u(key) ORDER BY key) k;
    WITH items AS (
        SELECT * FROM unnest(p_correlators, p_to, p_patients, p_bodies, p_types, p_languages, p_encodings, p_segments,
                             p_senders, p_scheduled_at, p_callback_data, p_created_by, p_needs_consent)
            WITH ORDINALITY AS u(correlator, phone, patient, body, type, language, encoding, segments, sender, scheduled_at,
                                 callback_data, created_by, needs_consent, ord)),
    consented AS (
        SELECT * FROM items
        WHERE NOT items.needs_consent
           OR coalesce((SELECT c.consent_given FROM sms_consent c WHERE c.phone_number = items.phone
                        ORDER BY c.seq DESC LIMIT 1), false)),
    first AS (SELECT DISTINCT ON (correlator) * FROM consented ORDER BY correlator, ord),
    inserted AS (
        INSERT INTO sms_messages (patient_id, phone_number, message_content, message_type, language_code, encoding, segments,
                                  client_correlator, sender_address, status, scheduled_at, next_attempt_at, callback_data,
                                  created_by)
        SELECT patient, phone, body, type, language, encoding, segments, correlator, sender,
               CASE WHEN scheduled_at IS NULL THEN 'pending' ELSE 'scheduled' END, scheduled_at,
               coalesce(scheduled_at, now()), callback_data, created_by
        FROM first ORDER BY ord
        ON CONFLICT (client_correlator) DO NOTHING
        RETURNING client_correlator)
    SELECT (SELECT coalesce(array_agg(ord::integer), '{}') FROM consented),
           (SELECT coalesce(array_agg(f.ord::integer), '{}') FROM inserted i JOIN first f ON f.correlator = i.client_correlator)
    INTO v_consented, v_created;
    RETURN QUERY
    SELECT u.ord::integer,
           CASE WHEN u.ord = ANY (v_created) THEN 'created'
                WHEN m.id IS NOT NULL THEN 'existing'
                WHEN u.ord = ANY (v_consented) THEN 'raced'
                ELSE 'no_consent' END,
           CASE WHEN m.id IS NULL THEN NULL ELSE m END
    FROM unnest(p_correlators) WITH ORDINALITY AS u(correlator, ord)
    LEFT JOIN sms_messages m ON m.client_correlator = u.correlator;
END
$$;
