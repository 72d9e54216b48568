UPDATE care_alert_calls SET status = 'completed' WHERE status = 'accepted';
ALTER TABLE care_alert_calls DROP CONSTRAINT care_alert_calls_status_check;
ALTER TABLE care_alert_calls ADD CONSTRAINT care_alert_calls_status_check
    CHECK (status IN ('requested', 'queued', 'ringing', 'in_progress', 'completed', 'busy', 'no_answer', 'failed',
                      'canceled', 'machine', 'timed_out', 'ended'));
