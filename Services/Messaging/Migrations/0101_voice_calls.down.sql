DROP TABLE voice_calls;
