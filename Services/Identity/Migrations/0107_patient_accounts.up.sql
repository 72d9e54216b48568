-- A patient's record and the same patient's account, linked (issue 32): the front desk links
-- them (LinkPatientAccount, audited), and an appointment booked for either then reaches both
-- the record (reminders) and the account (conversations, the patient's own view).
--
-- person_index: who an id names, without PHI (ids, kind, zone, linked account), for the
-- services that take a person's id (ResolvePerson). It is kept by a trigger from patients, so
-- resolving an id never opens the PHI table: it has no row-level security because it holds
-- nothing a policy would protect beyond what identity answers services anyway.

ALTER TABLE patients ADD COLUMN account_id uuid UNIQUE REFERENCES users (id);

CREATE TABLE person_index (
    id uuid PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('patient', 'client')),
    zone_id uuid,
    account_id uuid UNIQUE REFERENCES users (id)
);

-- The search path of the migration (identity's schema), whoever writes the row.
CREATE FUNCTION person_index_sync() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO person_index (id, kind, zone_id, account_id)
    VALUES (NEW.id, NEW.kind, NEW.home_zone_id, NEW.account_id)
    ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, zone_id = EXCLUDED.zone_id, account_id = EXCLUDED.account_id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER patients_person_index AFTER INSERT OR UPDATE OF kind, home_zone_id, account_id ON patients
    FOR EACH ROW EXECUTE FUNCTION person_index_sync();

-- The records that exist already (row-level security shows them only to an acting care role).
SELECT set_config('caremesh.actor_id', 'migration:0107', true), set_config('caremesh.actor_roles', 'admin', true);
INSERT INTO person_index (id, kind, zone_id, account_id) SELECT id, kind, home_zone_id, account_id FROM patients;
SELECT set_config('caremesh.actor_id', '', true), set_config('caremesh.actor_roles', '', true);
