DROP TABLE applied_events;
DROP TABLE event_cursors;
