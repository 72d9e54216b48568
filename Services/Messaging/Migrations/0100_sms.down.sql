DROP TABLE webhook_applied;
DROP TABLE sms_webhook_logs;
DROP FUNCTION webhook_log_access_allowed();
DROP TABLE sms_messages;
DROP TABLE sms_consent;
DROP FUNCTION sms_consent_append_only();
DROP TABLE sms_templates;
DROP FUNCTION touch_updated_at();
