-- Jobs that failed for good, counted by Health/Backlog (the edge's caremesh_jobs_failed) on
-- every scrape: a small partial index instead of a scan of every finished job.
CREATE INDEX jobs_failed ON jobs (finished_at) WHERE state = 'failed';
