-- Appointments (seed 003: appointments, availability, blocked_times): practitioners' weekly
-- hours in their own time zone, times they cannot be booked, and bookings. No double booking
-- is the database's job: an exclusion constraint over each live appointment's time range.

-- A practitioner who takes appointments: where their wall clock is, and the slot length.
CREATE TABLE practitioner_schedules (
    practitioner_id uuid PRIMARY KEY,
    -- IANA name, checked against pg_timezone_names when set.
    time_zone text NOT NULL CHECK (length(time_zone) BETWEEN 1 AND 64),
    slot_minutes integer NOT NULL DEFAULT 30 CHECK (slot_minutes BETWEEN 5 AND 480),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER practitioner_schedules_touch BEFORE UPDATE ON practitioner_schedules
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Weekly bookable hours, wall-clock times in the schedule's time zone (ISO weekday 1 = Monday).
CREATE TABLE availability (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    practitioner_id uuid NOT NULL REFERENCES practitioner_schedules (practitioner_id) ON DELETE CASCADE,
    weekday smallint NOT NULL CHECK (weekday BETWEEN 1 AND 7),
    start_time time NOT NULL,
    end_time time NOT NULL,
    CONSTRAINT availability_ordered CHECK (end_time > start_time),
    -- Windows of one day do not overlap (minutes since midnight as integer ranges).
    CONSTRAINT availability_no_overlap EXCLUDE USING gist (
        practitioner_id WITH =, weekday WITH =,
        int4range((extract(epoch FROM start_time) / 60)::int, (extract(epoch FROM end_time) / 60)::int) WITH &&)
);

-- Times a practitioner cannot be booked: [start, end).
CREATE TABLE blocked_times (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    practitioner_id uuid NOT NULL REFERENCES practitioner_schedules (practitioner_id) ON DELETE CASCADE,
    during tstzrange NOT NULL CHECK (NOT isempty(during) AND lower_inc(during) AND NOT upper_inc(during)
        AND NOT lower_inf(during) AND NOT upper_inf(during)),
    reason text NOT NULL DEFAULT '' CHECK (length(reason) <= 200),
    created_by uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX blocked_times_during ON blocked_times USING gist (practitioner_id, during);

CREATE TABLE appointments (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    practitioner_id uuid NOT NULL REFERENCES practitioner_schedules (practitioner_id),
    patient_id uuid NOT NULL,
    -- [start, end), both finite.
    during tstzrange NOT NULL CHECK (NOT isempty(during) AND lower_inc(during) AND NOT upper_inc(during)
        AND NOT lower_inf(during) AND NOT upper_inf(during)),
    status text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED', 'COMPLETED')),
    -- Why the visit: PHI.
    reason text NOT NULL DEFAULT '' CHECK (length(reason) <= 500),
    booked_by uuid NOT NULL,
    cancel_reason text NOT NULL DEFAULT '' CHECK (length(cancel_reason) <= 500),
    cancelled_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    confirmed_at timestamptz,
    cancelled_at timestamptz,
    completed_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT appointments_confirmed_after_created CHECK (confirmed_at IS NULL OR confirmed_at >= created_at),
    CONSTRAINT appointments_cancelled_iff_status CHECK ((status = 'CANCELLED') = (cancelled_at IS NOT NULL)),
    CONSTRAINT appointments_cancelled_after_created CHECK (cancelled_at IS NULL OR cancelled_at >= created_at),
    CONSTRAINT appointments_completed_iff_status CHECK ((status = 'COMPLETED') = (completed_at IS NOT NULL)),
    CONSTRAINT appointments_completed_confirmed CHECK (completed_at IS NULL
        OR (confirmed_at IS NOT NULL AND completed_at >= confirmed_at)),
    CONSTRAINT appointments_confirmed_status CHECK (status <> 'CONFIRMED' OR confirmed_at IS NOT NULL),
    -- No double booking: a practitioner's live appointments never overlap, nor a patient's.
    CONSTRAINT appointments_practitioner_free EXCLUDE USING gist (practitioner_id WITH =, during WITH &&)
        WHERE (status IN ('PENDING', 'CONFIRMED')),
    CONSTRAINT appointments_patient_free EXCLUDE USING gist (patient_id WITH =, during WITH &&)
        WHERE (status IN ('PENDING', 'CONFIRMED'))
);
-- Seed 003's composite index: a practitioner's day by status.
CREATE INDEX appointments_practitioner_status_start ON appointments (practitioner_id, status, lower(during));
CREATE INDEX appointments_patient_start ON appointments (patient_id, lower(during));
CREATE TRIGGER appointments_touch BEFORE UPDATE ON appointments FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
