DROP TABLE signing_keys;
DROP TABLE suspicious_activities;
DROP TABLE refresh_tokens;
DROP TABLE user_profiles;
DROP TABLE login_failures;
DROP TABLE users;
DROP FUNCTION touch_updated_at();
