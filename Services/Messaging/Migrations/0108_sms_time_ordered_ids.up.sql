-- SMS ids become time-ordered (RFC 9562 version 7: Unix milliseconds in the first 48 bits,
-- then random bits), as event and webhook-log ids already are (Swift's UUID.timeOrdered).
-- With random ids every send wrote its primary-key entry, and each callback's entry in
-- sms_webhook_logs_message, to a random leaf page: after each checkpoint, a full-page image in
-- the WAL for nearly every send (measured: a quarter of the WAL's page images in a sends run).
-- Time-ordered, those indexes grow at their right edge.
CREATE FUNCTION uuid_time_ordered() RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                                          PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                                          FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;
ALTER TABLE sms_messages ALTER COLUMN id SET DEFAULT uuid_time_ordered();
