-- Only a keypress answers a care alert by phone (issue 33): a call attempt is 'in_progress'
-- while the person hears the alert, 'accepted' once they press 1, and 'completed' when it
-- ended without that (not an answer).
ALTER TABLE care_alert_calls DROP CONSTRAINT care_alert_calls_status_check;
ALTER TABLE care_alert_calls ADD CONSTRAINT care_alert_calls_status_check
    CHECK (status IN ('requested', 'queued', 'ringing', 'in_progress', 'accepted', 'completed', 'busy', 'no_answer', 'failed',
                      'canceled', 'machine', 'timed_out', 'ended'));
