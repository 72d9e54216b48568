-- Back to 0103's rotation (every replay inside the grace window gets a token of its own, no
-- token version).
DROP FUNCTION rotate_refresh_token(bytea, bytea, float8, float8);
CREATE FUNCTION rotate_refresh_token(p_hash bytea, p_new_hash bytea, p_grace_s float8, p_ttl_s float8)
RETURNS TABLE (outcome text, user_id uuid, family_id uuid, role text, token_id uuid, expires_at float8)
LANGUAGE plpgsql AS $$
DECLARE
    t refresh_tokens%ROWTYPE;
    u_role text;
    u_active boolean;
BEGIN
    SELECT * INTO t FROM refresh_tokens r WHERE r.token_hash = p_hash FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'refused', NULL::uuid, NULL::uuid, NULL::text, NULL::uuid, NULL::float8;
        RETURN;
    END IF;
    SELECT u.role, u.is_active INTO u_role, u_active FROM users u WHERE u.id = t.user_id;
    IF t.revoked_at IS NOT NULL OR t.expires_at <= now() OR NOT u_active THEN
        RETURN QUERY SELECT 'refused', t.user_id, t.family_id, u_role, t.id, NULL::float8;
        RETURN;
    END IF;
    IF t.rotated_at IS NOT NULL AND now() - t.rotated_at > make_interval(secs => p_grace_s) THEN
        RETURN QUERY SELECT 'reused', t.user_id, t.family_id, u_role, t.id, NULL::float8;
        RETURN;
    END IF;
    IF t.rotated_at IS NULL THEN
        UPDATE refresh_tokens SET rotated_at = now() WHERE id = t.id;
    END IF;
    RETURN QUERY
        INSERT INTO refresh_tokens (user_id, family_id, parent_id, token_hash, expires_at)
        VALUES (t.user_id, t.family_id, t.id, p_new_hash, now() + make_interval(secs => p_ttl_s))
        RETURNING 'issued', t.user_id, t.family_id, u_role, refresh_tokens.id, extract(epoch FROM refresh_tokens.expires_at)::float8;
END;
$$;
ALTER TABLE users DROP COLUMN token_version;
