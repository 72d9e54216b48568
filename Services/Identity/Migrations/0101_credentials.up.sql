-- Volunteer and professional credentials, their documents and verification (seed 001).
-- Availability, rating and cancellations are dispatch's; identity says who is verified.

CREATE TABLE volunteers (
    user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    skills text[] NOT NULL DEFAULT '{}',
    verification text NOT NULL DEFAULT 'pending' CHECK (verification IN ('pending', 'verified', 'revoked')),
    submitted_at timestamptz NOT NULL DEFAULT now(),
    decided_at timestamptz,
    decided_by uuid REFERENCES users (id),
    revocation_reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT valid_skills CHECK (skills <@ ARRAY['FIRST_AID', 'CPR', 'FIREFIGHTING', 'SEARCH_RESCUE', 'COUNSELING',
                                                   'MEDICAL_PROFESSIONAL', 'DRIVER', 'TRANSLATOR', 'OTHER']::text[]),
    CONSTRAINT volunteers_decision CHECK ((verification = 'pending') = (decided_at IS NULL)
                                          AND (decided_at IS NULL) = (decided_by IS NULL)),
    CONSTRAINT volunteers_not_self_verified CHECK (decided_by IS DISTINCT FROM user_id),
    CONSTRAINT volunteers_revocation_reason CHECK ((verification = 'revoked') = (revocation_reason IS NOT NULL))
);
CREATE INDEX volunteers_pending ON volunteers (submitted_at) WHERE verification = 'pending';
CREATE INDEX volunteers_verified ON volunteers (user_id) WHERE verification = 'verified';
CREATE TRIGGER volunteers_touch BEFORE UPDATE ON volunteers FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE certifications (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    volunteer_id uuid NOT NULL REFERENCES volunteers (user_id) ON DELETE CASCADE,
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    issued_by text NOT NULL DEFAULT '' CHECK (length(issued_by) <= 200),
    issue_date date NOT NULL,
    expiry_date date,
    document_url text CHECK (document_url ~ '^https://' AND length(document_url) <= 500),
    -- Set when the expiry timer fired (CredentialExpired announced).
    expired_at timestamptz,
    CONSTRAINT certifications_dates CHECK (expiry_date IS NULL OR expiry_date > issue_date)
);
CREATE INDEX certifications_volunteer ON certifications (volunteer_id);
CREATE INDEX certifications_expiring ON certifications (expiry_date) WHERE expired_at IS NULL AND expiry_date IS NOT NULL;

CREATE TABLE professionals (
    user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    license_number text NOT NULL CHECK (length(btrim(license_number)) BETWEEN 1 AND 100),
    specialization text NOT NULL CHECK (length(btrim(specialization)) BETWEEN 1 AND 100),
    hospital_affiliation text CHECK (length(hospital_affiliation) <= 255),
    verification text NOT NULL DEFAULT 'pending' CHECK (verification IN ('pending', 'verified', 'revoked')),
    submitted_at timestamptz NOT NULL DEFAULT now(),
    decided_at timestamptz,
    decided_by uuid REFERENCES users (id),
    revocation_reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT professionals_decision CHECK ((verification = 'pending') = (decided_at IS NULL)
                                             AND (decided_at IS NULL) = (decided_by IS NULL)),
    CONSTRAINT professionals_not_self_verified CHECK (decided_by IS DISTINCT FROM user_id),
    CONSTRAINT professionals_revocation_reason CHECK ((verification = 'revoked') = (revocation_reason IS NOT NULL))
);
CREATE UNIQUE INDEX professionals_license_number_key ON professionals (license_number);
CREATE INDEX professionals_pending ON professionals (submitted_at) WHERE verification = 'pending';
CREATE INDEX professionals_specialization ON professionals (specialization);
CREATE TRIGGER professionals_touch BEFORE UPDATE ON professionals FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE volunteer_documents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    volunteer_id uuid NOT NULL REFERENCES volunteers (user_id) ON DELETE CASCADE,
    document_type text NOT NULL CHECK (document_type IN ('ID_PROOF', 'CERTIFICATION', 'BACKGROUND_CHECK', 'OTHER')),
    document_url text NOT NULL CHECK (document_url ~ '^https://' AND length(document_url) <= 500),
    uploaded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX volunteer_documents_owner ON volunteer_documents (volunteer_id);

CREATE TABLE professional_documents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    professional_id uuid NOT NULL REFERENCES professionals (user_id) ON DELETE CASCADE,
    document_type text NOT NULL CHECK (document_type IN ('MEDICAL_LICENSE', 'DEGREE', 'HOSPITAL_ID', 'OTHER')),
    document_url text NOT NULL CHECK (document_url ~ '^https://' AND length(document_url) <= 500),
    uploaded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX professional_documents_owner ON professional_documents (professional_id);
