-- Matching's candidate search as a function, so it can carry its own planner setting.
--
-- With the filters (eligible, fresh, not offered, not refused, not busy) PostgreSQL estimates
-- a handful of rows inside the radius and picks a bitmap scan of the whole radius followed by
-- a sort: in a city with 100k volunteers that reads and geodesically rechecks ~1 000 rows per
-- wave (6–19 ms measured). The GiST index scan ordered by `<->` with the radius as its index
-- condition stops after the pool it needs (0.3 ms); bitmap scans are turned off inside this
-- function only, which leaves that plan as the only cheap one. Still bounded: the index
-- condition keeps the scan inside the radius when few candidates qualify.
CREATE FUNCTION match_candidates(
    p_sos uuid, p_requester uuid, p_point geography, p_radius_m double precision, p_roles text[],
    p_preferred text[], p_max_age_s double precision, p_pool integer)
RETURNS TABLE (user_id uuid, distance_m double precision, skill_match boolean)
LANGUAGE plpgsql STABLE
SET enable_bitmapscan = off
AS $$
BEGIN
    RETURN QUERY
    SELECT l.user_id, ST_Distance(l.location, p_point, false), r.skills && p_preferred
    FROM user_locations l JOIN responders r ON r.user_id = l.user_id
    WHERE ST_DWithin(l.location, p_point, p_radius_m, false)
      AND r.available AND r.verified AND r.active AND NOT r.credential_expired
      AND r.role = ANY (p_roles)
      AND l.updated_at > now() - make_interval(secs => p_max_age_s)
      AND l.user_id <> p_requester
      AND NOT EXISTS (SELECT 1 FROM sos_offers o WHERE o.sos_id = p_sos AND o.responder_id = l.user_id)
      AND NOT EXISTS (SELECT 1 FROM sos_rejections j WHERE j.sos_id = p_sos AND j.volunteer_id = l.user_id)
      AND NOT EXISTS (SELECT 1 FROM sos_requests b
                      WHERE b.accepted_by = l.user_id AND b.status IN ('ACCEPTED', 'IN_PROGRESS'))
    ORDER BY l.location <-> p_point
    LIMIT p_pool;
END;
$$;
