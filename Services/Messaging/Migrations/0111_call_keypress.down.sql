UPDATE sms_webhook_logs SET webhook_type = 'unknown' WHERE webhook_type = 'call_key';
ALTER TABLE sms_webhook_logs DROP CONSTRAINT sms_webhook_logs_webhook_type_check;
ALTER TABLE sms_webhook_logs ADD CONSTRAINT sms_webhook_logs_webhook_type_check
    CHECK (webhook_type IN ('delivery_status', 'inbound_message', 'call_status', 'unknown'));
UPDATE voice_calls SET status = 'in_progress' WHERE status = 'accepted';
DROP INDEX voice_calls_hangups;
CREATE INDEX voice_calls_hangups ON voice_calls (updated_at)
    WHERE hangup_requested AND NOT hung_up AND status IN ('queued', 'ringing', 'in_progress');
ALTER TABLE voice_calls DROP CONSTRAINT voice_calls_status_check;
ALTER TABLE voice_calls ADD CONSTRAINT voice_calls_status_check
    CHECK (status IN ('requested', 'queued', 'ringing', 'in_progress', 'completed', 'busy', 'no_answer', 'failed',
                      'canceled', 'machine'));
ALTER TABLE voice_calls DROP COLUMN accept_prompt;
