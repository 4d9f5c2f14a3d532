"""Observability: the metrics zone the workers count into, the status
listener the master serves it on (/metrics, /status), systemd readiness
(sd_notify) and reload-on-change.  Nothing here runs per request."""
