"""The control plane trusts only this installation: Redis has a password, jobs and relay messages are signed.

A real agent on a password-protected redis-server of its own (a free port, a secrets directory made
by ``webui.keys`` with a Redis password), fed jobs published straight into Redis by other processes:
unsigned, signed with another installation's key, and signed with this one's. A real console relay
fed forged, stale, replayed and genuine channel-layer messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import shutil
import struct
import subprocess
import sys
import time
import uuid

import pytest

from tests.webui.conftest import REPO, free_port, start_agent, stop_agent
from tests.webui.console_kit import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

PUBLISH = """
import os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "webui.settings"
queue, how = sys.argv[1], sys.argv[2]
if how == "unsigned":
    from celery import Celery
    from django.conf import settings
    app = Celery(broker=settings.CELERY_BROKER_URL)
    app.conf.task_serializer = "json"
else:
    from tasks.celery import app
app.send_task("caisson.node.tick", queue=queue)
print("published", how)
"""


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server with a password (from a fresh secrets directory) on a free loopback port."""
    from webui import keys

    secrets_dir = keys.ensure(tmp_path / "secrets", redis_password=True)
    password = keys.read(secrets_dir, "redis.password")
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "-",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    process.stdin.write(f"requirepass {password}\n".encode())  # never on a command line
    process.stdin.close()
    import redis

    client = redis.Redis(port=port, password=password)
    wait_until(lambda: _answers(client), what="the private redis-server")
    yield {"port": port, "secrets": secrets_dir, "password": password}
    process.terminate()
    process.wait(10)


def _answers(client) -> bool:
    import redis

    try:
        return client.ping()
    except redis.ConnectionError:
        return False


def publish(env: dict, queue: str, how: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PUBLISH, queue, how], cwd=REPO, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_agent_runs_only_jobs_signed_by_this_installation(services_env, private_redis, node, tmp_path):
    import redis

    from webui import keys
    from webui.models import Job, Node

    with pytest.raises(redis.AuthenticationError):  # no password, no service
        redis.Redis(port=private_redis["port"]).ping()
    name = f"signed{os.getpid()}"
    env = {
        **services_env,
        "CAISSON_SECRETS": str(private_redis["secrets"]),
        "REDIS_URL": f"redis://127.0.0.1:{private_redis['port']}",
        "CAISSON_SAMPLE_INTERVAL": "3600",
    }
    log = tmp_path / "agent.log"
    agent = start_agent(env, name, log)
    try:
        row = Node.objects.get(name=name)
        started = row.last_seen
        queue = row.queue
        # Another installation's key (same broker, same password): the signature does not verify.
        stranger = keys.ensure(tmp_path / "stranger", redis_password=True)
        shutil.copy(private_redis["secrets"] / "redis.password", stranger / "redis.password")
        publish({**env, "CAISSON_SECRETS": str(stranger)}, queue, "signed")
        publish(env, queue, "unsigned")
        wait_until(
            lambda: (
                "Can't decode message body" in log.read_text()  # the wrong signature
                and "Refusing to deserialize untrusted content" in log.read_text()
            ),
            timeout=30,
            what="both forged jobs refused in the agent's log",
        )
        time.sleep(1)
        assert "Task caisson.node.tick[" not in log.read_text()  # "received": never
        row.refresh_from_db()
        assert row.last_seen == started  # the tick never ran
        publish(env, queue, "signed")
        wait_until(lambda: "Task caisson.node.tick[" in log.read_text(), timeout=30, what="the signed job received")
        wait_until(lambda: Node.objects.get(name=name).last_seen > started, timeout=30, what="the tick run")
    finally:
        stop_agent(agent)
        Job.objects.filter(node__name=name).delete()  # its first start's startall (a job keeps its node)
        Node.objects.filter(name=name).delete()


def _raw(layer, message: dict, age: float = 0.0, key: bytes | None = None) -> bytes:
    """A channel-layer message as the layer would write it, optionally older or signed with another key."""
    body = layer._serializer.as_bytes(message)
    head = struct.pack(">2sQ16s", b"C1", int((time.time() - age) * 1000), os.urandom(16))
    return head + hmac.new(key or layer.signing_key, head + body, hashlib.sha256).digest() + body


def test_relay_drops_forged_stale_and_replayed_messages(engine, container, console_relay):
    import redis
    from channels.layers import get_channel_layer
    from django.conf import settings

    from tasks.console_protocol import relay_channel

    layer = get_channel_layer()
    client = redis.Redis.from_url(settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["address"])
    key = layer.prefix + relay_channel(settings.CAISSON_NODE)

    async def scenario():
        reply = await layer.new_channel()

        def open_message() -> dict:
            return {
                "type": "console.open",
                "session": uuid.uuid4().hex,
                "ctid": container,
                "mode": "console",
                "user": 1,
                "reply": reply,
                "cols": 80,
                "rows": 24,
            }

        async def answer(timeout: float = 3.0):
            try:
                return await asyncio.wait_for(layer.receive(reply), timeout)
            except TimeoutError:
                return None

        forged = [
            _raw(layer, open_message(), key=b"not the installation's key"),
            layer._serializer.as_bytes(open_message()),  # no HMAC at all
            _raw(layer, open_message(), age=600),
        ]  # genuine, but ten minutes old
        for raw in forged:
            client.zadd(key, {raw: time.time()})
        assert await answer() is None  # the relay opened nothing for any of them
        genuine = _raw(layer, open_message())
        client.zadd(key, {genuine: time.time()})
        opened = await answer(10)
        assert opened and opened["type"] == "console.opened"
        await layer.send(
            relay_channel(settings.CAISSON_NODE),
            {"type": "console.close", "reply": reply, "session": opened["session"]},
        )
        client.zadd(key, {genuine: time.time()})  # the same bytes again
        after = []
        while (message := await answer()) is not None:  # the first session's output at most
            after.append(message["type"])
        assert "console.opened" not in after, after

    asyncio.run(scenario())
    text = console_relay.log.read_text()
    assert text.count("dropped a message on console.") >= 4, text[-3000:]
    assert "wrong or missing HMAC" in text and "outside the" in text and "a replay" in text
