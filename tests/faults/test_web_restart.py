"""The web server restarted (SIGTERM, then SIGKILL) while clients keep sending requests: afterwards nothing is
half-applied, and every client got a result or an error, never a result for something that did not happen.

Client threads create pools through the API in a bounded loop (each pool is
a row and its audit row, written in one transaction); the server is stopped
and started again on the same port twice while they run.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from tests.faults.services_kit import Web, login, print_logs

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CLIENTS = 4
REQUESTS = 120  # per client: the loop ends by itself


def _client(web: Web, session, index: int, outcomes: dict, stop: threading.Event) -> None:
    import requests

    for n in range(REQUESTS):
        if stop.is_set():
            return
        name = f"ld{index}x{n}"
        try:
            answer = session.post(f"{web.base}/api/pools/", json={"name": name}, timeout=30)
            outcomes[name] = answer.status_code
        except requests.RequestException as exc:
            outcomes[name] = type(exc).__name__
            time.sleep(0.05)  # the server is down: try the next one a little later


def test_web_server_restarted_under_load(services_env, make_user, tmp_path):
    from webui.models import AuditEntry, Pool

    make_user("ops", superuser=True)
    web = Web(services_env, tmp_path)
    outcomes: dict[str, int | str] = {}
    stop = threading.Event()
    threads = []
    try:
        web.start()
        sessions = [login(web) for _ in range(CLIENTS)]
        threads = [
            threading.Thread(target=_client, args=(web, sessions[i], i, outcomes, stop), daemon=True)
            for i in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            seen = len(outcomes)
            while len(outcomes) < seen + 40 and any(t.is_alive() for t in threads):
                time.sleep(0.01)
            web.stop(sig)  # requests in flight: a graceful stop lets them finish, a kill cuts them
            web.start()
        for thread in threads:
            thread.join(300)
        assert not any(t.is_alive() for t in threads), "the clients did not finish"
    except BaseException:
        print_logs(tmp_path)
        raise
    finally:
        stop.set()
        web.stop()

    created = {p.name: p for p in Pool.objects.filter(name__startswith="ld")}
    audited = set(AuditEntry.objects.filter(action="pool.create").values_list("path", flat=True))
    kinds = {}
    for name, outcome in outcomes.items():
        kinds[outcome] = kinds.get(outcome, 0) + 1
        if outcome == 201:
            assert name in created, f"{name}: the client was told it was created; it was not"
        elif isinstance(outcome, int):
            assert outcome >= 500, f"{name}: answered {outcome}"  # no 4xx for a valid, new name
    for name, pool in created.items():
        assert name in outcomes, f"pool {name} was never asked for"
        assert pool.path in audited, f"pool {name} exists without its audit row: half-applied"
    print("outcomes:", kinds, "created:", len(created))
    assert kinds.get(201, 0) > 0
