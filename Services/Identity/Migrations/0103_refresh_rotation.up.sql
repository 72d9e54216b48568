-- Refresh-token rotation in one round trip (it is identity's hottest write). The caller sends
-- the presented token's hash and the new token's hash; the function, in the statement's own
-- transaction, locks the presented token and either:
--   'issued'  - marks it rotated (if it was not already, within the grace window) and stores
--               the new token in the same family, returning the new token's expiry;
--   'refused' - unknown, revoked, expired, or the account is deactivated;
--   'reused'  - rotated before the grace window: nothing is changed here; the service revokes
--               the family and records the reuse in a transaction of its own.
-- PL/pgSQL keeps its statements' plans for the connection's life: no parse or plan per call.
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
