DROP FUNCTION record_sms_batch(text[], text[], uuid[], text[], text[], text[], text[], integer[], text[], timestamptz[], text[],
                               text[], boolean[], bigint[]);
