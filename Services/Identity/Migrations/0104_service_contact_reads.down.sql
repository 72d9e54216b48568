-- Audit entries are never removed: going back is refused once a service has read a contact.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM audit_log WHERE actor_service IS NOT NULL) THEN
        RAISE EXCEPTION 'audit_log holds reads by services; they cannot be removed';
    END IF;
END;
$$;
DROP POLICY patients_contact_read ON patients;
DROP FUNCTION phi_contact_read_allowed();
ALTER TABLE audit_log DROP CONSTRAINT audit_log_one_actor;
ALTER TABLE audit_log ALTER COLUMN actor_id SET NOT NULL;
ALTER TABLE audit_log DROP COLUMN actor_service;
