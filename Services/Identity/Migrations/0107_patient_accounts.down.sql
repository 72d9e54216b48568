DROP TRIGGER patients_person_index ON patients;
DROP FUNCTION person_index_sync();
DROP TABLE person_index;
ALTER TABLE patients DROP COLUMN account_id;
