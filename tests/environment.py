"""Loaded as a pytest plugin (``-p tests.environment``) before Django's settings are read.

The web tier's tests use a node name of their own and Redis databases apart
from a development instance on the same server.
"""

import os

os.environ.setdefault("CAISSON_NODE", "testnode")
os.environ.setdefault("CAISSON_REDIS_DBS", "10,11,12")
# The suite runs against a real PostgreSQL (pytest-django creates test_<name> beside this database).
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/caisson")
# The agent's tick starts the node's lxcfs when absent; tests that want one start their own.
os.environ.setdefault("CAISSON_LXCFS_AUTOSTART", "0")
