-- Single-use codes emailed for account recovery and email verification (issue 33). Only a keyed
-- hash is kept (HMAC-SHA256 under identity's own key: a leaked table does not give the codes
-- away to a search of the 10^8 of them); a code works once (its row is deleted), before it
-- expires, and at most 5 wrong tries; a new code of the same purpose replaces the old one.
CREATE TABLE account_codes (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose text NOT NULL CHECK (purpose IN ('password_reset', 'email_verification')),
    code_hash bytea NOT NULL CHECK (length(code_hash) = 32),
    expires_at timestamptz NOT NULL,
    wrong_tries integer NOT NULL DEFAULT 0 CHECK (wrong_tries >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, purpose)
);
CREATE INDEX account_codes_expiry ON account_codes (expires_at);

-- A password reset or change ends every session.
ALTER TABLE refresh_tokens DROP CONSTRAINT refresh_tokens_revoked_reason_check;
ALTER TABLE refresh_tokens ADD CONSTRAINT refresh_tokens_revoked_reason_check
    CHECK (revoked_reason IN ('logout', 'logout_everywhere', 'reuse_detected', 'deactivated', 'expired', 'password_reset',
                              'password_changed'));
