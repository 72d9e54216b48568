DELETE FROM notifications WHERE kind IN ('RULE_ALERT', 'CARE_ALERT_UPDATED');
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_kind_check
    CHECK (kind IN ('SOS_OFFERED', 'SOS_ACCEPTED', 'SOS_UPDATED', 'CHAT_MESSAGE', 'ACCOUNT_LOCKED', 'CREDENTIAL_UPDATED'));
