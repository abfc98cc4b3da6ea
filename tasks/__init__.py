"""Celery jobs that a node agent runs through the engine.

``tasks.celery`` is the Celery app (the web tier imports only that, to queue
jobs by name); ``tasks.runtime`` is what an agent process is (its engine, its
node row), at the bottom of the package; ``tasks.base`` is the one job class
every action derives from; ``tasks.mirror`` copies the node's state into the
database; ``tasks.containers``, ``tasks.backups``, ``tasks.backup_jobs``,
``tasks.templates`` and ``tasks.node`` (heartbeat, metrics, the tick) hold
the jobs; ``python -m tasks.agent`` runs this node's agent (a Celery worker
consuming the node's own queue). Imports run one way: jobs -> mirror ->
runtime, and from ``webui`` only its models and live pushes.
"""
