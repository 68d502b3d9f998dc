-- Monitor pane: pipeline workers are sessions whose application_name starts with opsconsole:worker.
SELECT count(*) AS workers,
       count(*) FILTER (WHERE state = 'active') AS busy
FROM pg_stat_activity
WHERE starts_with(application_name, 'opsconsole:worker')
