DROP FUNCTION rotate_refresh_token(bytea, bytea, float8, float8);
