ALTER FUNCTION match_candidates(uuid, uuid, geography, double precision, text[], text[], double precision, integer)
    RESET plan_cache_mode;
