"""Celery tasks: thin wrappers that open a transaction and call the domain."""
