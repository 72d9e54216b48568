-- Two kinds from alerts (issue 33): a rule alert (for its assignee, or the pairing's
-- coordinators while it has none) and news of a caregiver's care alert (answered, escalated,
-- nobody answered).
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_kind_check
    CHECK (kind IN ('SOS_OFFERED', 'SOS_ACCEPTED', 'SOS_UPDATED', 'CHAT_MESSAGE', 'ACCOUNT_LOCKED', 'CREDENTIAL_UPDATED', 'RULE_ALERT',
                    'CARE_ALERT_UPDATED'));
