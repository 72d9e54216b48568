-- Rules over staff reports (seed 002): EAs' work settings, pairings, end-of-day reports,
-- start-of-day logs, PTO, alert rules with their versions, the alerts rules raise, and
-- coaching notes. EA and client ids belong to identity (no foreign key across schemas); a
-- pairing's client must be one identity announced (client_zones).

-- An EA's work settings (seed 002's EAs table).
CREATE TABLE staff_settings (
    ea_id uuid PRIMARY KEY,
    expected_show_up_time time NOT NULL,
    -- IANA, checked by the service.
    time_zone text NOT NULL CHECK (time_zone ~ '^[A-Za-z0-9_+/-]{1,64}$'),
    healthcare_eligibility_date date,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER staff_settings_touch BEFORE UPDATE ON staff_settings FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE pairings (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    ea_id uuid NOT NULL REFERENCES staff_settings (ea_id),
    client_id uuid NOT NULL REFERENCES client_zones (client_id),
    start_date date NOT NULL,
    health_status text NOT NULL DEFAULT 'green' CHECK (health_status IN ('green', 'yellow', 'red')),
    health_status_override boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pairings_ea_client UNIQUE (ea_id, client_id),
    -- The target of reports' (pairing, EA) foreign key: a report's EA is its pairing's.
    CONSTRAINT pairings_id_ea UNIQUE (id, ea_id)
);
CREATE INDEX pairings_client ON pairings (client_id);
CREATE INDEX pairings_created ON pairings (created_at DESC, id DESC);
CREATE TRIGGER pairings_touch BEFORE UPDATE ON pairings FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- The ten report fields: eight facts rules use, two texts for people.
CREATE TABLE end_of_day_reports (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    pairing_id uuid NOT NULL,
    ea_id uuid NOT NULL,
    report_date date NOT NULL,
    hours_worked numeric(4, 2) NOT NULL CHECK (hours_worked BETWEEN 0 AND 24),
    tasks_completed integer NOT NULL CHECK (tasks_completed BETWEEN 0 AND 1000),
    tasks_pending integer NOT NULL CHECK (tasks_pending BETWEEN 0 AND 1000),
    client_satisfaction smallint NOT NULL CHECK (client_satisfaction BETWEEN 1 AND 5),
    ea_wellbeing smallint NOT NULL CHECK (ea_wellbeing BETWEEN 1 AND 5),
    needs_support boolean NOT NULL,
    client_unresponsive boolean NOT NULL,
    scope_change_requested boolean NOT NULL,
    highlights text NOT NULL DEFAULT '' CHECK (length(highlights) <= 4000),
    blockers text NOT NULL DEFAULT '' CHECK (length(blockers) <= 4000),
    submitted_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT end_of_day_reports_pairing FOREIGN KEY (pairing_id, ea_id) REFERENCES pairings (id, ea_id) ON DELETE CASCADE,
    -- One report per pairing and day (also the seed's (pairing_id, report_date) index).
    CONSTRAINT end_of_day_reports_pairing_day UNIQUE (pairing_id, report_date)
);
CREATE INDEX end_of_day_reports_ea_day ON end_of_day_reports (ea_id, report_date);
CREATE TRIGGER end_of_day_reports_touch BEFORE UPDATE ON end_of_day_reports FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE start_of_day_logs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    ea_id uuid NOT NULL REFERENCES staff_settings (ea_id),
    -- The day logged_at falls on in the EA's time zone.
    log_date date NOT NULL,
    logged_at timestamptz NOT NULL,
    expected_show_up_time time NOT NULL,
    was_late boolean NOT NULL,
    minutes_late integer NOT NULL CHECK (minutes_late BETWEEN 0 AND 1440),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT start_of_day_logs_late CHECK (was_late = (minutes_late > 0)),
    CONSTRAINT start_of_day_logs_ea_day UNIQUE (ea_id, log_date)
);

CREATE TABLE pto_records (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    ea_id uuid NOT NULL REFERENCES staff_settings (ea_id),
    start_date date NOT NULL,
    end_date date NOT NULL,
    reason text NOT NULL CHECK (reason IN ('vacation', 'sick', 'personal', 'public_holiday', 'bereavement', 'other')),
    created_by uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pto_records_dates CHECK (end_date >= start_date AND end_date - start_date <= 365)
);
CREATE INDEX pto_records_ea_dates ON pto_records (ea_id, start_date, end_date);

-- Alert rules as data; an edit bumps `version`, and every version is kept (the trigger
-- below), so an alert names exactly the rule that fired.
CREATE TABLE alert_rules (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    rule_number integer NOT NULL UNIQUE CHECK (rule_number > 0),
    name text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    rule_type text NOT NULL CHECK (rule_type ~ '^[a-z][a-z_]{0,31}$'),
    severity text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    is_enabled boolean NOT NULL DEFAULT true,
    trigger_condition jsonb NOT NULL CHECK (jsonb_typeof(trigger_condition) = 'object'),
    data_source text NOT NULL
        CHECK (data_source IN ('start_of_day_logs', 'end_of_day_reports', 'start_of_day_logs,end_of_day_reports')),
    business_rationale text NOT NULL CHECK (length(business_rationale) <= 2000),
    alert_title text NOT NULL CHECK (length(alert_title) BETWEEN 1 AND 200),
    alert_description text NOT NULL CHECK (length(alert_description) <= 2000),
    suggested_action text NOT NULL CHECK (length(suggested_action) <= 2000),
    -- The thresholds in force, {name: number}.
    adjustable_thresholds jsonb NOT NULL CHECK (jsonb_typeof(adjustable_thresholds) = 'object'),
    default_thresholds jsonb NOT NULL CHECK (jsonb_typeof(default_thresholds) = 'object'),
    version integer NOT NULL DEFAULT 1 CHECK (version > 0),
    changed_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER alert_rules_touch BEFORE UPDATE ON alert_rules FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE alert_rule_versions (
    rule_id uuid NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    version integer NOT NULL,
    name text NOT NULL,
    rule_type text NOT NULL,
    severity text NOT NULL,
    is_enabled boolean NOT NULL,
    trigger_condition jsonb NOT NULL,
    data_source text NOT NULL,
    business_rationale text NOT NULL,
    alert_title text NOT NULL,
    alert_description text NOT NULL,
    suggested_action text NOT NULL,
    adjustable_thresholds jsonb NOT NULL,
    default_thresholds jsonb NOT NULL,
    changed_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_id, version)
);

-- An edit that changes anything is the next version; one that changes nothing is none.
CREATE FUNCTION alert_rules_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.name, NEW.rule_type, NEW.severity, NEW.is_enabled, NEW.trigger_condition, NEW.data_source,
        NEW.business_rationale, NEW.alert_title, NEW.alert_description, NEW.suggested_action,
        NEW.adjustable_thresholds, NEW.default_thresholds)
       IS DISTINCT FROM
       (OLD.name, OLD.rule_type, OLD.severity, OLD.is_enabled, OLD.trigger_condition, OLD.data_source,
        OLD.business_rationale, OLD.alert_title, OLD.alert_description, OLD.suggested_action,
        OLD.adjustable_thresholds, OLD.default_thresholds) THEN
        NEW.version = OLD.version + 1;
    ELSE
        NEW.version = OLD.version;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER alert_rules_bump_version BEFORE UPDATE ON alert_rules FOR EACH ROW EXECUTE FUNCTION alert_rules_bump_version();

