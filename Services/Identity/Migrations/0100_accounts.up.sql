-- Accounts, sessions and signing keys (seed 001: users, user_profiles, refresh_tokens,
-- suspicious_activities; seed 002: roles, email verified). Timestamps carry a time zone.

CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END;
$$;

CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL CHECK (email = btrim(email) AND length(email) BETWEEN 3 AND 254 AND position('@' IN email) > 1),
    -- A PHC-style string carrying its own algorithm, parameters and salt ($scrypt$ln=17,r=8,p=1$...).
    password_hash text NOT NULL CHECK (password_hash LIKE '$%'),
    role text NOT NULL CHECK (role IN ('user', 'volunteer', 'professional', 'caregiver', 'coordinator', 'ea', 'admin')),
    is_active boolean NOT NULL DEFAULT true,
    email_verified boolean NOT NULL DEFAULT false,
    -- Sign-in refused until then (lockout after repeated failures).
    locked_until timestamptz,
    deactivated_at timestamptz,
    deactivated_by uuid REFERENCES users (id),
    deactivation_reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_deactivation_consistent CHECK (is_active = (deactivated_at IS NULL))
);
-- Unique ignoring case: "Ann@x.org" and "ann@X.org" are one account.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE INDEX users_role_active ON users (role, created_at) WHERE is_active;
CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Failed sign-ins inside the lockout window (cleared by a success or a lockout).
CREATE TABLE login_failures (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_user_at ON login_failures (user_id, at);

CREATE TABLE user_profiles (
    user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    -- E.164.
    phone text NOT NULL CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    address text CHECK (length(address) <= 500),
    photo_url text CHECK (photo_url ~ '^https://' AND length(photo_url) <= 500),
    preferences jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(preferences) = 'object'),
    emergency_contacts jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(emergency_contacts) = 'array'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX user_profiles_phone_key ON user_profiles (phone);
CREATE TRIGGER user_profiles_touch BEFORE UPDATE ON user_profiles FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Opaque refresh tokens, stored as SHA-256 of the token. One sign-in is one family; every
-- refresh rotates the token (rotated_at set, a child inserted). Presenting a rotated token
-- after the grace window revokes the family.
CREATE TABLE refresh_tokens (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id uuid NOT NULL,
    parent_id uuid REFERENCES refresh_tokens (id) ON DELETE SET NULL,
    token_hash bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    rotated_at timestamptz,
    revoked_at timestamptz,
    revoked_reason text CHECK (revoked_reason IN ('logout', 'logout_everywhere', 'reuse_detected', 'deactivated', 'expired')),
    CONSTRAINT refresh_tokens_expiry_after_creation CHECK (expires_at > created_at),
    CONSTRAINT refresh_tokens_rotation_after_creation CHECK (rotated_at IS NULL OR rotated_at >= created_at),
    CONSTRAINT refresh_tokens_revocation_has_reason CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id) WHERE revoked_at IS NULL;
CREATE INDEX refresh_tokens_user_live ON refresh_tokens (user_id) WHERE revoked_at IS NULL;
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);

CREATE TABLE suspicious_activities (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid REFERENCES users (id) ON DELETE SET NULL,
    activity_type text NOT NULL CHECK (activity_type ~ '^[A-Z][A-Z0-9_]{2,49}$'),
    details jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object'),
    ip_address inet,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX suspicious_activities_user ON suspicious_activities (user_id, created_at DESC);
CREATE INDEX suspicious_activities_type ON suspicious_activities (activity_type, created_at DESC);
CREATE INDEX suspicious_activities_created ON suspicious_activities (created_at DESC);

-- Ed25519 keys that sign access tokens. The private key is sealed (ChaCha20-Poly1305) with
-- the key-encryption key from IDENTITY_KEY_ENCRYPTION_KEY; it never leaves the service.
CREATE TABLE signing_keys (
    kid text PRIMARY KEY CHECK (kid ~ '^[A-Za-z0-9_-]{8,64}$'),
    algorithm text NOT NULL CHECK (algorithm = 'EdDSA'),
    public_key bytea NOT NULL CHECK (length(public_key) = 32),
    private_key_sealed bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Published from created_at; used for signing from active_from.
    active_from timestamptz NOT NULL,
    -- No token signed with it outlives this; it is unpublished after.
    retires_at timestamptz NOT NULL,
    CONSTRAINT signing_keys_order CHECK (created_at <= active_from AND active_from < retires_at)
);
