"""The Celery application and its per-process hooks."""
