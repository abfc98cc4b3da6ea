"""Celery jobs that a node agent runs through the engine.

``tasks.celery`` is the Celery app (the web tier imports only that, to queue
jobs by name); ``tasks.base`` is the one job class every action derives from;
``tasks.containers``, ``tasks.templates`` and ``tasks.node`` hold the jobs;
``python -m tasks.agent`` runs this node's agent (a Celery worker consuming
the node's own queue).
"""
