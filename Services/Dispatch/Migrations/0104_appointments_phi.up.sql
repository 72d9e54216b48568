-- Appointments are PHI (issue 32): who sees them is PostgreSQL's decision, and every access
-- leaves an audit entry.
--
-- * patient_account_id: the patient's own account (the booker's own, or the account linked to
--   the patient record named). patient_id stays the patient as named (the record when there is
--   one); a self-booked appointment of old gets its booker as its account.
-- * Forced row-level security keyed on the acting user the service sets in each transaction
--   (caremesh.actor_id, caremesh.actor_roles, caremesh.purpose): the practitioner, the
--   patient's account, or staff (admin, coordinator) acting with a stated purpose. A session
--   that sets none sees no row, the service's own role included.
-- * booked_times: when each live appointment holds its practitioner (ids and times, no PHI),
--   kept by a trigger, so free-slot searches and blocked-time checks see every booking without
--   seeing anyone's appointment. The exclusion constraints stay on appointments (PostgreSQL
--   checks constraints over every row, whatever the policies show).
-- * appointment_audit: append-only, ids and roles and a purpose from a closed set, never PHI.

ALTER TABLE appointments ADD COLUMN patient_account_id uuid;
UPDATE appointments SET patient_account_id = patient_id WHERE booked_by = patient_id;
ALTER TABLE appointments ADD CONSTRAINT appointments_patient_account_free EXCLUDE USING gist (patient_account_id WITH =, during WITH &&)
    WHERE (status IN ('PENDING', 'CONFIRMED'));
CREATE INDEX appointments_patient_account_start ON appointments (patient_account_id, lower(during));

CREATE TABLE booked_times (
    appointment_id uuid PRIMARY KEY REFERENCES appointments (id) ON DELETE CASCADE,
    practitioner_id uuid NOT NULL,
    during tstzrange NOT NULL
);
CREATE INDEX booked_times_during ON booked_times USING gist (practitioner_id, during);

-- The search path of the migration (dispatch's schema), whoever writes the row.
CREATE FUNCTION booked_times_sync() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.status IN ('PENDING', 'CONFIRMED') THEN
        INSERT INTO booked_times (appointment_id, practitioner_id, during) VALUES (NEW.id, NEW.practitioner_id, NEW.during)
        ON CONFLICT (appointment_id) DO UPDATE SET practitioner_id = EXCLUDED.practitioner_id, during = EXCLUDED.during;
    ELSE
        DELETE FROM booked_times WHERE appointment_id = NEW.id;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER appointments_booked_times AFTER INSERT OR UPDATE OF status, during, practitioner_id ON appointments
    FOR EACH ROW EXECUTE FUNCTION booked_times_sync();
INSERT INTO booked_times (appointment_id, practitioner_id, during)
SELECT id, practitioner_id, during FROM appointments WHERE status IN ('PENDING', 'CONFIRMED');

CREATE FUNCTION appointment_visible(practitioner uuid, patient_account uuid) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('caremesh.actor_id', true), '') <> ''
       AND (current_setting('caremesh.actor_id', true) = practitioner::text
            OR current_setting('caremesh.actor_id', true) = patient_account::text
            OR (string_to_array(coalesce(current_setting('caremesh.actor_roles', true), ''), ',') && ARRAY['admin', 'coordinator']
                AND coalesce(current_setting('caremesh.purpose', true), '') <> ''))
$$;
ALTER TABLE appointments ENABLE ROW LEVEL SECURITY;
ALTER TABLE appointments FORCE ROW LEVEL SECURITY;
CREATE POLICY appointments_parties ON appointments FOR ALL
    USING (appointment_visible(practitioner_id, patient_account_id))
    WITH CHECK (appointment_visible(practitioner_id, patient_account_id));

CREATE TABLE appointment_audit (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    actor_id uuid NOT NULL,
    actor_roles text[] NOT NULL,
    action text NOT NULL CHECK (action IN ('CREATE', 'READ', 'UPDATE', 'LIST')),
    -- NULL for a list (which records how many it returned).
    appointment_id uuid,
    result_count int CHECK (result_count >= 0),
    purpose text NOT NULL CHECK (purpose IN ('TREATMENT', 'EMERGENCY', 'CARE_COORDINATION', 'PERSON_REQUEST',
                                             'OPERATIONS', 'COMPLIANCE')),
    request_id text NOT NULL DEFAULT '',
    at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT appointment_audit_record CHECK ((action = 'LIST') = (appointment_id IS NULL)),
    CONSTRAINT appointment_audit_count CHECK ((action = 'LIST') = (result_count IS NOT NULL))
);
CREATE INDEX appointment_audit_appointment ON appointment_audit (appointment_id, at DESC);
CREATE INDEX appointment_audit_actor ON appointment_audit (actor_id, at DESC);
CREATE INDEX appointment_audit_at ON appointment_audit (at DESC);

CREATE FUNCTION appointment_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'appointment_audit is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER appointment_audit_immutable BEFORE UPDATE OR DELETE ON appointment_audit
    FOR EACH ROW EXECUTE FUNCTION appointment_audit_append_only();
CREATE TRIGGER appointment_audit_no_truncate BEFORE TRUNCATE ON appointment_audit
    FOR EACH STATEMENT EXECUTE FUNCTION appointment_audit_append_only();
