-- Monitor pane and the no-worker alert: the claim loops of pipeline workers (worker_loop()); a
-- worker's maintenance loop is not counted, so it cannot hide that nothing processes.
SELECT count(*) AS workers,
       count(*) FILTER (WHERE state = 'active') AS busy
FROM pg_stat_activity
WHERE worker_loop(application_name) = 'claim'
