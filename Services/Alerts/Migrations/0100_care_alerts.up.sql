-- Care alerts (seed 000: care_alerts, coordinators), each call placed for an alert, escalation
-- policies, and the zone of each client (a projection of identity's PersonZoneChanged).
-- User, client and zone ids belong to other services (no foreign key across schemas).

CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END;
$$;

-- The zone of each client and patient, as identity last announced it.
CREATE TABLE client_zones (
    client_id uuid PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('patient', 'client')),
    zone_id uuid,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Who receives care-alert calls: a zone's coordinators, and on-call admin lines.
CREATE TABLE coordinators (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL UNIQUE,
    zone_id uuid,
    phone_number text NOT NULL CHECK (phone_number ~ '^\+[1-9][0-9]{6,14}$'),
    backup_coordinator_id uuid REFERENCES coordinators (id) ON DELETE SET NULL,
    is_active boolean NOT NULL DEFAULT true,
    tier text NOT NULL DEFAULT 'coordinator' CHECK (tier IN ('coordinator', 'admin')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT coordinators_backup_not_self CHECK (backup_coordinator_id IS NULL OR backup_coordinator_id <> id)
);
-- Alert routing: the active coordinators of a zone.
CREATE INDEX coordinators_zone_active ON coordinators (zone_id) WHERE is_active AND tier = 'coordinator';
CREATE INDEX coordinators_admins ON coordinators (tier) WHERE is_active AND tier = 'admin';
CREATE INDEX coordinators_backup ON coordinators (backup_coordinator_id) WHERE backup_coordinator_id IS NOT NULL;
CREATE TRIGGER coordinators_touch BEFORE UPDATE ON coordinators FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- No backup chain may loop (A -> B -> A). Checked after every change of a backup, with the
-- chain's writers serialized by a lock, so two concurrent changes cannot close a loop
-- between them.
CREATE FUNCTION coordinators_no_backup_cycle() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    looped boolean;
BEGIN
    IF NEW.backup_coordinator_id IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('alerts.coordinators.backup'));
    WITH RECURSIVE chain (id, depth) AS (
        SELECT NEW.backup_coordinator_id, 1
        UNION ALL
        SELECT c.backup_coordinator_id, chain.depth + 1
        FROM chain JOIN coordinators c ON c.id = chain.id
        WHERE c.backup_coordinator_id IS NOT NULL AND chain.depth < 1000
    )
    SELECT bool_or(id = NEW.id) INTO looped FROM chain;
    IF looped THEN
        RAISE EXCEPTION 'backup_coordinator_id would make a cycle of backups'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'coordinators_backup_no_cycle';
    END IF;
    RETURN NULL;
END;
$$;
CREATE CONSTRAINT TRIGGER coordinators_backup_no_cycle AFTER INSERT OR UPDATE OF backup_coordinator_id ON coordinators
    FOR EACH ROW EXECUTE FUNCTION coordinators_no_backup_cycle();

-- What comes after the backup: steps in order, repeated, then the admins. One per zone, and
-- one default (no zone).
CREATE TABLE escalation_policies (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    zone_id uuid,
    repeat_count integer NOT NULL DEFAULT 0 CHECK (repeat_count BETWEEN 0 AND 5),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT escalation_policies_one_per_zone UNIQUE NULLS NOT DISTINCT (zone_id)
);
CREATE TRIGGER escalation_policies_touch BEFORE UPDATE ON escalation_policies FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE escalation_steps (
    policy_id uuid NOT NULL REFERENCES escalation_policies (id) ON DELETE CASCADE,
    position integer NOT NULL CHECK (position BETWEEN 1 AND 10),
    ring_timeout_s integer NOT NULL CHECK (ring_timeout_s BETWEEN 5 AND 3600),
    PRIMARY KEY (policy_id, position)
);

CREATE TABLE escalation_step_targets (
    policy_id uuid NOT NULL,
    position integer NOT NULL,
    coordinator_id uuid NOT NULL REFERENCES coordinators (id) ON DELETE CASCADE,
    PRIMARY KEY (policy_id, position, coordinator_id),
    FOREIGN KEY (policy_id, position) REFERENCES escalation_steps (policy_id, position) ON DELETE CASCADE
);
CREATE INDEX escalation_step_targets_coordinator ON escalation_step_targets (coordinator_id);

CREATE TABLE care_alerts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    staff_id uuid NOT NULL,
    -- The coordinator it was routed to (none when the client's zone had none).
    coordinator_id uuid REFERENCES coordinators (id),
    zone_id uuid,
    alert_type text NOT NULL CHECK (alert_type IN ('medical_concern', 'medication_issue', 'behavioral_change',
        'safety_concern', 'family_request', 'equipment_issue', 'other')),
    voice_message_url text CHECK (voice_message_url ~ '^https://' AND length(voice_message_url) <= 2048),
    status text NOT NULL DEFAULT 'initiated' CHECK (status IN ('initiated', 'ringing', 'answered', 'no_answer', 'escalated',
        'resolved', 'cancelled')),
    escalation_step integer NOT NULL DEFAULT 0 CHECK (escalation_step >= 0),
    escalation_level text NOT NULL DEFAULT 'primary' CHECK (escalation_level IN ('primary', 'backup', 'policy', 'admins')),
    answered_by uuid REFERENCES coordinators (id),
    outcome text CHECK (length(outcome) <= 2000),
    closed_by uuid,
    initiated_at timestamptz NOT NULL DEFAULT now(),
    answered_at timestamptz,
    escalated_at timestamptz,
    resolved_at timestamptz,
    cancelled_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Timestamps in order.
    CONSTRAINT care_alerts_answered_after_initiated CHECK (answered_at IS NULL OR answered_at >= initiated_at),
    CONSTRAINT care_alerts_escalated_after_initiated CHECK (escalated_at IS NULL OR escalated_at >= initiated_at),
    CONSTRAINT care_alerts_resolved_after_initiated CHECK (resolved_at IS NULL OR resolved_at >= initiated_at),
    CONSTRAINT care_alerts_resolved_after_answered CHECK (resolved_at IS NULL OR answered_at IS NULL OR resolved_at >= answered_at),
    CONSTRAINT care_alerts_cancelled_after_initiated CHECK (cancelled_at IS NULL OR cancelled_at >= initiated_at),
    -- Each status carries what it implies.
    CONSTRAINT care_alerts_answered_has_time CHECK (status <> 'answered' OR answered_at IS NOT NULL),
    CONSTRAINT care_alerts_escalated_has_time CHECK (status <> 'escalated' OR escalated_at IS NOT NULL),
    CONSTRAINT care_alerts_resolved_iff_status CHECK ((status = 'resolved') = (resolved_at IS NOT NULL)),
    CONSTRAINT care_alerts_resolved_has_outcome CHECK (status <> 'resolved' OR (outcome IS NOT NULL AND outcome <> '')),
    CONSTRAINT care_alerts_cancelled_iff_status CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL)),
    CONSTRAINT care_alerts_closed_by CHECK (status NOT IN ('resolved', 'cancelled') OR closed_by IS NOT NULL)
);
-- The seed's six: the coordinator dashboard, SLA monitoring, a client's history, the
-- caregiver's own, the open ones, time.
CREATE INDEX care_alerts_coordinator_status ON care_alerts (coordinator_id, status);
CREATE INDEX care_alerts_status_initiated ON care_alerts (status, initiated_at);
CREATE INDEX care_alerts_client ON care_alerts (client_id, initiated_at DESC, id DESC);
CREATE INDEX care_alerts_staff ON care_alerts (staff_id, initiated_at DESC);
CREATE INDEX care_alerts_unanswered ON care_alerts (initiated_at) WHERE status IN ('initiated', 'ringing', 'escalated', 'no_answer');
CREATE INDEX care_alerts_answered_by ON care_alerts (answered_by, status) WHERE answered_by IS NOT NULL;
CREATE TRIGGER care_alerts_touch BEFORE UPDATE ON care_alerts FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Each call placed for an alert (its id is the call id messaging reports statuses with).
CREATE TABLE care_alert_calls (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    alert_id uuid NOT NULL REFERENCES care_alerts (id) ON DELETE CASCADE,
    escalation_step integer NOT NULL CHECK (escalation_step >= 0),
    escalation_level text NOT NULL CHECK (escalation_level IN ('primary', 'backup', 'policy', 'admins')),
    coordinator_id uuid NOT NULL REFERENCES coordinators (id),
    phone_number text NOT NULL,
    status text NOT NULL DEFAULT 'requested' CHECK (status IN ('requested', 'queued', 'ringing', 'in_progress', 'completed',
        'busy', 'no_answer', 'failed', 'canceled', 'machine', 'timed_out', 'ended')),
    requested_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (alert_id, escalation_step, coordinator_id)
);
CREATE INDEX care_alert_calls_alert ON care_alert_calls (alert_id, escalation_step, requested_at);
CREATE TRIGGER care_alert_calls_touch BEFORE UPDATE ON care_alert_calls FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
