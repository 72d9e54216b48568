-- A rotated refresh token presented again inside the grace window is answered with the
-- successor it already has, never a second one (before, each replay got a token of its own and
-- the session forked into chains that all refreshed on). The service derives the successor
-- from the presented token (HMAC under its own key), so the caller always sends the hash of the
-- same successor: the first rotation stores it, a replay only finds it under the token's lock.
--   'issued'  - rotated now (the successor stored), or replayed inside the window (the
--               successor found, not revoked): its expiry is returned;
--   'refused' - unknown, revoked, expired, the account deactivated, or a replay whose
--               successor is not the derived one (a token rotated before this migration);
--   'reused'  - rotated before the grace window: the service revokes the family.
--
-- And revocation that takes effect: an access token lives 15 minutes, and until now deactivation,
-- a role change or logout everywhere left the ones already issued working until they expired.
-- Each of these now bumps the user's token version; every access token carries the version it
-- was issued at (claim `tv`), and identity announces TokensRevoked with the new version, which
-- the router pulls and enforces at once (older tokens refused). The refresh rotation returns
-- the version with the role, read in the same snapshot, so a token signed from a stale read is
-- stale by its version too.
ALTER TABLE users ADD COLUMN token_version integer NOT NULL DEFAULT 0 CHECK (token_version >= 0);

DROP FUNCTION rotate_refresh_token(bytea, bytea, float8, float8);
CREATE FUNCTION rotate_refresh_token(p_hash bytea, p_new_hash bytea, p_grace_s float8, p_ttl_s float8)
RETURNS TABLE (outcome text, user_id uuid, family_id uuid, role text, token_id uuid, expires_at float8, token_version int)
LANGUAGE plpgsql AS $$
DECLARE
    t refresh_tokens%ROWTYPE;
    u_role text;
    u_active boolean;
    u_version int;
BEGIN
    SELECT * INTO t FROM refresh_tokens r WHERE r.token_hash = p_hash FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'refused', NULL::uuid, NULL::uuid, NULL::text, NULL::uuid, NULL::float8, NULL::int;
        RETURN;
    END IF;
    SELECT u.role, u.is_active, u.token_version INTO u_role, u_active, u_version FROM users u WHERE u.id = t.user_id;
    IF t.revoked_at IS NOT NULL OR t.expires_at <= now() OR NOT u_active THEN
        RETURN QUERY SELECT 'refused', t.user_id, t.family_id, u_role, t.id, NULL::float8, NULL::int;
        RETURN;
    END IF;
    IF t.rotated_at IS NOT NULL AND now() - t.rotated_at > make_interval(secs => p_grace_s) THEN
        RETURN QUERY SELECT 'reused', t.user_id, t.family_id, u_role, t.id, NULL::float8, NULL::int;
        RETURN;
    END IF;
    IF t.rotated_at IS NOT NULL THEN
        RETURN QUERY
            SELECT 'issued', t.user_id, t.family_id, u_role, c.id, extract(epoch FROM c.expires_at)::float8, u_version
            FROM refresh_tokens c
            WHERE c.parent_id = t.id AND c.token_hash = p_new_hash AND c.revoked_at IS NULL AND c.expires_at > now();
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'refused', t.user_id, t.family_id, u_role, t.id, NULL::float8, NULL::int;
        END IF;
        RETURN;
    END IF;
    UPDATE refresh_tokens SET rotated_at = now() WHERE id = t.id;
    RETURN QUERY
        INSERT INTO refresh_tokens (user_id, family_id, parent_id, token_hash, expires_at)
        VALUES (t.user_id, t.family_id, t.id, p_new_hash, now() + make_interval(secs => p_ttl_s))
        RETURNING 'issued', t.user_id, t.family_id, u_role, refresh_tokens.id, extract(epoch FROM refresh_tokens.expires_at)::float8, u_version;
END;
$$;
