-- Company announcements (seed 002's CompanyAnnouncements): admins publish, everyone signed in
-- lists the active ones that have not expired.
CREATE TABLE company_announcements (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    title text NOT NULL CHECK (length(btrim(title)) BETWEEN 1 AND 200),
    content text NOT NULL CHECK (length(btrim(content)) BETWEEN 1 AND 5000),
    is_active boolean NOT NULL DEFAULT true,
    expires_at timestamptz,
    created_by uuid NOT NULL,
    retired_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT company_announcements_expiry CHECK (expires_at IS NULL OR expires_at > created_at),
    CONSTRAINT company_announcements_retired CHECK (is_active = (retired_by IS NULL))
);
CREATE INDEX company_announcements_current ON company_announcements (created_at DESC, id DESC) WHERE is_active;
CREATE TRIGGER company_announcements_touch BEFORE UPDATE ON company_announcements
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
