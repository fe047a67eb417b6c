"""bootkit-heartbeat: tells the cluster this worker is alive (Celery's worker events)."""
