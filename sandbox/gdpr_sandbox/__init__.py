"""The embedded sandbox: the service's own SAM template deployed into moto, with what moto cannot
run (schedules, SQS event-source mappings, the HTTP API, Lambda itself) emulated in-process."""
