-- SOS dispatch (seed 001: user_locations, volunteers' availability and rating, sos_requests,
-- sos_rejections, sos_cancellations, sos_feedback; the analytics queries' indexes) and zones.
-- User ids are identity's (no foreign key across schemas). Timestamps carry a time zone.

CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END;
$$;

-- Volunteers and professionals as dispatch sees them: a projection of identity's events
-- (verified, skills, active, expired credentials) plus their own availability and record.
CREATE TABLE responders (
    user_id uuid PRIMARY KEY,
    role text NOT NULL CHECK (role IN ('volunteer', 'professional')),
    verified boolean NOT NULL DEFAULT false,
    verified_at timestamptz,
    active boolean NOT NULL DEFAULT true,
    -- A certification expired after the last verification: not offered until re-verified.
    credential_expired boolean NOT NULL DEFAULT false,
    available boolean NOT NULL DEFAULT false,
    skills text[] NOT NULL DEFAULT '{}' CHECK (skills <@ ARRAY['FIRST_AID', 'CPR', 'FIREFIGHTING', 'SEARCH_RESCUE',
        'COUNSELING', 'MEDICAL_PROFESSIONAL', 'DRIVER', 'TRANSLATOR', 'OTHER']::text[]),
    rating_count integer NOT NULL DEFAULT 0 CHECK (rating_count >= 0),
    rating_sum integer NOT NULL DEFAULT 0 CHECK (rating_sum >= rating_count AND rating_sum <= 5 * rating_count),
    average_rating numeric(3, 2) NOT NULL DEFAULT 0 CHECK (average_rating >= 0 AND average_rating <= 5),
    cancellation_count integer NOT NULL DEFAULT 0 CHECK (cancellation_count >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT responders_verified_at CHECK (NOT verified OR verified_at IS NOT NULL),
    CONSTRAINT responders_inactive_unavailable CHECK (active OR NOT available)
);
-- Matching: the eligible and available.
CREATE INDEX responders_matching ON responders (user_id) WHERE available AND verified AND active AND NOT credential_expired;
CREATE INDEX responders_rating ON responders (average_rating DESC) WHERE verified;
CREATE TRIGGER responders_touch BEFORE UPDATE ON responders FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Each responder's last fix.
CREATE TABLE user_locations (
    user_id uuid PRIMARY KEY,
    location geography(Point, 4326) NOT NULL,
    accuracy_m double precision NOT NULL DEFAULT 0 CHECK (accuracy_m >= 0 AND accuracy_m <= 10000),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_locations_gist ON user_locations USING gist (location);

CREATE TABLE sos_requests (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    requester_id uuid NOT NULL,
    emergency_type text NOT NULL CHECK (emergency_type IN ('MEDICAL', 'FIRE', 'ACCIDENT', 'CRIME', 'NATURAL_DISASTER', 'OTHER')),
    priority text NOT NULL CHECK (priority IN ('CRITICAL', 'HIGH', 'MEDIUM', 'LOW')),
    -- 1 = CRITICAL … 4 = LOW: the board sorts by urgency, not by the names' spelling.
    priority_rank smallint GENERATED ALWAYS AS (
        CASE priority WHEN 'CRITICAL' THEN 1 WHEN 'HIGH' THEN 2 WHEN 'MEDIUM' THEN 3 ELSE 4 END) STORED,
    location geography(Point, 4326) NOT NULL,
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    status text NOT NULL DEFAULT 'PENDING'
        CHECK (status IN ('PENDING', 'ACCEPTED', 'IN_PROGRESS', 'RESOLVED', 'CANCELLED', 'ESCALATED')),
    wave integer NOT NULL DEFAULT 1 CHECK (wave >= 1),
    accepted_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    accepted_at timestamptz,
    started_at timestamptz,
    resolved_at timestamptz,
    cancelled_at timestamptz,
    escalated_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Timestamps in order.
    CONSTRAINT sos_accepted_after_created CHECK (accepted_at IS NULL OR accepted_at >= created_at),
    CONSTRAINT sos_started_after_accepted CHECK (started_at IS NULL OR (accepted_at IS NOT NULL AND started_at >= accepted_at)),
    CONSTRAINT sos_resolved_after_started CHECK (resolved_at IS NULL OR (started_at IS NOT NULL AND resolved_at >= started_at)),
    CONSTRAINT sos_cancelled_after_created CHECK (cancelled_at IS NULL OR cancelled_at >= created_at),
    CONSTRAINT sos_escalated_after_created CHECK (escalated_at IS NULL OR escalated_at >= created_at),
    -- Each status carries what it implies.
    CONSTRAINT sos_unaccepted_has_no_responder CHECK (status NOT IN ('PENDING', 'ESCALATED')
        OR (accepted_by IS NULL AND accepted_at IS NULL AND started_at IS NULL)),
    CONSTRAINT sos_accepted_has_responder CHECK (status NOT IN ('ACCEPTED', 'IN_PROGRESS', 'RESOLVED')
        OR (accepted_by IS NOT NULL AND accepted_at IS NOT NULL)),
    CONSTRAINT sos_in_progress_started CHECK (status NOT IN ('IN_PROGRESS', 'RESOLVED') OR started_at IS NOT NULL),
    CONSTRAINT sos_resolved_iff_status CHECK ((status = 'RESOLVED') = (resolved_at IS NOT NULL)),
    CONSTRAINT sos_cancelled_iff_status CHECK ((status = 'CANCELLED') = (cancelled_at IS NOT NULL)),
    CONSTRAINT sos_escalated_has_time CHECK (status <> 'ESCALATED' OR escalated_at IS NOT NULL)
);
CREATE INDEX sos_requests_location_gist ON sos_requests USING gist (location);
-- The board: active SOS by urgency, then age.
CREATE INDEX sos_requests_active_priority ON sos_requests (priority_rank, created_at)
    WHERE status IN ('PENDING', 'ESCALATED', 'ACCEPTED', 'IN_PROGRESS');
-- Requester history (and the per-user rate limit), volunteer history.
CREATE INDEX sos_requests_requester_history ON sos_requests (requester_id, created_at DESC, id DESC);
CREATE INDEX sos_requests_volunteer_history ON sos_requests (accepted_by, created_at DESC, id DESC) WHERE accepted_by IS NOT NULL;
CREATE INDEX sos_requests_status_created ON sos_requests (status, created_at DESC);
CREATE TRIGGER sos_requests_touch BEFORE UPDATE ON sos_requests FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Who was offered which SOS, in which wave, and what they said.
CREATE TABLE sos_offers (
    sos_id uuid NOT NULL REFERENCES sos_requests (id) ON DELETE CASCADE,
    responder_id uuid NOT NULL,
    wave integer NOT NULL CHECK (wave >= 1),
    distance_m double precision NOT NULL CHECK (distance_m >= 0),
    skill_match boolean NOT NULL DEFAULT false,
    response text NOT NULL DEFAULT 'PENDING' CHECK (response IN ('PENDING', 'ACCEPTED', 'DECLINED', 'WITHDRAWN')),
    offered_at timestamptz NOT NULL DEFAULT now(),
    responded_at timestamptz,
    PRIMARY KEY (sos_id, responder_id),
    CONSTRAINT sos_offers_responded CHECK ((response = 'PENDING') = (responded_at IS NULL)),
    CONSTRAINT sos_offers_responded_after_offered CHECK (responded_at IS NULL OR responded_at >= offered_at)
);
CREATE INDEX sos_offers_responder ON sos_offers (responder_id, offered_at DESC, sos_id);
CREATE INDEX sos_offers_open ON sos_offers (sos_id, wave) WHERE response = 'PENDING';

-- When a person over the SOS rate limit was last reported to identity (once per window).
CREATE TABLE sos_rate_reports (
    user_id uuid PRIMARY KEY,
    reported_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sos_rejections (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    sos_id uuid NOT NULL REFERENCES sos_requests (id) ON DELETE CASCADE,
    volunteer_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (sos_id, volunteer_id)
);
CREATE INDEX sos_rejections_volunteer ON sos_rejections (volunteer_id);

-- A responder who accepted and then withdrew.
CREATE TABLE sos_cancellations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    sos_id uuid NOT NULL REFERENCES sos_requests (id) ON DELETE CASCADE,
    volunteer_id uuid NOT NULL,
    reason text NOT NULL DEFAULT '' CHECK (length(reason) <= 500),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sos_cancellations_volunteer ON sos_cancellations (volunteer_id);
CREATE INDEX sos_cancellations_sos ON sos_cancellations (sos_id);

CREATE TABLE sos_feedback (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    sos_id uuid NOT NULL UNIQUE REFERENCES sos_requests (id) ON DELETE CASCADE,
    volunteer_id uuid NOT NULL,
    requester_id uuid NOT NULL,
    rating integer NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment text NOT NULL DEFAULT '' CHECK (length(comment) <= 2000),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sos_feedback_volunteer ON sos_feedback (volunteer_id);

-- The volunteer's rating moves with each feedback, in the same transaction (seed 001's
-- trigger, kept as a running sum rather than re-averaging every row).
CREATE FUNCTION sos_feedback_rate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO responders (user_id, role, rating_count, rating_sum, average_rating)
    VALUES (NEW.volunteer_id, 'volunteer', 1, NEW.rating, NEW.rating)
    ON CONFLICT (user_id) DO UPDATE SET
        rating_count = responders.rating_count + 1,
        rating_sum = responders.rating_sum + NEW.rating,
        average_rating = round((responders.rating_sum + NEW.rating)::numeric / (responders.rating_count + 1), 2);
    RETURN NEW;
END;
$$;
CREATE TRIGGER sos_feedback_rate AFTER INSERT ON sos_feedback FOR EACH ROW EXECUTE FUNCTION sos_feedback_rate();

-- Areas (alerts routes a client to the coordinator of the zone that covers them).
CREATE TABLE zones (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    boundary geography(Polygon, 4326) NOT NULL,
    area_m2 double precision NOT NULL CHECK (area_m2 > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX zones_boundary_gist ON zones USING gist (boundary);
CREATE TRIGGER zones_touch BEFORE UPDATE ON zones FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
