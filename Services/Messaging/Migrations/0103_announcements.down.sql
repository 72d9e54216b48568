DROP TABLE company_announcements;
