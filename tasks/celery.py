"""The Celery app, configured from Django's settings (``CELERY_*``).

Importing this module imports no job code and no engine: the web tier uses
it to queue jobs by name on a node's queue.  The agent's worker loads the job
modules listed in ``include``.
"""
from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webui.settings")

app = Celery("caisson", include=["tasks.containers", "tasks.templates", "tasks.node", "tasks.backups",
                                   "tasks.backup_jobs"])
app.config_from_object("django.conf:settings", namespace="CELERY")
