-- A care-alert call is answered only by a keypress (issue 33): the call asks for it with the
-- requester's accept prompt (TwiML <Gather>), and a 1 makes the call 'accepted'. An answering
-- machine or a pocket pickup stays 'in_progress' and ends 'completed', never accepted.
ALTER TABLE voice_calls ADD COLUMN accept_prompt text NOT NULL DEFAULT '' CHECK (length(accept_prompt) <= 300);
ALTER TABLE voice_calls DROP CONSTRAINT voice_calls_status_check;
ALTER TABLE voice_calls ADD CONSTRAINT voice_calls_status_check
    CHECK (status IN ('requested', 'queued', 'ringing', 'in_progress', 'accepted', 'completed', 'busy', 'no_answer', 'failed',
                      'canceled', 'machine'));
DROP INDEX voice_calls_hangups;
CREATE INDEX voice_calls_hangups ON voice_calls (updated_at)
    WHERE hangup_requested AND NOT hung_up AND status IN ('queued', 'ringing', 'in_progress', 'accepted');
-- The key arrives as its own webhook (Twilio posts the <Gather>'s action), logged as 'call_key'.
ALTER TABLE sms_webhook_logs DROP CONSTRAINT sms_webhook_logs_webhook_type_check;
ALTER TABLE sms_webhook_logs ADD CONSTRAINT sms_webhook_logs_webhook_type_check
    CHECK (webhook_type IN ('delivery_status', 'inbound_message', 'call_status', 'call_key', 'unknown'));
