-- The people CareMesh serves (seed 003 patients as PHI, seed 002 clients, seed 004 phones,
-- SMS preference, language) and the audit trail of every access to them.
--
-- Row-level security is enabled and forced (so it binds the owning role too): a row is
-- visible only inside a transaction that has set the acting user and a care role with
--   SELECT set_config('caremesh.actor_id', $1, true), set_config('caremesh.actor_roles', $2, true)
-- which the service does for every PHI call, after authorizing it.

CREATE FUNCTION phi_access_allowed() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('caremesh.actor_id', true), '') <> ''
       AND string_to_array(coalesce(current_setting('caremesh.actor_roles', true), ''), ',')
           && ARRAY['admin', 'coordinator', 'professional', 'caregiver', 'ea']
$$;

CREATE TABLE patients (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind text NOT NULL CHECK (kind IN ('patient', 'client')),
    full_name text NOT NULL CHECK (length(btrim(full_name)) BETWEEN 1 AND 200),
    date_of_birth date CHECK (date_of_birth > DATE '1900-01-01'),
    primary_phone text CHECK (primary_phone ~ '^\+[1-9][0-9]{6,14}$'),
    secondary_phone text CHECK (secondary_phone ~ '^\+[1-9][0-9]{6,14}$'),
    preferred_language text NOT NULL DEFAULT 'en' CHECK (preferred_language ~ '^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$'),
    sms_preferred boolean NOT NULL DEFAULT false,
    home_zone_id uuid,
    created_by uuid NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT patients_sms_needs_phone CHECK (NOT sms_preferred OR primary_phone IS NOT NULL),
    CONSTRAINT patients_phones_differ CHECK (secondary_phone IS NULL OR secondary_phone <> primary_phone)
);
CREATE INDEX patients_name_prefix ON patients (lower(full_name) text_pattern_ops);
CREATE INDEX patients_primary_phone ON patients (primary_phone);
CREATE INDEX patients_kind_created ON patients (kind, created_at DESC);
CREATE TRIGGER patients_touch BEFORE UPDATE ON patients FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

ALTER TABLE patients ENABLE ROW LEVEL SECURITY;
ALTER TABLE patients FORCE ROW LEVEL SECURITY;
CREATE POLICY patients_care_staff ON patients FOR ALL
    USING (phi_access_allowed()) WITH CHECK (phi_access_allowed());

-- Who touched which PHI record, when and why. Never holds PHI itself: ids, roles, the action
-- and a purpose from a closed set (no free text a caller could fill with PHI).
CREATE TABLE audit_log (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    actor_id uuid NOT NULL,
    actor_roles text[] NOT NULL,
    action text NOT NULL CHECK (action IN ('CREATE', 'READ', 'UPDATE', 'SEARCH')),
    record_type text NOT NULL CHECK (record_type IN ('patient')),
    -- NULL for a search (the entry then records how many records it returned in result_count).
    record_id uuid,
    result_count int CHECK (result_count >= 0),
    purpose text NOT NULL CHECK (purpose IN ('TREATMENT', 'EMERGENCY', 'CARE_COORDINATION', 'PERSON_REQUEST',
                                             'OPERATIONS', 'COMPLIANCE')),
    request_id text NOT NULL DEFAULT '',
    at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT audit_log_record CHECK ((action = 'SEARCH') = (record_id IS NULL)),
    CONSTRAINT audit_log_count CHECK ((action = 'SEARCH') = (result_count IS NOT NULL))
);
CREATE INDEX audit_log_record ON audit_log (record_id, at DESC);
CREATE INDEX audit_log_actor ON audit_log (actor_id, at DESC);
CREATE INDEX audit_log_at ON audit_log (at DESC);

-- Append-only: an entry can be neither changed nor removed, not even by the owning role.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_immutable BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
