"""Celery side of the pipeline: the app, its queues and routing, and thin tasks per role."""
