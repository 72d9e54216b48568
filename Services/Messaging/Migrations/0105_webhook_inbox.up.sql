-- The webhook log becomes the inbox: a webhook is answered once its log row is committed, and
-- applied afterwards, in order of arrival (received_seq), by the service's processor. A row
-- waits while NOT processed (authentic requests only: a refused one has a 4xx response_status);
-- attempts counts the processor's tries (it backs off between them and gives up after 5,
-- leaving processing_error).
SELECT set_config('caremesh.actor_id', 'service:messaging', true), set_config('caremesh.actor_roles', 'service', true);
ALTER TABLE sms_webhook_logs ADD COLUMN received_seq bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE sms_webhook_logs ADD COLUMN attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0);
-- After a failed try: not before this.
ALTER TABLE sms_webhook_logs ADD COLUMN retry_at timestamptz;
-- Before this, webhooks were applied as they arrived: none waits.
UPDATE sms_webhook_logs SET processed = true WHERE NOT processed AND response_status = 200;
DROP INDEX sms_webhook_logs_unprocessed;
CREATE INDEX sms_webhook_logs_inbox ON sms_webhook_logs (received_seq) WHERE NOT processed AND response_status = 200;
