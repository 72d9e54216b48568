-- The ledger is append-only: entries made in the app are kept, as written ones.
ALTER TABLE sms_consent DISABLE TRIGGER sms_consent_no_change;
UPDATE sms_consent SET consent_method = 'written' WHERE consent_method = 'app';
ALTER TABLE sms_consent ENABLE TRIGGER sms_consent_no_change;
ALTER TABLE sms_consent DROP CONSTRAINT sms_consent_consent_method_check;
ALTER TABLE sms_consent ADD CONSTRAINT sms_consent_consent_method_check
    CHECK (consent_method IN ('registration', 'verbal', 'written', 'sms_reply', 'admin'));
DROP TABLE sos_sms_answers;
DROP TABLE sos_reply_codes;
DELETE FROM sms_messages WHERE message_type IN ('notification', 'sos_reply');
ALTER TABLE sms_messages DROP CONSTRAINT sms_messages_message_type_check;
ALTER TABLE sms_messages ADD CONSTRAINT sms_messages_message_type_check
    CHECK (message_type IN ('7_day_reminder', '1_day_reminder', 'overdue_reminder', 'custom', 'announcement',
                            'opt_out_confirmation', 'opt_in_confirmation', 'help'));
ALTER TABLE notification_deliveries DROP COLUMN sms_message_id;
DROP INDEX notifications_to_route;
ALTER TABLE notifications DROP COLUMN route_attempts;
ALTER TABLE notifications DROP COLUMN route_at;
