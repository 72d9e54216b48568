-- Notifications by email, and two kinds from identity (issue 33): an account locked (a security
-- notice, by email whatever the settings) and a volunteer's credentials (verified, withdrawn,
-- expired). An email delivery's status is its email's (`emails`, kind 'notification').
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_kind_check
    CHECK (kind IN ('SOS_OFFERED', 'SOS_ACCEPTED', 'SOS_UPDATED', 'CHAT_MESSAGE', 'ACCOUNT_LOCKED', 'CREDENTIAL_UPDATED'));
ALTER TABLE emails DROP CONSTRAINT emails_kind_check;
ALTER TABLE emails ADD CONSTRAINT emails_kind_check
    CHECK (kind IN ('password_reset', 'email_verification', 'account_locked', 'notification'));
ALTER TABLE notification_deliveries ADD COLUMN email_id uuid;
