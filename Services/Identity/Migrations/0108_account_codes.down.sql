UPDATE refresh_tokens SET revoked_reason = 'logout_everywhere' WHERE revoked_reason IN ('password_reset', 'password_changed');
ALTER TABLE refresh_tokens DROP CONSTRAINT refresh_tokens_revoked_reason_check;
ALTER TABLE refresh_tokens ADD CONSTRAINT refresh_tokens_revoked_reason_check
    CHECK (revoked_reason IN ('logout', 'logout_everywhere', 'reuse_detected', 'deactivated', 'expired'));
DROP TABLE account_codes;
