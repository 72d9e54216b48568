-- One service may read one thing of a person: how to reach them. Messaging sends appointment
-- reminders and needs the name, primary phone, language and SMS preference of the patient
-- (GetPatientContact); nothing else of the record is returned. Its reads are audited like a
-- person's, with the service as the actor (actor_service) instead of a user id.
ALTER TABLE audit_log ADD COLUMN actor_service text CHECK (actor_service ~ '^[a-z]{1,30}$');
ALTER TABLE audit_log ALTER COLUMN actor_id DROP NOT NULL;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_one_actor CHECK ((actor_id IS NULL) <> (actor_service IS NULL));

-- The transaction acts as the messaging service (set by identity itself, after checking the
-- caller's token): SELECT only, never a write.
CREATE FUNCTION phi_contact_read_allowed() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('caremesh.actor_id', true), '') = 'service:messaging'
       AND string_to_array(coalesce(current_setting('caremesh.actor_roles', true), ''), ',') && ARRAY['service']
$$;
CREATE POLICY patients_contact_read ON patients FOR SELECT USING (phi_contact_read_allowed());
