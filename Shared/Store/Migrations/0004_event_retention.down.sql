DROP INDEX jobs_finished;
DROP INDEX applied_events_applied_at;
DROP TABLE outbox_horizon;
DROP TABLE event_consumers;
