"""The Celery app, configured from Django's settings (``CELERY_*``), with message signing on.

Importing this module imports no job code and no engine: the web tier uses
it to queue jobs by name on a node's queue.  The agent's worker loads the job
modules listed in ``include``.  Every message is signed with the
installation's key (``task_serializer = 'auth'``) and a worker accepts only
signed ones whose certificate is in its store: a job pushed into Redis by
anyone else is refused with "Can't decode message body" (and logged), not run.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webui.settings")

app = Celery(
    "caisson",
    include=[
        "tasks.containers",
        "tasks.machine",
        "tasks.migrate",
        "tasks.templates",
        "tasks.node",
        "tasks.boot",
        "tasks.backups",
        "tasks.backup_jobs",
        "tasks.protection",
        "tasks.upgrade",
        "tasks.network",
        "tasks.firewall",
        "tasks.storages",
    ],
)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.setup_security()
