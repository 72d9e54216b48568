ALTER TABLE sms_messages ALTER COLUMN id SET DEFAULT gen_random_uuid();
DROP FUNCTION uuid_time_ordered();
