DROP FUNCTION match_candidates(uuid, uuid, geography, double precision, text[], text[], double precision, integer);
