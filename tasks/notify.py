"""A policy's notifications: each of its targets gets a run's result (Proxmox's notification targets).

A mail target gets the text; a webhook target gets an HTTP POST of a JSON
object (``policy``, ``event``, ``node``, ``severity``, ``title``, ``message``,
``results``) with ``Content-Type: application/json`` and the target's secret
headers (opened here, for the request only: never logged).  A target's failure is
logged in the run's job and never fails the run: the snapshots or backups
are done by then.
"""

from __future__ import annotations

import requests
from django.conf import settings
from django.core.mail import send_mail

WEBHOOK_TIMEOUT = 10  # seconds: a target that does not answer must not hold the node's agent


def notify(policy, event: str, node: str, failed: bool, title: str, message: str, results: list[dict], log) -> None:
    """Send to the policy's enabled targets if its ``notify_when`` asks for this outcome; ``log(text)``."""
    if not failed and policy.notify_when != policy.NotifyWhen.ALWAYS:
        return
    payload = {
        "policy": policy.name,
        "event": event,
        "node": node,
        "severity": "error" if failed else "info",
        "title": title,
        "message": message,
        "results": results,
    }
    for target in policy.targets.filter(enabled=True):
        try:
            if target.kind == target.Kind.MAIL:
                send_mail(title, message, settings.DEFAULT_FROM_EMAIL, target.mail_list, fail_silently=False)
            else:
                answer = requests.post(
                    target.url,
                    json=payload,
                    headers=target.secret_headers(),
                    timeout=WEBHOOK_TIMEOUT,
                    allow_redirects=False,
                )
                answer.raise_for_status()
            log(f"notification target '{target.name}' ({target.kind}): sent")
        except Exception as exc:  # noqa: BLE001 - a target's fault is reported, the run's outcome stands
            log(f"notification target '{target.name}' ({target.kind}) failed: {exc}")