-- Every version is kept as it was.
CREATE FUNCTION alert_rules_keep_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.version <> OLD.version THEN
        INSERT INTO alert_rule_versions (rule_id, version, name, rule_type, severity, is_enabled, trigger_condition, data_source,
                                         business_rationale, alert_title, alert_description, suggested_action,
                                         adjustable_thresholds, default_thresholds, changed_by)
        VALUES (NEW.id, NEW.version, NEW.name, NEW.rule_type, NEW.severity, NEW.is_enabled, NEW.trigger_condition, NEW.data_source,
                NEW.business_rationale, NEW.alert_title, NEW.alert_description, NEW.suggested_action,
                NEW.adjustable_thresholds, NEW.default_thresholds, NEW.changed_by);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER alert_rules_keep_version AFTER INSERT OR UPDATE ON alert_rules FOR EACH ROW EXECUTE FUNCTION alert_rules_keep_version();

-- The alerts rules raise (seed 002's alerts table).
CREATE TABLE alerts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    pairing_id uuid NOT NULL REFERENCES pairings (id) ON DELETE CASCADE,
    rule_id uuid NOT NULL REFERENCES alert_rules (id),
    rule_version integer NOT NULL,
    severity text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'resolved', 'dismissed')),
    assigned_to uuid,
    detected_at timestamptz NOT NULL DEFAULT now(),
    acknowledged_at timestamptz,
    resolved_at timestamptz,
    -- The facts used: {"as_of", "thresholds", "findings": [...]}.
    evidence jsonb NOT NULL,
    -- The latest day in the evidence: a closed alert is raised again only on later facts.
    evidence_through date NOT NULL,
    notes text NOT NULL DEFAULT '' CHECK (length(notes) <= 4000),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alerts_rule_version FOREIGN KEY (rule_id, rule_version) REFERENCES alert_rule_versions (rule_id, version),
    CONSTRAINT alerts_acknowledged_order CHECK (acknowledged_at IS NULL OR acknowledged_at >= detected_at),
    CONSTRAINT alerts_resolved_order CHECK (resolved_at IS NULL OR resolved_at >= detected_at),
    CONSTRAINT alerts_closed_has_time CHECK ((status IN ('resolved', 'dismissed')) = (resolved_at IS NOT NULL)),
    CONSTRAINT alerts_acknowledged_has_time CHECK (status <> 'acknowledged' OR acknowledged_at IS NOT NULL)
);
CREATE INDEX alerts_pairing_status ON alerts (pairing_id, status);
CREATE INDEX alerts_severity_status ON alerts (severity, status);
CREATE INDEX alerts_assigned_status ON alerts (assigned_to, status);
CREATE INDEX alerts_detected ON alerts (detected_at DESC, id DESC);
-- Re-evaluation never duplicates: one open (or acknowledged) alert per rule and pairing.
CREATE UNIQUE INDEX alerts_one_open ON alerts (rule_id, pairing_id) WHERE status IN ('open', 'acknowledged');
CREATE TRIGGER alerts_touch BEFORE UPDATE ON alerts FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- One note per EA, one per pairing, one general.
CREATE TABLE coaching_notes (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    note_type text NOT NULL CHECK (note_type IN ('ea', 'pairing', 'general')),
    ea_id uuid REFERENCES staff_settings (ea_id),
    pairing_id uuid REFERENCES pairings (id) ON DELETE CASCADE,
    content text NOT NULL CHECK (length(content) BETWEEN 1 AND 20000),
    updated_by uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT coaching_notes_subject CHECK (
        (note_type = 'ea' AND ea_id IS NOT NULL AND pairing_id IS NULL)
        OR (note_type = 'pairing' AND pairing_id IS NOT NULL AND ea_id IS NULL)
        OR (note_type = 'general' AND ea_id IS NULL AND pairing_id IS NULL)),
    CONSTRAINT coaching_notes_one_per_subject UNIQUE NULLS NOT DISTINCT (note_type, ea_id, pairing_id)
);
CREATE TRIGGER coaching_notes_touch BEFORE UPDATE ON coaching_notes FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
