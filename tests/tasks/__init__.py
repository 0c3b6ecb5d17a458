"""Tests of the Celery tasks."""
