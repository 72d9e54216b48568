-- Matching's candidate search always runs one plan: the KNN GiST scan that 0102 chose.
--
-- plpgsql replanned the search on every call (a custom plan per set of parameters), and
-- PostGIS's selectivity estimates for the radius made that planning cost 0.9 ms, more than the
-- 0.6 ms the scan itself takes at 100k volunteers. The generic plan has the same shape (the
-- KNN index scan ordered by `<->`, the radius as its index condition, anti-joins for offers,
-- refusals and busy responders), so it is pinned.
ALTER FUNCTION match_candidates(uuid, uuid, geography, double precision, text[], text[], double precision, integer)
    SET plan_cache_mode = force_generic_plan;
