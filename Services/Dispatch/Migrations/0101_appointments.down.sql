DROP TABLE appointments;
DROP TABLE blocked_times;
DROP TABLE availability;
DROP TABLE practitioner_schedules;
