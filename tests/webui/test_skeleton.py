"""The Django project loads, passes its system checks and answers on its health endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def manage(tmp_path, *args):
    env = {**os.environ, "CAISSON_WEB_DATA": str(tmp_path), "DJANGO_SETTINGS_MODULE": "webui.settings"}
    env.pop("DATABASE_URL", None)  # the embedded default: SQLite
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_system_checks_and_health_endpoint(tmp_path):
    assert manage(tmp_path, "check").returncode == 0
    assert manage(tmp_path, "migrate", "--noinput").returncode == 0
    script = (
        "import django, json; django.setup();"
        "from django.test import Client; r = Client(SERVER_NAME='localhost').get('/healthz');"
        "print(r.status_code, r.content.decode().strip())"
    )
    result = manage(tmp_path, "shell", "-c", script)
    status, body = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert status == "200" and json.loads(body) == {"status": "ok", "database": "sqlite"}


def test_engine_never_imports_the_web_stack():
    for path in (REPO / "engine").rglob("*.py"):
        text = path.read_text()
        for banned in (
            "import django",
            "from django",
            "import celery",
            "from celery",
            "from channels",
            "import rest_framework",
            "from rest_framework",
        ):
            assert banned not in text, f"{path} imports the web stack ({banned})"
