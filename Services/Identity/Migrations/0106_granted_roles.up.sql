-- Staff roles are granted, never taken. Until now Register gave CAREGIVER and PROFESSIONAL to
-- whoever asked, and such an account could read and change patients' records. From here on a
-- professional is a user until an admin verifies the licence, and a caregiver is made by an
-- admin. Accounts that hold such a role without that grant lose it, and each is listed here
-- for admins (ListRoleReviews), who confirm by giving the role back with SetUserRole:
--   every caregiver (grants were not recorded, so none can be told from a self-registration);
--   every professional without a verified licence.
CREATE TABLE role_reviews (
    user_id uuid PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    previous_role text NOT NULL CHECK (previous_role IN ('caregiver', 'professional')),
    reason text NOT NULL,
    demoted_at timestamptz NOT NULL DEFAULT now(),
    confirmed_by uuid REFERENCES users(id),
    confirmed_at timestamptz
);
CREATE INDEX role_reviews_open ON role_reviews (demoted_at DESC, user_id DESC) WHERE confirmed_at IS NULL;

INSERT INTO role_reviews (user_id, previous_role, reason)
SELECT u.id, u.role,
       CASE u.role WHEN 'caregiver' THEN 'caregiver role taken at registration'
                   ELSE 'professional without a verified licence' END
FROM users u
WHERE u.role = 'caregiver'
   OR (u.role = 'professional'
       AND NOT EXISTS (SELECT 1 FROM professionals p WHERE p.user_id = u.id AND p.verification = 'verified'));

UPDATE users u SET role = 'user' FROM role_reviews r WHERE r.user_id = u.id AND u.role = r.previous_role;
