-- Every console header and every worker before a claim: is processing paused for the whole fleet?
SELECT paused, changed_at, changed_by, reason
FROM pipeline_fleet_control
