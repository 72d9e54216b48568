-- Gives back the roles 0106 took and no admin has decided on since.
UPDATE users u SET role = r.previous_role FROM role_reviews r
WHERE r.user_id = u.id AND r.confirmed_at IS NULL AND u.role = 'user';
DROP TABLE role_reviews;
