ALTER TABLE notification_deliveries DROP COLUMN email_id;
DELETE FROM notification_deliveries WHERE channel = 'email';
DELETE FROM emails WHERE kind = 'notification';
ALTER TABLE emails DROP CONSTRAINT emails_kind_check;
ALTER TABLE emails ADD CONSTRAINT emails_kind_check CHECK (kind IN ('password_reset', 'email_verification', 'account_locked'));
DELETE FROM notifications WHERE kind IN ('ACCOUNT_LOCKED', 'CREDENTIAL_UPDATED');
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_kind_check
    CHECK (kind IN ('SOS_OFFERED', 'SOS_ACCEPTED', 'SOS_UPDATED', 'CHAT_MESSAGE'));
