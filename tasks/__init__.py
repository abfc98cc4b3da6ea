"""Celery jobs: every web action becomes a job that a node's agent runs through ``engine/``.

The job classes, the Celery app and beat schedules arrive with the web console;
this package is where they live, between ``webui/`` and ``engine/``.
"""
