DROP INDEX jobs_failed;
