DROP INDEX sms_webhook_logs_inbox;
CREATE INDEX sms_webhook_logs_unprocessed ON sms_webhook_logs (created_at) WHERE NOT processed;
ALTER TABLE sms_webhook_logs DROP COLUMN retry_at;
ALTER TABLE sms_webhook_logs DROP COLUMN attempts;
ALTER TABLE sms_webhook_logs DROP COLUMN received_seq;
